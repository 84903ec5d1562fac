"""USSD: the packed request form and +CUSD replies (text, packed GSM-7, UCS-2), with garbage."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.errors import DecodeError
from gateway.sources.modem.pdu import GSM7_CHARACTERS
from gateway.sources.modem.ussd import (
    UssdReply,
    decode_ussd_text,
    number_in,
    pack_request,
    parse_cusd,
    unpack_request,
)

gsm7_text = st.text(alphabet=sorted(GSM7_CHARACTERS), min_size=1, max_size=182)
codes = st.text(alphabet="0123456789*#", min_size=1, max_size=40)


def test_the_packed_form_huawei_modems_want() -> None:
    assert pack_request("*100#") == "AA180C3602"  # the form gsm-ussd and the E1550 use


@given(codes)
def test_a_packed_code_unpacks_to_itself(code: str) -> None:
    assert unpack_request(pack_request(code)) == code


@given(gsm7_text.filter(lambda t: not t.endswith("@")))
def test_packed_replies_decode_to_their_text(text: str) -> None:
    packed = pack_request(text)
    data = bytes.fromhex(packed)
    if packed.isdigit() or (len(data) % 2 == 0 and set(data[0::2]) <= {0, 4}):
        return  # read as text (only digits) or as UCS-2 (a modem on +CSCS="UCS2") by design
    reply = parse_cusd(f'+CUSD: 0,"{packed}",15')
    assert reply == UssdReply(0, text, 15)


@given(st.text(min_size=1, max_size=90).filter(lambda t: '"' not in t))
def test_ucs2_replies_decode_to_their_text(text: str) -> None:
    try:
        hexed = text.encode("utf-16-be").hex().upper()
    except UnicodeEncodeError:
        return  # lone surrogates cannot be sent
    assert parse_cusd(f'+CUSD: 1,"{hexed}",72').text == text


def test_the_forms_seen_on_real_modems() -> None:
    assert parse_cusd('+CUSD: 0,"Vash nomer 79261234567",15').text == "Vash nomer 79261234567"
    cyrillic = "Ваш номер +7 (926) 123-45-67".encode("utf-16-be").hex().upper()
    assert parse_cusd(f'+CUSD: 0,"{cyrillic}",72').text == "Ваш номер +7 (926) 123-45-67"
    assert parse_cusd("+CUSD: 2") == UssdReply(2)
    assert parse_cusd('+CUSD: 0,"79261234567",15').text == "79261234567"
    assert not parse_cusd("+CUSD: 4").ok


@pytest.mark.parametrize("dcs", [0x0F, 0x00, 0x40, 0xF0])
def test_gsm7_schemes(dcs: int) -> None:
    assert decode_ussd_text(pack_request("Balance 5"), dcs) == "Balance 5"


@given(st.text(max_size=300))
def test_garbage_is_a_decode_error_or_a_reply(line: str) -> None:
    try:
        reply = parse_cusd(line)
    except DecodeError:
        return
    assert isinstance(reply, UssdReply) and 0 <= reply.status <= 99


@given(st.from_regex(r'\+CUSD: [0-9]{1,2},"[0-9A-Fa-f ]{0,60}",[0-9]{1,3}', fullmatch=True))
def test_hex_like_garbage_is_a_decode_error_or_a_reply(line: str) -> None:
    try:
        reply = parse_cusd(line)
    except DecodeError:
        return
    assert reply.dcs is not None and reply.text is not None


@given(st.text(max_size=80), st.text(alphabet="0123456789", max_size=3))
def test_number_in_never_returns_what_is_not_6_to_15_digits(text: str, prefix: str) -> None:
    found = number_in(text, r"(\+?[\d\s()-]{6,25})", prefix)
    assert found is None or (found.isdigit() and 6 <= len(found) <= 15)


def test_number_in_takes_the_first_group_and_the_prefix() -> None:
    assert number_in("Vash nomer +7 (926) 123-45-67.", r"(\+7[\d ()-]+)") == "79261234567"
    assert number_in("Nomer: 9261234567", r"(\d{10})", "7") == "79261234567"
    assert number_in("no number here", r"(\d{10})") is None
