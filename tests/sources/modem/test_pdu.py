"""Tests for gateway.sources.modem.pdu: published PDUs, hand-built edge cases, round-trip
properties and fuzzing (decode_pdu must raise nothing but DecodeError)."""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any, Literal

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from gateway.errors import DecodeError
from gateway.play.pdu import encode_deliver, encode_status_report, split_deliver
from gateway.sources.modem.pdu import (
    GSM7_CHARACTERS,
    Concat,
    Encoding,
    PduKind,
    Report,
    Sms,
    decode_pdu,
    gsm7_decode,
    gsm7_encode,
    join_parts,
    pack_septets,
    unpack_septets,
)
from tests.sources.modem import fixtures_pdu as fx


def tz(hours: int = 0, minutes: int = 0) -> timezone:
    return timezone(timedelta(hours=hours, minutes=minutes))


def assert_fields(sms: Sms, **expected: Any) -> None:
    actual = {name: getattr(sms, name) for name in expected}
    assert actual == expected
    if isinstance(expected.get("timestamp"), datetime):  # same instant AND same offset
        assert sms.timestamp is not None
        assert sms.timestamp.utcoffset() == expected["timestamp"].utcoffset()


# --- GSM-7 helpers ---------------------------------------------------------------------------


def test_hellohello_packs_as_in_the_23038_example() -> None:
    # 3GPP TS 23.038 / GSM 03.38 packing example, also Dreamfabric's "SMS and the PDU format".
    septets = gsm7_encode("hellohello")
    assert septets == [0x68, 0x65, 0x6C, 0x6C, 0x6F] * 2
    assert pack_septets(septets).hex().upper() == "E8329BFD4697D9EC37"
    assert gsm7_decode(unpack_septets(bytes.fromhex("E8329BFD4697D9EC37"), 10)) == "hellohello"


# python-gsmmodem test/test_pdu.py TestGsm7: (text, septets, packed octets)
GSMMODEM_GSM7_VECTORS = [
    ("Hello World!", None, [200, 50, 155, 253, 6, 93, 223, 114, 54, 57, 4]),
    (
        "[{abc}]~",
        [0x1B, 0x3C, 0x1B, 0x28, 0x61, 0x62, 0x63, 0x1B, 0x29, 0x1B, 0x3E, 0x1B, 0x3D],
        [27, 222, 6, 21, 22, 143, 55, 169, 141, 111, 211, 3],
    ),
    (
        "{åΦΓΛΩΠΨΣΘ€}",
        [27, 40, 15, 18, 19, 20, 21, 22, 23, 24, 25, 27, 101, 27, 41],
        [27, 212, 67, 50, 161, 84, 44, 23, 76, 102, 83, 222, 164, 0],
    ),
    ("a[]{}€", [97, 27, 60, 27, 62, 27, 40, 27, 41, 27, 101],
     [225, 13, 111, 227, 219, 160, 54, 169, 77, 25]),
]  # fmt: skip


@pytest.mark.parametrize(("text", "septets", "packed"), GSMMODEM_GSM7_VECTORS)
def test_gsm7_published_vectors(text: str, septets: list[int] | None, packed: list[int]) -> None:
    encoded = gsm7_encode(text)
    if septets is not None:
        assert encoded == septets
    assert pack_septets(encoded) == bytes(packed)
    assert gsm7_decode(unpack_septets(bytes(packed), len(encoded))) == text


def test_basic_table_matches_aosp() -> None:
    # AOSP GsmSmsTest.decodeSingle: every septet 0..127, ESC replaced by 0 ('@').
    assert gsm7_decode(0 if i == 0x1B else i for i in range(128)) == fx.AOSP_BASIC_TABLE


def test_extension_table_matches_aosp() -> None:
    septets = [s for code in fx.AOSP_EXTENSION_CODES for s in (0x1B, code)]
    assert gsm7_decode(septets) == fx.AOSP_EXTENSION_TABLE
    assert gsm7_encode(fx.AOSP_EXTENSION_TABLE) == septets


@pytest.mark.parametrize(
    ("septets", "text"),
    [
        ([0x1B, 0x41], "A"),  # unknown extension code: the basic character (23.038 6.2.1.1)
        ([0x1B, 0x00], "@"),
        ([0x1B, 0x1B, 0x41], " A"),  # ESC ESC: reserved, shown as a space (as AOSP does)
        ([0x41, 0x1B], "A "),  # a lone trailing escape shows as a space
        ([0x1B, 0x65, 0x1B, 0x3C, 0x1B, 0x28, 0x1B, 0x14, 0x1B, 0x40, 0x1B, 0x3D, 0x1B, 0x2F],
         "€[{^|~\\"),
    ],
)  # fmt: skip
def test_gsm7_decode_escape_rules(septets: list[int], text: str) -> None:
    assert gsm7_decode(septets) == text


def test_gsm7_rejects_what_it_cannot_carry() -> None:
    with pytest.raises(ValueError, match="GSM-7"):
        gsm7_encode("Жук")
    with pytest.raises(DecodeError, match="septet 128"):
        gsm7_decode([0x41, 128])
    with pytest.raises(ValueError, match=r"0\.\.127"):
        pack_septets([200])
    with pytest.raises(ValueError, match="fill_bits"):
        pack_septets([1], fill_bits=7)
    with pytest.raises(DecodeError, match="cannot hold"):
        unpack_septets(b"\x00", 2)


@given(st.lists(st.integers(0, 127), max_size=200), st.integers(0, 6))
def test_pack_unpack_round_trip_with_fill_bits(septets: list[int], fill: int) -> None:
    packed = pack_septets(septets, fill)
    assert len(packed) == (fill + 7 * len(septets) + 7) // 8
    if packed:
        assert packed[0] & ((1 << fill) - 1) == 0  # the fill bits are zero
    assert unpack_septets(packed, len(septets), fill) == septets


# --- published SMS-DELIVER PDUs ---------------------------------------------------------------

# Sources and derivations are in fixtures_pdu.py next to each constant.
DELIVER_CASES = [
    pytest.param(fx.DREAMFABRIC, {
        "smsc": "+27381000015", "sender": "27838890001", "sender_is_alphanumeric": False,
        "timestamp": datetime(1999, 3, 29, 15, 16, 59, tzinfo=tz(2)), "pid": 0, "dcs": 0,
        "encoding": Encoding.GSM7, "text": "hellohello", "concat": None, "ports": None,
    }, id="dreamfabric-hellohello"),
    pytest.param(fx.GSMMODEM_TEST2, {
        "smsc": "+2782913593", "sender": "+27821234567",
        "timestamp": datetime(2013, 3, 8, 15, 2, 16, tzinfo=tz(2)), "text": "Test2",
    }, id="python-gsmmodem-test2"),
    pytest.param(fx.GSMMODEM_EASY, {
        "smsc": "+85290000000", "sender": "+85291234567",
        "timestamp": datetime(2007, 4, 12, 23, 25, 42, tzinfo=tz(8)),
        "text": "It is easy to read text messages via AT commands.",
    }, id="python-gsmmodem-easy"),
    pytest.param(fx.GSMMODEM_EXTENDED, {"sender": "+27821234567", "text": "@{tést}!"},
                 id="python-gsmmodem-extension"),
    pytest.param(fx.GSMMODEM_CONCAT_1_OF_1, {
        "smsc": "+2781191", "sender": "2781188",
        "timestamp": datetime(2013, 6, 25, 16, 40, 48, tzinfo=tz(2)),
        "text": "Hello!You have R 19.50 FREE airtime available. R 19.50 will expire on"
                " 01/07/2013. ",
        "concat": Concat(ref=0xC3, total=1, seq=1, ref_bits=8),
    }, id="python-gsmmodem-concat"),
    pytest.param(fx.AOSP_ADDRESSING, {
        "smsc": "+14155551212", "sender": "+16505551111",
        "timestamp": datetime(2006, 6, 6, 15, 3, 3, tzinfo=tz(-7)), "text": "Test",
    }, id="aosp-negative-tz"),
    pytest.param(fx.AOSP_SUBJECT, {"dcs": 0x03, "text": "(Subject)Test",
                                   "timestamp": datetime(2006, 6, 29, 14, 8, 0, tzinfo=tz(-7))},
                 id="aosp-dcs-03"),
    pytest.param(fx.AOSP_UCS2, {
        "smsc": "+12063130004", "sender": "+14154255486", "encoding": Encoding.UCS2,
        "timestamp": datetime(2007, 1, 8, 17, 12, 53, tzinfo=tz(-8)),
        "text": "\u2122\u00a9\u00aehello",
    }, id="aosp-ucs2"),
    pytest.param(fx.AOSP_MULTIPART_1, {
        "sender": "16502244137", "text": "1" * 153, "concat": Concat(0, 2, 1, 8),
        "timestamp": datetime(2007, 6, 12, 17, 57, 38, tzinfo=tz(-5)),
    }, id="aosp-multipart-1-fill-bit"),
    pytest.param(fx.AOSP_MULTIPART_2, {
        "text": "1111111222222222222222222222", "concat": Concat(0, 2, 2, 8),
        "timestamp": datetime(2007, 6, 12, 17, 58, 0, tzinfo=tz(-5)),
    }, id="aosp-multipart-2"),
    pytest.param(fx.AOSP_EXTENDED, {
        "text": "Test extended character table .,-!?@~_\\/&\"';^|:()<{}>[]=%*+#",
    }, id="aosp-extension-table"),
    pytest.param(fx.AOSP_CPHS_MWI, {"sender": "_@", "sender_is_alphanumeric": True,
                                    "pid": 0x41, "text": " "}, id="aosp-cphs"),
    pytest.param(fx.SMSLIB_FROM_ORANGE, {
        "smsc": "+447973100973", "sender": "from_Orange", "sender_is_alphanumeric": True,
        "timestamp": datetime(2009, 2, 11, 14, 18, 11, tzinfo=tz(0)),
        "text": fx.SMSLIB_FROM_ORANGE_TEXT,
    }, id="smslib-alphanumeric-11"),
    pytest.param(fx.SMSLIB_ORANGE, {
        "sender": "Orange", "sender_is_alphanumeric": True,
        "text": "Hi from Orange. To get your Dolphin rewards next month, just top-up by £10 or"
                " more before 24/02/09. In the last 30 days you've topped up £0.",
    }, id="smslib-alphanumeric-6"),
    pytest.param(fx.SMSLIB_REF16_2_OF_2, {
        "smsc": "+447973074999", "sender": "+447837720675", "text": "mgmgmgmgmgpwpwpwpwqwpwp",
        "concat": Concat(ref=35, total=2, seq=2, ref_bits=16),
        "timestamp": datetime(2008, 7, 15, 11, 27, 3, tzinfo=tz(1)),
    }, id="smslib-16-bit-ref"),
    pytest.param(fx.SMSLIB_UCS2_CONCAT_2_OF_2, {
        "encoding": Encoding.UCS2, "text": "i part and concatenated by writing lots.",
        "concat": Concat(ref=14, total=2, seq=2, ref_bits=8),
    }, id="smslib-ucs2-concat"),
    pytest.param(fx.SMSLIB_TURKISH_SHIFT, {
        "text": "This is a message that contains utf8 chars.Here are the chars:igs\u00fc\u00f6",
        "concat": None,
    }, id="smslib-unsupported-ie-skipped"),
    pytest.param(fx.SMSPDUDECODER_README, {
        "smsc": "+46705008999", "sender": "+46705930301", "text": "TEST",
        "timestamp": datetime(1998, 12, 22, 12, 4, 41, tzinfo=tz(0)),
    }, id="smspdudecoder-readme"),
    pytest.param(fx.NOKIA_FORUM_UCS2, {
        "smsc": "+20105996500", "sender": "+20101014063", "encoding": Encoding.UCS2,
        "timestamp": datetime(2002, 12, 19, 3, 25, 51, tzinfo=tz(2)), "text": "\u0628\u062a",
    }, id="nokia-forum-ucs2"),
    pytest.param(fx.HAND_ALPHANUMERIC, {
        "smsc": "+79000000000", "sender": "Instagram", "sender_is_alphanumeric": True,
        "timestamp": datetime(2024, 3, 15, 12, 34, 56, tzinfo=tz(3)), "text": "hellohello",
    }, id="hand-instagram"),
    pytest.param(fx.HAND_UCS2_EMOJI, {
        "sender": "+79161234567", "encoding": Encoding.UCS2, "dcs": 0x08,
        "timestamp": datetime(2023, 11, 5, 8, 9, 10, tzinfo=tz(-3, -30)), "text": "Hi \U0001f600",
    }, id="hand-ucs2-emoji-negative-half-hour-tz"),
]  # fmt: skip


@pytest.mark.parametrize(("pdu", "expected"), DELIVER_CASES)
def test_published_deliver(pdu: str, expected: dict[str, Any]) -> None:
    sms = decode_pdu(pdu)
    assert sms.kind is PduKind.DELIVER
    assert sms.reason == ""
    assert sms.raw == pdu.upper()
    assert_fields(sms, **expected)


def test_long_message_16_bit_ref_reassembles() -> None:
    parts = [decode_pdu(p) for p in fx.SMSLIB_LONG16]
    assert [p.concat for p in parts] == [Concat(47579, 2, 1, 16), Concat(47579, 2, 2, 16)]
    assert len(parts[0].text) == 152  # a 7-octet header leaves 152 septets
    assert join_parts(reversed(parts)) == fx.SMSLIB_LONG16_TEXT


def test_three_part_message_reassembles_in_seq_order() -> None:
    parts = [decode_pdu(p) for p in fx.SMSLIB_JUMPSTYLE]
    assert [p.concat for p in parts] == [Concat(0x6B, 3, seq, 8) for seq in (1, 2, 3)]
    assert join_parts([parts[2], parts[0], parts[1]]) == fx.SMSLIB_JUMPSTYLE_TEXT


def test_fill_bit_after_the_concatenation_header() -> None:
    # AOSP_MULTIPART_1: UDH 050003000201 is 6 octets = 48 bits; 7 septets = 49 bits, so one fill
    # bit precedes the text: its first octet is 0x62 = '1' (0x31) << 1.
    ud = bytes.fromhex(fx.AOSP_MULTIPART_1)[-140:]
    assert ud[:7] == bytes.fromhex("05000300020162")
    assert unpack_septets(ud[6:], 1, fill_bits=1) == [0x31]
    assert decode_pdu(fx.AOSP_MULTIPART_1).data == ud[6:]


@pytest.mark.parametrize(("name", "field"), sorted(fx.SMSPDUDECODER_ADDRESSES.items()))
def test_published_alphanumeric_address_fields(name: str, field: str) -> None:
    # Wrap the published address field in a minimal SMS-DELIVER (no SMSC, empty text).
    sms = decode_pdu("00" + "04" + field + "0000" + "42305121436521" + "00")
    assert_fields(sms, sender=name, sender_is_alphanumeric=True, text="", smsc="")


def test_tpdu_without_smsc_part() -> None:
    tpdu = fx.GSMMODEM_TEST2.removeprefix("06917228195339")
    assert_fields(decode_pdu(tpdu, with_smsc=False), smsc="", sender="+27821234567", text="Test2")


# --- status reports and non-text PDUs ----------------------------------------------------------


@pytest.mark.parametrize(
    ("pdu", "expected"),
    [
        pytest.param(fx.GSMMODEM_STATUS_REPORT, {
            "smsc": "", "sender": "+31628870634",
            "timestamp": datetime(2011, 1, 11, 17, 59, 15, tzinfo=tz(1)),
            "report": Report(214, 0x00, datetime(2011, 1, 11, 17, 59, 17, tzinfo=tz(1))),
        }, id="python-gsmmodem"),
        pytest.param(fx.GSMMODEM_ZTE_STATUS_REPORT, {
            "sender": "+#08427829207025",
            "timestamp": datetime(2013, 7, 26, 14, 29, 27, tzinfo=tz(2)),
            "report": Report(28, 0x00, datetime(2013, 7, 26, 14, 29, 31, tzinfo=tz(2))),
        }, id="python-gsmmodem-zte"),
        pytest.param(fx.SMSLIB_STATUS_REPORT_BAD_SCTS, {
            "smsc": "+254722500000", "sender": "0702597711", "timestamp": None,
            "report": Report(7, 0x00, datetime(2011, 12, 21, 11, 33, 19, tzinfo=tz(3))),
        }, id="smslib-invalid-scts"),
        pytest.param(fx.SMSLIB_STATUS_REPORT_FAILED, {
            "sender": "98765434567898765",
            "report": Report(9, 0x40, datetime(2011, 12, 21, 12, 3, 21, tzinfo=tz(3))),
        }, id="smslib-failed"),
    ],
)  # fmt: skip
def test_published_status_reports(pdu: str, expected: dict[str, Any]) -> None:
    sms = decode_pdu(pdu)
    assert sms.kind is PduKind.STATUS_REPORT
    assert sms.text == ""
    assert_fields(sms, **expected)


def test_wap_push_is_other_with_ports_and_concat() -> None:
    first, second = (decode_pdu(p) for p in (fx.AOSP_WAP_PUSH_1, fx.AOSP_WAP_PUSH_2))
    assert_fields(
        first,
        kind=PduKind.OTHER,
        encoding=Encoding.BINARY8,
        dcs=0xF5,
        ports=(2948, 9200),
        concat=Concat(42, 2, 1, 8),
        text="",
        reason="8-bit data",
    )
    assert b"application/vnd.wap.mms-message" in first.data
    assert_fields(second, kind=PduKind.OTHER, ports=(2948, 9200), concat=Concat(42, 2, 2, 8))


def test_binary_sms_keeps_its_payload() -> None:
    sms = decode_pdu(fx.SMSLIB_BINARY_PORTS)
    assert_fields(sms, kind=PduKind.OTHER, ports=(0x3E87, 0), data=fx.SMSLIB_BINARY_PORTS_DATA)
    f5 = decode_pdu(fx.SMSLIB_BINARY_F5)
    assert_fields(f5, kind=PduKind.OTHER, ports=(55555, 65000), data=b"\0\0\0\x0b<text>")


def test_other_kinds() -> None:
    mwi = decode_pdu(fx.AOSP_CINGULAR_MWI)
    assert_fields(mwi, kind=PduKind.OTHER, sender="5", dcs=0xC8, text="", concat=None)
    assert "message waiting" in mwi.reason
    submit = decode_pdu(fx.GSMMODEM_SUBMIT)
    assert_fields(submit, kind=PduKind.OTHER, smsc="+31624000000", timestamp=None, text="")
    assert "SUBMIT" in submit.reason
    # Dreamfabric's PDU read as if it had no SMSC: first octet 0x07 is MTI 11 (reserved)
    assert decode_pdu(fx.DREAMFABRIC, with_smsc=False).kind is PduKind.OTHER


def _variant(pdu: str, old: str, new: str) -> str:
    assert pdu.count(old) == 1
    return pdu.replace(old, new)


# Dreamfabric's PDU with PID/DCS "0000" (after the sender "...F1") changed.
@pytest.mark.parametrize(
    ("pid_dcs", "kind", "text"),
    [
        ("0010", PduKind.DELIVER, "hellohello"),  # DCS 0x10: class 0 (flash), GSM-7
        ("00F0", PduKind.DELIVER, "hellohello"),  # DCS 0xF0: class 0 group, GSM-7
        ("000C", PduKind.DELIVER, "hellohello"),  # reserved alphabet: read as GSM-7
        ("0080", PduKind.DELIVER, "hellohello"),  # reserved coding group: read as GSM-7
        ("00D8", PduKind.DELIVER, "hellohello"),  # message waiting, store, GSM-7
        ("00C0", PduKind.OTHER, "hellohello"),  # message waiting, discard
        ("4000", PduKind.OTHER, "hellohello"),  # PID 0x40: Type 0 ("silent") SMS
        ("4100", PduKind.DELIVER, "hellohello"),  # PID 0x41: replace type 1, still text
        ("0020", PduKind.OTHER, ""),  # compressed: no text to show
    ],
)
def test_pid_and_dcs_groups(pid_dcs: str, kind: PduKind, text: str) -> None:
    sms = decode_pdu(_variant(fx.DREAMFABRIC, "F10000", "F1" + pid_dcs))
    assert (sms.kind, sms.text, sms.encoding) == (kind, text, Encoding.GSM7)
    assert (sms.reason == "") is (kind is PduKind.DELIVER)


def test_mwi_store_ucs2_and_sim_data_download() -> None:
    ucs2_store = decode_pdu(_variant(fx.HAND_UCS2_EMOJI, "F70008", "F700E8"))
    assert_fields(ucs2_store, kind=PduKind.DELIVER, encoding=Encoding.UCS2, text="Hi \U0001f600")
    # PID 0x7F (U)SIM data download, DCS 0xF6 (class 2, 8-bit)
    sim = decode_pdu("00" + "04" + "0B917228214365F7" + "7FF6" + "42305121436521" + "04DEADBEEF")
    assert_fields(sim, kind=PduKind.OTHER, encoding=Encoding.BINARY8, data=b"\xde\xad\xbe\xef")
    assert "0x7F" in sim.reason


# Hand-built UCS-2 DELIVERs: no SMSC, first octet 0x44 (UDHI) or 0x04, sender +27821234567,
# PID 00, DCS 08, SCTS 2024-03-15 12:34:56+03:00, then UDL and user data.
def ucs2_pdu(user_data: str, *, udhi: bool = True) -> str:
    first = "44" if udhi else "04"
    head = "00" + first + "0B917228214365F7" + "0008" + "42305121436521"
    return head + f"{len(user_data) // 2:02X}" + user_data


def test_text_to_an_application_port_is_other() -> None:
    # UDH 04: IE 0x04 (8-bit ports) length 2, destination 0x10, origin 0x20; text "A"
    sms = decode_pdu(ucs2_pdu("0404021020" + "0041"))
    assert_fields(sms, kind=PduKind.OTHER, ports=(16, 32), text="A")
    assert "port 16" in sms.reason


def test_unknown_ies_are_skipped_and_bad_concat_ignored() -> None:
    # UDH 08: IE 0x70 (reserved) len 1, then IE 0x00 ref 5, 2 parts, part 1
    assert_fields(decode_pdu(ucs2_pdu("087001FF00030502010041")), concat=Concat(5, 2, 1), text="A")
    # seq 0 is invalid: 23.040 says to ignore the whole IE
    assert_fields(decode_pdu(ucs2_pdu("0500030102000041")), concat=None, text="A")


def test_ucs2_oddities_never_produce_lone_surrogates() -> None:
    odd = decode_pdu(ucs2_pdu("004100", udhi=False))  # odd length: trailing half unit
    assert odd.text == "A\ufffd"
    lone = decode_pdu(ucs2_pdu("D83D0041", udhi=False))  # high surrogate without its pair
    assert lone.text == "\ufffdA"


def test_emoji_split_between_parts_is_mended_by_join_parts() -> None:
    # A network that splits by octets can cut U+1F600 (D83D DE00) between two parts.
    when = datetime(2024, 1, 2, 3, 4, 5, tzinfo=tz(0))
    parts = [
        decode_pdu(encode_deliver("+7916", "ab\ud83d", timestamp=when, concat=Concat(7, 2, 1))),
        decode_pdu(encode_deliver("+7916", "\ude00cd", timestamp=when, concat=Concat(7, 2, 2))),
    ]
    assert [p.text for p in parts] == ["ab\ufffd", "\ufffdcd"]  # each part alone stays valid
    assert join_parts(reversed(parts)) == "ab\U0001f600cd"


# --- malformed input ---------------------------------------------------------------------------

DREAM = fx.DREAMFABRIC


@pytest.mark.parametrize(
    ("pdu", "message"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("0", "hex digits"),
        ("0G", "hex digits"),
        ("07 91", "hex digits"),
        ("\ufb00", "hex digits"),  # 'ﬀ'.upper() == 'FF': must not sneak through
        ("0D" + DREAM[2:], "SMSC length 13"),
        (DREAM[:16], "truncated in first octet at octet 8"),
        (DREAM[:20], "truncated in originating address type at octet 10"),
        (DREAM[:24], "truncated in originating address at octet 11"),
        (DREAM[:36], "truncated in TP-DCS"),
        (DREAM[:40], "truncated in TP-SCTS at octet 19"),
        (DREAM[:-2], "needs 9 octets of user data, got 8"),
        (_variant(DREAM, "800A", "80A1"), "TP-UDL 161 exceeds 160"),
        (ucs2_pdu("00" * 141, udhi=False), "TP-UDL 141 exceeds 140"),
        (ucs2_pdu("050003"), "header of 6 octets exceeds TP-UDL 3"),
        (ucs2_pdu("030003010041"), "truncated in the IE at offset 0"),
        ("0006D60B911326880736F41110117195514011101171957140", "truncated in TP-ST"),
        ("000415D0" + "00" * 11, "length 21 exceeds 20"),
    ],
)
def test_malformed_raises_decode_error(pdu: str, message: str) -> None:
    with pytest.raises(DecodeError, match=re.escape(message)):
        decode_pdu(pdu)


def test_non_string_input_raises_decode_error() -> None:
    with pytest.raises(DecodeError, match="hex string"):
        decode_pdu(b"0000")  # type: ignore[arg-type]


def test_hex_is_case_and_whitespace_tolerant() -> None:
    sms = decode_pdu("  " + DREAM.lower() + "\r\n")
    assert (sms.text, sms.raw) == ("hellohello", DREAM)


ALL_PUBLISHED = [
    value
    for name, value in vars(fx).items()
    if name.isupper() and name.startswith(("DREAM", "GSMMODEM", "AOSP", "SMSLIB", "SMSPDU"))
    and isinstance(value, str | tuple) and not name.endswith(("TEXT", "TABLE", "CODES"))
]  # fmt: skip
VALID_PDUS = [p for v in ALL_PUBLISHED for p in (v if isinstance(v, tuple) else (v,))]
VALID_PDUS += [fx.NOKIA_FORUM_UCS2, fx.HAND_ALPHANUMERIC, fx.HAND_UCS2_EMOJI]


def test_every_fixture_is_collected() -> None:
    assert len(VALID_PDUS) == 36
    assert all(isinstance(decode_pdu(p), Sms) for p in VALID_PDUS)


def test_every_truncation_of_a_deliver_raises_decode_error() -> None:
    for pdu in VALID_PDUS:
        if decode_pdu(pdu).kind is not PduKind.DELIVER:
            continue
        for end in range(0, len(pdu), 2):
            with pytest.raises(DecodeError):
                decode_pdu(pdu[:end])


# A SIM slot that held GSMMODEM_EASY, overwritten by the shorter DREAMFABRIC: modems that print
# the whole slot show the old message's tail after the new user data (3GPP TS 23.040 9.2.3.16:
# what follows the TP-UDL octets is ignored).
STALE_SLOT = fx.DREAMFABRIC + fx.GSMMODEM_EASY[len(fx.DREAMFABRIC) :]


def test_octets_past_tp_udl_are_ignored() -> None:
    sms = decode_pdu(STALE_SLOT)
    assert (sms.kind, sms.text, sms.sender) == (PduKind.DELIVER, "hellohello", "27838890001")
    assert sms.data == decode_pdu(fx.DREAMFABRIC).data
    assert sms.raw == STALE_SLOT  # kept whole, as the modem printed it
    ucs2 = decode_pdu(fx.NOKIA_FORUM_UCS2 + "0041FFFF")
    assert ucs2.text == decode_pdu(fx.NOKIA_FORUM_UCS2).text


DELIVERS = [p for p in VALID_PDUS if decode_pdu(p).kind is PduKind.DELIVER]


@given(st.sampled_from(DELIVERS), st.binary(min_size=1, max_size=60))
def test_appending_octets_never_changes_the_decoded_message(pdu: str, extra: bytes) -> None:
    before, after = decode_pdu(pdu), decode_pdu(pdu + extra.hex())
    assert (after.text, after.concat, after.ports, after.data, after.kind) == (
        before.text,
        before.concat,
        before.ports,
        before.data,
        before.kind,
    )


def check_decodes_or_decode_error(text: str, with_smsc: bool = True) -> None:
    """The hard contract: an Sms whose strings are safe to store, or DecodeError."""
    try:
        sms = decode_pdu(text, with_smsc=with_smsc)
    except DecodeError:
        return
    assert isinstance(sms, Sms)
    (sms.text + sms.sender + sms.smsc + sms.reason).encode("utf-8")  # no lone surrogates
    assert sms.raw == text.strip().upper()


@settings(max_examples=500)
@given(st.text(), st.booleans())
def test_fuzz_any_text(text: str, with_smsc: bool) -> None:
    check_decodes_or_decode_error(text, with_smsc)


@settings(max_examples=500)
@given(st.text(alphabet="0123456789ABCDEFabcdef", max_size=400), st.booleans())
def test_fuzz_hex_text(text: str, with_smsc: bool) -> None:
    check_decodes_or_decode_error(text, with_smsc)


@settings(max_examples=1000)
@given(st.binary(max_size=200), st.booleans())
def test_fuzz_random_bytes(data: bytes, with_smsc: bool) -> None:
    check_decodes_or_decode_error(data.hex(), with_smsc)


@settings(max_examples=1000)
@given(
    st.sampled_from(VALID_PDUS),
    st.lists(st.tuples(st.integers(0, 999), st.integers(0, 255), st.sampled_from("sid")),
             max_size=4),
    st.integers(0, 999),
    st.booleans(),
)  # fmt: skip
def test_fuzz_mutated_valid_pdus(
    pdu: str, edits: list[tuple[int, int, str]], cut: int, with_smsc: bool
) -> None:
    data = bytearray.fromhex(pdu)
    for position, value, op in edits:
        at = position % (len(data) + 1)
        if op == "s" and at < len(data):
            data[at] = value
        elif op == "i":
            data.insert(at, value)
        elif at < len(data):
            del data[at]
    check_decodes_or_decode_error(bytes(data[: cut % (len(data) + 1)]).hex(), with_smsc)


# --- encoding -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expected", "make"),
    [
        pytest.param(fx.GSMMODEM_TEST2, lambda: encode_deliver(
            "+27821234567", "Test2", smsc="+2782913593",
            timestamp=datetime(2013, 3, 8, 15, 2, 16, tzinfo=tz(2))), id="python-gsmmodem"),
        pytest.param(fx.AOSP_ADDRESSING, lambda: encode_deliver(
            "+16505551111", "Test", smsc="+14155551212",
            timestamp=datetime(2006, 6, 6, 15, 3, 3, tzinfo=tz(-7))), id="aosp-negative-tz"),
        pytest.param(fx.AOSP_UCS2, lambda: encode_deliver(
            "+14154255486", "\u2122\u00a9\u00aehello", smsc="+12063130004",
            timestamp=datetime(2007, 1, 8, 17, 12, 53, tzinfo=tz(-8))), id="aosp-ucs2"),
        pytest.param(fx.AOSP_MULTIPART_1, lambda: encode_deliver(
            "16502244137", "1" * 153, smsc="+16363848806", concat=Concat(0, 2, 1),
            timestamp=datetime(2007, 6, 12, 17, 57, 38, tzinfo=tz(-5))), id="aosp-part-1"),
        pytest.param(fx.AOSP_MULTIPART_2, lambda: encode_deliver(
            "16502244137", "1111111" + "2" * 21, smsc="+16363848806", concat=Concat(0, 2, 2),
            timestamp=datetime(2007, 6, 12, 17, 58, 0, tzinfo=tz(-5))), id="aosp-part-2"),
        pytest.param(fx.SMSLIB_REF16_2_OF_2, lambda: encode_deliver(
            "+447837720675", "mgmgmgmgmgpwpwpwpwqwpwp", smsc="+447973074999",
            concat=Concat(35, 2, 2, ref_bits=16),
            timestamp=datetime(2008, 7, 15, 11, 27, 3, tzinfo=tz(1))), id="smslib-16-bit-ref"),
        pytest.param(fx.NOKIA_FORUM_UCS2, lambda: encode_deliver(
            "+20101014063", "\u0628\u062a", smsc="+20105996500",
            timestamp=datetime(2002, 12, 19, 3, 25, 51, tzinfo=tz(2))), id="nokia-ucs2"),
        pytest.param(fx.HAND_ALPHANUMERIC, lambda: encode_deliver(
            "Instagram", "hellohello",
            timestamp=datetime(2024, 3, 15, 12, 34, 56, tzinfo=tz(3))), id="instagram"),
        pytest.param(fx.HAND_UCS2_EMOJI, lambda: encode_deliver(
            "+79161234567", "Hi \U0001f600",
            timestamp=datetime(2023, 11, 5, 8, 9, 10, tzinfo=tz(-3, -30))), id="emoji"),
        pytest.param(fx.GSMMODEM_STATUS_REPORT, lambda: encode_status_report(
            "+31628870634", message_ref=214, status=0, smsc="",
            timestamp=datetime(2011, 1, 11, 17, 59, 15, tzinfo=tz(1)),
            discharge_time=datetime(2011, 1, 11, 17, 59, 17, tzinfo=tz(1))), id="status-report"),
    ],
)  # fmt: skip
def test_encoder_reproduces_published_pdus(expected: str, make: Callable[[], str]) -> None:
    assert make() == expected


@pytest.mark.parametrize(
    ("sender", "field"),
    [*fx.SMSPDUDECODER_ADDRESSES.items(), ("Orange", "0BD04F79D87D2E03"),
     ("from_Orange", "14D066F9BB1D79CAC3EE7319")],
)  # fmt: skip
def test_alphanumeric_sender_encodes_like_published_ones(sender: str, field: str) -> None:
    assert encode_deliver(sender, "x", smsc="")[4 : 4 + len(field)] == field


def test_encoder_rejects_what_it_cannot_write() -> None:
    when = datetime(2024, 1, 1, tzinfo=tz(0))
    with pytest.raises(ValueError, match="timezone-aware"):
        encode_deliver("+1", "x", timestamp=datetime(2024, 1, 1))
    with pytest.raises(ValueError, match="TP-SCTS"):
        encode_deliver("+1", "x", timestamp=datetime(2024, 1, 1, tzinfo=tz(0, 7)))
    with pytest.raises(ValueError, match="split_deliver"):
        encode_deliver("+1", "x" * 161, timestamp=when)
    with pytest.raises(ValueError, match="split_deliver"):
        encode_deliver("+1", "ж" * 71, timestamp=when)
    with pytest.raises(ValueError, match="text only"):
        encode_deliver("+1", "x", timestamp=when, encoding=Encoding.BINARY8)
    with pytest.raises(ValueError, match="GSM-7"):
        encode_deliver("+1", "ж", timestamp=when, encoding=Encoding.GSM7)
    with pytest.raises(ValueError, match="11 septets"):
        encode_deliver("TwelveLetter", "x", timestamp=when)
    with pytest.raises(ValueError, match="bad concatenation"):
        encode_deliver("+1", "x", timestamp=when, concat=Concat(1, 2, 3))
    with pytest.raises(ValueError, match="does not fit 8 bits"):
        encode_deliver("+1", "x", timestamp=when, concat=Concat(256, 2, 1))
    with pytest.raises(ValueError, match=r"0\.\.65535"):
        split_deliver("+1", "x", ref=65536, timestamp=when)
    with pytest.raises(ValueError, match="255"):
        split_deliver("+1", "x" * 153 * 256, ref=1, timestamp=when)


WHEN = datetime(2024, 5, 6, 7, 8, 9, tzinfo=tz(3))


def part_texts(text: str, ref: int = 1) -> list[str]:
    return [decode_pdu(p).text for p in split_deliver("+1", text, ref=ref, timestamp=WHEN)]


def test_split_boundaries_like_a_network() -> None:
    # AOSP GsmSmsTest.testFragmentText: 160 septets fit one SMS, 161 become 153 + 8.
    assert part_texts("1" * 160) == ["1" * 160]
    assert decode_pdu(split_deliver("+1", "1" * 160, ref=1, timestamp=WHEN)[0]).concat is None
    assert part_texts("1" * 161) == ["1" * 153, "1" * 8]
    # An escape sequence is never cut: the euro sign (2 septets) moves whole to the next part.
    assert part_texts("a" * 152 + "€" + "b" * 10) == ["a" * 152, "€" + "b" * 10]
    # UCS-2: 70 units fit, 71 become 67 + 4; a surrogate pair is never cut.
    assert part_texts("ж" * 70) == ["ж" * 70]
    assert part_texts("ж" * 71) == ["ж" * 67, "ж" * 4]
    assert part_texts("ж" * 66 + "\U0001f600" + "ж" * 5) == ["ж" * 66, "\U0001f600" + "ж" * 5]
    # A 16-bit reference makes the header one octet longer: 152 septets / 66 units per part.
    assert part_texts("1" * 161, ref=300) == ["1" * 152, "1" * 9]
    assert part_texts("ж" * 71, ref=300) == ["ж" * 66, "ж" * 5]


# --- round-trip properties ----------------------------------------------------------------------

GSM7_ALPHABET = sorted(GSM7_CHARACTERS)
EMOJI = ["\U0001f600", "\U0001f44d\U0001f3fd", "\U0001f1f7\U0001f1fa", "\U0001d11e", "👨‍👩‍👧"]


def utf16_units(text: str) -> int:
    return len(text.encode("utf-16-be")) // 2


def fit(text: str, measure: Callable[[str], int], limit: int) -> str:
    while measure(text) > limit:
        text = text[:-1]
    return text


def septets(text: str) -> int:
    return len(gsm7_encode(text))


# Any code point but a lone surrogate (what UTF-8 can encode), with emoji made more likely.
unicode_chars = st.characters(codec="utf-8") | st.sampled_from(EMOJI)
gsm7_texts = st.text(st.sampled_from(GSM7_ALPHABET), max_size=160)
unicode_texts = st.lists(unicode_chars, max_size=70).map("".join)
numbers = st.from_regex(r"\+?[0-9]{1,20}", fullmatch=True)
alphanumerics = st.text(st.sampled_from(GSM7_ALPHABET), min_size=1, max_size=11).filter(
    lambda s: septets(s) <= 11 and not re.fullmatch(r"\+?[0-9]+", s)
)
timestamps = st.datetimes(
    min_value=datetime(1990, 1, 1),
    max_value=datetime(2089, 12, 31, 23, 59, 59),
    timezones=st.integers(-79, 79).map(lambda q: timezone(timedelta(minutes=15 * q))),
).map(lambda d: d.replace(microsecond=0))
refs = st.one_of(st.integers(0, 255), st.integers(256, 65535))


@given(gsm7_texts.map(lambda t: fit(t, septets, 160)), numbers | alphanumerics, timestamps)
def test_gsm7_text_round_trip(text: str, sender: str, when: datetime) -> None:
    sms = decode_pdu(encode_deliver(sender, text, timestamp=when))
    assert_fields(sms, kind=PduKind.DELIVER, text=text, sender=sender, encoding=Encoding.GSM7)
    assert sms.sender_is_alphanumeric is not bool(re.fullmatch(r"\+?[0-9]+", sender))
    assert sms.timestamp == when
    assert sms.timestamp is not None
    assert sms.timestamp.utcoffset() == when.utcoffset()


@given(unicode_texts.map(lambda t: fit(t, utf16_units, 70)), st.one_of(numbers, alphanumerics))
@example(text="\U0001f600" * 35, sender="+79161234567")
def test_unicode_text_round_trip(text: str, sender: str) -> None:
    sms = decode_pdu(encode_deliver(sender, text, timestamp=WHEN))
    assert_fields(sms, kind=PduKind.DELIVER, text=text, sender=sender, timestamp=WHEN)
    all_gsm7 = all(ch in GSM7_CHARACTERS for ch in text)
    assert sms.encoding is (Encoding.GSM7 if all_gsm7 else Encoding.UCS2)


def check_split(text: str, ref: int, encoding: Encoding) -> None:
    pdus = split_deliver("Sender", text, ref=ref, timestamp=WHEN)
    parts = [decode_pdu(p) for p in pdus]
    assert all(p.kind is PduKind.DELIVER and p.encoding is encoding for p in parts)
    assert join_parts(reversed(parts)) == text
    assert "".join(p.text for p in parts) == text  # no part holds half a character
    if len(parts) == 1:
        assert parts[0].concat is None
        return
    ref_bits: Literal[8, 16] = 16 if ref > 255 else 8
    assert [p.concat for p in parts] == [
        Concat(ref, len(parts), seq, ref_bits) for seq in range(1, len(parts) + 1)
    ]
    measure = septets if encoding is Encoding.GSM7 else utf16_units
    capacity = {(Encoding.GSM7, 8): 153, (Encoding.GSM7, 16): 152}.get(
        (encoding, ref_bits), 67 if ref_bits == 8 else 66
    )
    for part, following in itertools.pairwise(parts):
        # greedy, like a phone: full up to the capacity, the next character would not fit
        assert measure(part.text) <= capacity < measure(part.text + following.text[0])
    assert measure(parts[-1].text) <= capacity


@settings(max_examples=60)
@given(st.text(st.sampled_from(GSM7_ALPHABET), min_size=150, max_size=700), refs)
def test_split_gsm7_round_trip(text: str, ref: int) -> None:
    check_split(text, ref, Encoding.GSM7)


@settings(max_examples=60)
@given(
    st.lists(unicode_chars, min_size=60, max_size=300).map("".join).filter(
        lambda t: any(ch not in GSM7_CHARACTERS for ch in t)),
    refs,
)  # fmt: skip
def test_split_unicode_round_trip(text: str, ref: int) -> None:
    check_split(text, ref, Encoding.UCS2)


@given(st.one_of(numbers, alphanumerics), st.integers(0, 255), st.integers(0, 255), timestamps)
def test_status_report_round_trip(recipient: str, ref: int, status: int, when: datetime) -> None:
    sms = decode_pdu(encode_status_report(recipient, message_ref=ref, status=status,
                                          timestamp=when, discharge_time=when))  # fmt: skip
    assert_fields(sms, kind=PduKind.STATUS_REPORT, sender=recipient, timestamp=when,
                  report=Report(ref, status, when))  # fmt: skip
