"""Pure parts of the modem source: the phone of a SIM, dedup and group keys, PDU -> outbox item."""

from __future__ import annotations

import string
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.config import ModemConfig, SimConfig
from gateway.outbox.models import Hold, Incoming, Part
from gateway.play.pdu import encode_deliver, encode_status_report, split_deliver
from gateway.sources.modem.inbound import MAX_CLOCK_SKEW, Received, to_item
from gateway.sources.modem.keys import dedup_key, group_key, sim_identity
from gateway.sources.modem.pdu import decode_pdu
from gateway.sources.modem.phones import normalise_iccid, resolve_phone

ICCID = "8970199123456789012"
IMSI = "250991234567890"
MODEM = ModemConfig(port="/dev/ttyUSB0", name="m1")
T0 = datetime(2030, 5, 17, 9, 30, 0, tzinfo=UTC)

iccids = st.text(string.digits, min_size=18, max_size=22).map(lambda d: "89" + d[2:])
phones = st.text(string.digits, min_size=3, max_size=15)


# --- resolve_phone ---------------------------------------------------------------------------


def test_sim_entry_matching_the_iccid_wins() -> None:
    sims = [
        SimConfig(phone="79000000001", iccid="8970000000000000000"),
        SimConfig("79001112233", iccid=ICCID),
    ]
    modem = ModemConfig(port="/dev/ttyUSB0", name="m1", phone="79009999999")
    assert resolve_phone(sims, modem, iccid=ICCID, imsi=IMSI, cnum="+79005555555") == "79001112233"


def test_iccid_compares_without_filler_case_or_spaces() -> None:
    sims = [SimConfig(phone="79001112233", iccid="8970 1991 2345 6789 012f")]
    assert resolve_phone(sims, MODEM, iccid=ICCID + "F", imsi=None, cnum=None) == "79001112233"


def test_imsi_matches_when_the_iccid_is_not_known() -> None:
    sims = [SimConfig(phone="79001112233", imsi=IMSI)]
    assert resolve_phone(sims, MODEM, iccid=None, imsi=IMSI, cnum=None) == "79001112233"


def test_sim_entry_may_name_the_modem_source() -> None:
    sims = [SimConfig(phone="79001112233", source="modem:m1")]
    assert resolve_phone(sims, MODEM, iccid=None, imsi=None, cnum=None) == "79001112233"
    other = [SimConfig(phone="79001112233", source="modem:m1", port="/dev/ttyUSB9")]
    assert resolve_phone(other, MODEM, iccid=None, imsi=None, cnum=None) is None


def test_modem_phone_then_cnum_then_nothing() -> None:
    with_phone = ModemConfig(port="/dev/ttyUSB0", name="m1", phone="79009999999")
    assert resolve_phone([], with_phone, iccid=ICCID, imsi=IMSI, cnum="+7900") == "79009999999"
    assert (
        resolve_phone([], MODEM, iccid=ICCID, imsi=IMSI, cnum="+7 900 555-55-55") == "79005555555"
    )
    assert resolve_phone([], MODEM, iccid=ICCID, imsi=IMSI, cnum=None) is None
    assert resolve_phone([], MODEM, iccid=None, imsi=None, cnum="") is None


@given(
    iccid=iccids,
    phone=phones,
    others=st.lists(st.tuples(iccids, phones), max_size=5),
    filler=st.sampled_from(["", "F", "f"]),
    position=st.integers(min_value=0, max_value=5),
)
def test_first_matching_sim_wins_whatever_else_is_listed(
    iccid: str, phone: str, others: list[tuple[str, str]], filler: str, position: int
) -> None:
    sims = [SimConfig(phone=p, iccid=i) for i, p in others if normalise_iccid(i) != iccid]
    sims.insert(min(position, len(sims)), SimConfig(phone=phone, iccid=iccid + filler))
    sims.append(SimConfig(phone="1" + phone, iccid=iccid))  # a later duplicate never wins
    assert resolve_phone(sims, MODEM, iccid=iccid, imsi=None, cnum="+123") == phone


@given(
    iccid=st.one_of(st.none(), iccids),
    imsi=st.one_of(st.none(), st.text(string.digits, min_size=6, max_size=15)),
    cnum=st.one_of(st.none(), st.text(max_size=20)),
    sims=st.lists(st.tuples(iccids, phones), max_size=4),
)
def test_resolved_phone_is_digits_or_none(
    iccid: str | None, imsi: str | None, cnum: str | None, sims: list[tuple[str, str]]
) -> None:
    entries = [SimConfig(phone=p, iccid=i) for i, p in sims]
    phone = resolve_phone(entries, MODEM, iccid=iccid, imsi=imsi, cnum=cnum)
    assert phone is None or (phone.isascii() and phone.isdigit())


# --- keys ------------------------------------------------------------------------------------


def test_sim_identity_prefers_iccid_then_imsi_then_modem() -> None:
    assert sim_identity(ICCID, IMSI, "m1") == f"iccid:{ICCID}"
    assert sim_identity(None, IMSI, "m1") == f"imsi:{IMSI}"
    assert sim_identity(None, None, "m1") == "modem:m1"


def test_same_code_sent_again_later_is_a_new_key() -> None:
    first = encode_deliver("Instagram", "code 1234", timestamp=T0)
    again = encode_deliver("Instagram", "code 1234", timestamp=T0 + timedelta(seconds=40))
    sim = sim_identity(ICCID, None, "m1")
    k1 = dedup_key(sim, decode_pdu(first), first, slot="1")
    k2 = dedup_key(sim, decode_pdu(again), again, slot="1")
    assert k1 != k2
    assert k1 == dedup_key(sim, decode_pdu(first), first.lower(), slot="1")  # a re-read


def test_twins_in_two_slots_or_after_emptying_a_slot_differ() -> None:
    pdu = encode_deliver("Instagram", "code 1234", timestamp=T0)
    sim = sim_identity(ICCID, None, "m1")
    sms = decode_pdu(pdu)
    keys = {
        dedup_key(sim, sms, pdu, slot="1"),
        dedup_key(sim, sms, pdu, slot="2"),
        dedup_key(sim, sms, pdu, slot="1", occurrence=2),
        dedup_key(sim_identity("8970000000000000000", None, "m1"), sms, pdu, slot="1"),
    }
    assert len(keys) == 4


@settings(max_examples=60)
@given(
    a=st.tuples(
        st.sampled_from(["Instagram", "+79001112233", "Bank"]),
        st.text(max_size=30),
        st.integers(0, 3600),
    ),
    b=st.tuples(
        st.sampled_from(["Instagram", "+79001112233", "Bank"]),
        st.text(max_size=30),
        st.integers(0, 3600),
    ),
)
def test_keys_are_equal_exactly_when_the_pdus_are(
    a: tuple[str, str, int], b: tuple[str, str, int]
) -> None:
    pdus = [encode_deliver(s, t, timestamp=T0 + timedelta(seconds=d)) for s, t, d in (a, b)]
    keys = [dedup_key("iccid:x", decode_pdu(p), p, slot="3") for p in pdus]
    assert (keys[0] == keys[1]) == (pdus[0] == pdus[1])


def test_parts_of_one_message_share_a_group_key() -> None:
    parts = split_deliver("Bank", "x" * 400, ref=7, timestamp=T0)
    sim = sim_identity(ICCID, None, "m1")
    groups = {group_key(sim, decode_pdu(p)) for p in parts}
    assert len(parts) == 3 and len(groups) == 1
    other_ref = split_deliver("Bank", "x" * 400, ref=8, timestamp=T0)
    assert group_key(sim, decode_pdu(other_ref[0])) not in groups
    other_sim = sim_identity("8970000000000000000", None, "m1")
    assert group_key(other_sim, decode_pdu(parts[0])) not in groups
    part_keys = {dedup_key(sim, decode_pdu(p), p, slot=str(i)) for i, p in enumerate(parts)}
    assert len(part_keys) == 3


# --- PDU -> outbox item ----------------------------------------------------------------------


def where(phone: str | None = "79001112233", read_at: float | None = None) -> Received:
    return Received(
        source="modem:m1",
        sim=sim_identity(ICCID, None, "m1"),
        phone=phone,
        slot="1",
        read_at=read_at if read_at is not None else T0.timestamp() + 5,
    )


def test_text_sms_becomes_an_incoming_with_the_network_timestamp() -> None:
    item = to_item(encode_deliver("Instagram", "code 1234", timestamp=T0), where())
    assert isinstance(item, Incoming)
    assert (item.phone, item.phone_from, item.text) == ("79001112233", "Instagram", "code 1234")
    assert item.received_at == T0.timestamp()
    assert item.hold is None and item.source_ref and item.raw


def test_unknown_phone_holds_the_message() -> None:
    item = to_item(encode_deliver("Instagram", "code 1234", timestamp=T0), where(phone=None))
    assert isinstance(item, Incoming)
    assert item.hold is Hold.NO_PHONE and item.phone == ""


def test_undecodable_pdu_is_held_with_its_hex() -> None:
    pdu = "07911326040000F0040B91134661"
    item = to_item(pdu, where())
    assert isinstance(item, Incoming)
    assert item.hold is Hold.UNDECODABLE and item.raw == pdu and item.text == ""


def test_status_report_is_held_as_not_text() -> None:
    item = to_item(encode_status_report("+79001112233", message_ref=5, timestamp=T0), where())
    assert isinstance(item, Incoming)
    assert item.hold is Hold.NOT_TEXT and item.phone_from == "+79001112233"


def test_concatenated_part_becomes_a_part() -> None:
    pdu = split_deliver("Bank", "y" * 200, ref=300, timestamp=T0)[1]
    item = to_item(pdu, where(phone=None))
    assert isinstance(item, Part)
    assert (item.seq, item.total, item.phone, item.phone_from) == (2, 2, "", "Bank")
    assert item.group_key.endswith("16:300/2")


def test_future_or_ancient_timestamp_gives_the_time_we_read_it() -> None:
    read_at = T0.timestamp()
    ahead = T0 + timedelta(seconds=MAX_CLOCK_SKEW + 60)
    assert (
        to_item(encode_deliver("a", "b", timestamp=ahead), where(read_at=read_at)).received_at
        == read_at
    )
    ancient = datetime(1995, 1, 1, tzinfo=UTC)
    assert (
        to_item(encode_deliver("a", "b", timestamp=ancient), where(read_at=read_at)).received_at
        == read_at
    )
    skewed = T0 + timedelta(seconds=30)
    assert (
        to_item(encode_deliver("a", "b", timestamp=skewed), where(read_at=read_at)).received_at
        == skewed.timestamp()
    )


@given(st.binary(max_size=200))
def test_any_hex_becomes_an_item_never_an_error(data: bytes) -> None:
    item = to_item(data.hex().upper(), where())
    assert item.source == "modem:m1" and item.source_ref
