"""The PDU handling written here, as properties: framing, bind bodies, data_coding and UDH."""

from __future__ import annotations

import asyncio
import contextlib
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.outbox import Hold
from gateway.sources.smpp.content import decode_text, read_content, udh_concat
from gateway.sources.smpp.pdu import (
    MESSAGES,
    Bind,
    Command,
    PduError,
    ShortMessage,
    bind_body,
    decode_message,
    encode,
    message_pdu,
    parse_bind,
    parse_header,
    read_pdu,
)
from tests.sources.smpp.peer import sm

cstr = st.text(st.characters(min_codepoint=1, max_codepoint=255), max_size=8)


@given(st.binary(max_size=300))
def test_any_bytes_are_a_pdu_or_a_pdu_error(data: bytes) -> None:
    try:
        h = parse_header(data)
    except PduError:
        return
    if h.command_id in MESSAGES:
        with contextlib.suppress(PduError):
            decode_message(h, data[: h.length])
    elif h.command_id in (Command.BIND_TRANSCEIVER, Command.BIND_RECEIVER):
        with contextlib.suppress(PduError):
            parse_bind(Command(h.command_id), data[16 : h.length])


body_commands = st.sampled_from([*MESSAGES, Command.BIND_TRANSCEIVER, Command.BIND_RECEIVER])


def _parse(data: bytes) -> object:
    """What the session does with one framed PDU: a message, a bind, or PduError."""
    h = parse_header(data)
    if h.command_id in MESSAGES:
        return decode_message(h, data)
    return parse_bind(Command(h.command_id), data[16:])


@given(body_commands, st.integers(0, 0x7FFFFFFF), st.binary(max_size=300))
def test_a_well_framed_pdu_with_any_body_is_read_or_a_pdu_error(
    command: Command, seq: int, body: bytes
) -> None:
    # A real header around random bytes: the decoders themselves are reached, not only the
    # framing (random bytes alone almost never make a valid header).
    with contextlib.suppress(PduError):
        _parse(encode(command, seq, 0, body))


valid_messages = st.builds(
    sm,
    st.integers(1, 0x7FFFFFFF),
    st.binary(max_size=254),
    src=st.text(st.characters(min_codepoint=0x30, max_codepoint=0x39), max_size=20),
    dst=st.text(st.characters(min_codepoint=0x30, max_codepoint=0x39), max_size=20),
    esm_class=st.integers(0, 255),
    data_coding=st.integers(0, 255),
    tlvs=st.lists(
        st.tuples(st.sampled_from([0x0424, 0x020C, 0x020E, 0x020F]), st.binary(max_size=8)),
        max_size=3,
    ).map(tuple),
    command=st.sampled_from([Command.SUBMIT_SM, Command.DELIVER_SM]),
) | st.builds(  # a data_sm has no short_message: its text is in message_payload
    sm,
    st.integers(1, 0x7FFFFFFF),
    st.just(b""),
    src=st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF), max_size=64),
    dst=st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF), max_size=64),
    esm_class=st.integers(0, 255),
    data_coding=st.integers(0, 255),
    tlvs=st.lists(st.tuples(st.integers(0, 0xFFFF), st.binary(max_size=300)), max_size=4).map(
        tuple
    ),
    command=st.just(Command.DATA_SM),
)


@given(valid_messages)
def test_a_message_round_trips_through_the_codec(m: ShortMessage) -> None:
    data = message_pdu(m)
    assert decode_message(parse_header(data), data) == m


@given(valid_messages, st.data())
def test_a_damaged_message_is_read_or_a_pdu_error(m: ShortMessage, data: st.DataObject) -> None:
    pdu = bytearray(message_pdu(m))
    cut = data.draw(st.integers(16, len(pdu)), label="keep")
    damaged = pdu[:cut]
    for _ in range(data.draw(st.integers(0, 4), label="flips")):
        if len(damaged) > 16:
            i = data.draw(st.integers(16, len(damaged) - 1), label="at")
            damaged[i] = data.draw(st.integers(0, 255), label="byte")
    framed = encode(m.command, m.seq, 0, bytes(damaged[16:]))  # the length says what is there
    try:
        got = _parse(framed)
    except PduError:
        return
    assert isinstance(got, ShortMessage) and got.seq == m.seq


@given(st.binary(max_size=200))
def test_a_garbage_stream_ends_in_eof_or_a_frame_error(data: bytes) -> None:
    async def run() -> None:
        reader = asyncio.StreamReader()
        reader.feed_data(data)
        reader.feed_eof()
        while True:
            try:
                await read_pdu(reader)
            except (asyncio.IncompleteReadError, PduError):
                return

    asyncio.run(run())


@given(cstr, cstr, cstr, st.integers(0, 255), st.integers(0, 255))
def test_bind_bodies_round_trip(sid: str, pw: str, typ: str, ton: int, npi: int) -> None:
    b = Bind(Command.BIND_RECEIVER, sid, pw, typ, 0x34, ton, npi, "")
    assert parse_bind(Command.BIND_RECEIVER, bind_body(b)) == b
    assert "SECRETPW" not in repr(Bind(Command.BIND_RECEIVER, sid, "SECRETPW"))


@given(st.integers(0, 255), st.binary(max_size=200), st.sampled_from(["gsm", "latin1", "ia5"]))
def test_every_data_coding_gives_text_none_or_the_reserved_fallback(
    dc: int, data: bytes, alphabet: str
) -> None:
    try:
        text = decode_text(dc, data, alphabet)  # type: ignore[arg-type]
    except LookupError:
        assert 0x40 <= dc <= 0xBF
        return
    assert text is None or isinstance(text, str)


@given(st.text(max_size=60))
def test_ucs2_with_surrogate_pairs_round_trips(text: str) -> None:
    data = text.encode("utf-16-be", "surrogatepass")
    c = read_content(sm(1, data, data_coding=8))
    assert c.text == text.encode("utf-16-be", "surrogatepass").decode("utf-16-be", "replace")


@given(
    st.lists(
        st.binary(min_size=1, max_size=6).map(lambda b: bytes([0x70, len(b)]) + b), max_size=3
    ),
    st.integers(0, 0xFFFF),
    st.integers(2, 9),
    st.data(),
)
def test_the_concat_element_is_found_anywhere_in_the_udh(
    others: list[bytes], ref: int, total: int, data: st.DataObject
) -> None:
    seq = data.draw(st.integers(1, total))
    concat = bytes([0x08, 4, ref >> 8, ref & 0xFF, total, seq])
    at = data.draw(st.integers(0, len(others)))
    ies = b"".join(others[:at]) + concat + b"".join(others[at:])
    found = udh_concat(ies)
    assert found is not None and (found.ref, found.total, found.seq, found.bits) == (
        ref, total, seq, 16,
    )  # fmt: skip
    c = read_content(sm(1, bytes([len(ies)]) + ies + b"Hi", esm_class=0x40))
    assert c.concat == found and c.text == "Hi"


@given(st.binary(max_size=140), st.integers(0, 255), st.integers(0, 255))
def test_any_user_data_is_read_without_an_exception(data: bytes, esm: int, dc: int) -> None:
    c = read_content(sm(1, data, esm_class=esm, data_coding=dc))
    assert c.hold in (None, Hold.NOT_TEXT, Hold.UNDECODABLE)


@pytest.mark.parametrize("dc", [4, 0xF6, 0xF4, 2])
def test_binary_data_codings_are_held_not_text(dc: int) -> None:
    assert read_content(sm(1, b"\x00\xff", data_coding=dc)).hold == Hold.NOT_TEXT


def test_message_payload_is_read_when_short_message_is_empty() -> None:
    m = sm(1, b"", tlvs=((0x0424, b"long payload"),))
    assert read_content(decode_message(parse_header(message_pdu(m)), message_pdu(m))).text == (
        "long payload"
    )


@pytest.mark.parametrize(
    ("alphabet", "data", "text"),
    [("gsm", b"\x00\x1b\x65", "@€"), ("latin1", b"\xe9", "é"), ("ia5", b"abc", "abc")],
)
def test_data_coding_0_follows_the_connection_setting(
    alphabet: str, data: bytes, text: str
) -> None:
    assert read_content(sm(1, data), alphabet).text == text  # type: ignore[arg-type]


def test_a_data_sm_carries_its_text_in_message_payload() -> None:
    payload = "Код 4321".encode("utf-16-be")
    m = sm(3, b"", data_coding=8, tlvs=((0x0424, payload),), command=Command.DATA_SM)
    data = message_pdu(m)
    got = decode_message(parse_header(data), data)
    assert (got.command, got.seq, got.source_addr, got.destination_addr) == (
        Command.DATA_SM, 3, "79005556677", "79001230001",
    )  # fmt: skip
    assert read_content(got, "gsm").text == "Код 4321"


@pytest.mark.parametrize(
    "cut",
    [
        b"\0\1\1",  # ends inside the source address
        b"\0\1\1123\0\1\1456\0\0",  # ends inside esm_class .. data_coding
        b"\0\1\1123\0\1\1456\0\0\0\0\x04\x24\0\x09abc",  # a TLV longer than what is left
        b"\0\1\1123\0\1\1456\0\0\0\0\x04",  # a TLV header cut short
        b"toolongservice\0",  # service_type over 5 characters
    ],
)
def test_a_broken_data_sm_is_a_pdu_error(cut: bytes) -> None:
    data = encode(Command.DATA_SM, 1, 0, cut)
    with pytest.raises(PduError):
        decode_message(parse_header(data), data)


def test_a_data_sm_with_more_tlvs_than_any_real_pdu_is_refused() -> None:
    fixed = b"\0\1\1123\0\1\1456\0\0\0\0"
    many = b"".join(struct.pack(">HH", 0x1400 + i, 0) for i in range(65))
    data = encode(Command.DATA_SM, 1, 0, fixed + many)
    with pytest.raises(PduError) as e:
        decode_message(parse_header(data), data)
    assert e.value.status == 0xC0  # ESME_RINVOPTPARSTREAM
    ok = encode(Command.DATA_SM, 1, 0, fixed + many[: 64 * 4])
    assert len(decode_message(parse_header(ok), ok).tlvs) == 64
