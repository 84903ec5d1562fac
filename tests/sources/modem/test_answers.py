"""Parsers of modem answers (AT+CSQ, +CMGL, ICCID forms, ...): values, and garbage raising only
AtDecodeError."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.errors import DecodeError
from gateway.sources.modem.answers import (
    AtDecodeError,
    parse_cgmi,
    parse_cgmm,
    parse_cgsn,
    parse_cimi,
    parse_cmgl,
    parse_cmgr,
    parse_cmgs,
    parse_cmti,
    parse_cnum,
    parse_cops,
    parse_cpin,
    parse_cpms,
    parse_creg,
    parse_creg_urc,
    parse_csq,
    parse_iccid,
    rssi_to_dbm,
)

PDU = "07911326040000F0040B911346610089F60000208062917314080CC8F71D14969741F977FD07"


def test_parse_cmti() -> None:
    assert parse_cmti('"SM",3') == ("SM", 3)
    assert parse_cmti('"ME", 12') == ("ME", 12)
    for bad in ["", '"SM"', '"SM",x', '"SM",-1', '"S M",1', '"SM",1,2']:
        with pytest.raises(AtDecodeError):
            parse_cmti(bad)


def test_parse_cmgl() -> None:
    lines = ["+CMGL: 1,0,,39", PDU, '+CMGL: 3,1,"",39', PDU.lower()]
    assert parse_cmgl(lines) == [(1, 0, PDU), (3, 1, PDU)]
    assert parse_cmgl([]) == []
    for bad in [["+CMGL: 1,0,,39"], ["+CMGL: 1,9,,39", PDU], [PDU], ["+CMGL: 1,0,,39", "XYZ"]]:
        with pytest.raises(AtDecodeError):
            parse_cmgl(bad)


@given(
    st.lists(
        st.tuples(st.integers(0, 500), st.integers(0, 4), st.binary(min_size=1, max_size=170)),
        max_size=8,
    )
)
def test_parse_cmgl_round_trip(entries: list[tuple[int, int, bytes]]) -> None:
    lines: list[str] = []
    for index, stat, pdu in entries:
        lines += [f"+CMGL: {index},{stat},,{max(0, len(pdu) - 1)}", pdu.hex().upper()]
    assert parse_cmgl(lines) == [(i, s, p.hex().upper()) for i, s, p in entries]


def test_parse_cmgr() -> None:
    assert parse_cmgr(["+CMGR: 0,,39", PDU]) == (0, PDU)
    assert parse_cmgr([]) is None
    assert parse_cmgr(["+CMGR: 0,,0"]) is None
    for bad in [["+CMGR: 0,,39"], ["+CMGS: 1"], ["+CMGR: x,,39", PDU], ["+CMGR: 0,,39", PDU, PDU]]:
        with pytest.raises(AtDecodeError):
            parse_cmgr(bad)


def test_parse_cmgs() -> None:
    assert parse_cmgs(["+CMGS: 17"]) == 17
    with pytest.raises(AtDecodeError):
        parse_cmgs([])


def test_parse_cpms_both_forms() -> None:
    assert parse_cpms(['+CPMS: "SM",3,30,"SM",3,30,"SM",3,30']) == [(3, 30)] * 3
    assert parse_cpms(["+CPMS: 3,30,3,30,3,30"]) == [(3, 30)] * 3
    assert parse_cpms(['+CPMS: "ME",0,100']) == [(0, 100)]
    for bad in [[], ["+CPMS: 3"], ["+CPMS: 31,30"], ['+CPMS: "SM",x,30'], ["+CPMS: ,,"]]:
        with pytest.raises(AtDecodeError):
            parse_cpms(bad)


def test_parse_csq_and_dbm() -> None:
    assert parse_csq(["+CSQ: 20,99"]) == (20, None)
    assert parse_csq(["+CSQ: 99,99"]) == (None, None)
    assert parse_csq(["+CSQ: 0,3"]) == (0, 3)
    for bad in [["+CSQ: 40,99"], ["+CSQ: 20"], ["+CSQ: 20,8"], ["+CSQ: a,b"], []]:
        with pytest.raises(AtDecodeError):
            parse_csq(bad)
    assert rssi_to_dbm(0) == -113
    assert rssi_to_dbm(31) == -51
    with pytest.raises(ValueError, match="out of range"):
        rssi_to_dbm(99)


def test_parse_creg() -> None:
    assert parse_creg(["+CREG: 0,1"]) == (0, 1)
    assert parse_creg(['+CREG: 2,5,"00C3","0F2A",7']) == (2, 5)
    assert parse_creg_urc("1") == 1
    assert parse_creg_urc('5,"00C3","0F2A"') == 5
    for bad in [["+CREG: 1"], ["+CREG: x,1"], ["+CREG: 0,99"]]:
        with pytest.raises(AtDecodeError):
            parse_creg(bad)


def test_parse_cnum() -> None:
    assert parse_cnum(['+CNUM: "","+79161234567",145']) == "+79161234567"
    assert parse_cnum(['+CNUM: "Own","79161234567",145']) == "+79161234567"
    assert parse_cnum(['+CNUM: ,"89161234567",129']) == "89161234567"
    assert parse_cnum([]) is None
    assert parse_cnum(['+CNUM: "","",129']) is None
    for bad in [['+CNUM: "","+7abc",145'], ["+CNUM: 1"], ["garbage"]]:
        with pytest.raises(AtDecodeError):
            parse_cnum(bad)


def test_parse_cpin() -> None:
    assert parse_cpin(["+CPIN: READY"]) == "READY"
    assert parse_cpin(["+CPIN: SIM PIN"]) == "SIM PIN"
    assert parse_cpin(['+CPIN: "SIM PUK"']) == "SIM PUK"
    for bad in [[], ["READY"], ["+CPIN: "], ["+CPIN: \x00\x01"]]:
        with pytest.raises(AtDecodeError):
            parse_cpin(bad)


ICCID = "8970199123456789012"


@pytest.mark.parametrize(
    "lines",
    [
        [f"+CCID: {ICCID}"],
        [f'+CCID: "{ICCID}"'],
        ["^ICCID: 980791193254769810F2"],
        [f"^ICCID: {ICCID}"],
        [f"+QCCID: {ICCID}"],
        [f"+ICCID: {ICCID}"],
        [f"#CCID: {ICCID}"],
        [ICCID],
        [f"{ICCID}F"],
    ],
)
def test_parse_iccid_maker_forms(lines: list[str]) -> None:
    assert parse_iccid(lines) == ICCID


@given(st.text(alphabet="0123456789", min_size=16, max_size=20).map(lambda d: "89" + d))
def test_parse_iccid_nibble_swapped_round_trip(iccid: str) -> None:
    padded = iccid + "F" if len(iccid) % 2 else iccid
    swapped = "".join(padded[i + 1] + padded[i] for i in range(0, len(padded), 2))
    assert parse_iccid([f"^ICCID: {swapped}"]) == iccid
    assert parse_iccid([iccid]) == iccid


def test_parse_iccid_garbage() -> None:
    for bad in [[], ["12345"], ["+CCID: 8970ABC"], ["+CCID: 1234567890123456789"]]:
        with pytest.raises(AtDecodeError):
            parse_iccid(bad)


def test_parse_cops() -> None:
    assert parse_cops(['+COPS: 0,0,"MegaFon",7']) == "MegaFon"
    assert parse_cops(['+COPS: 0,2,"25002",2']) == "25002"
    assert parse_cops(['+COPS: 0,0,"Tele2, RU",7']) == "Tele2, RU"
    assert parse_cops(["+COPS: 0"]) is None
    for bad in [[], ["+COPS: x"], ['+COPS: 0,9,"x"']]:
        with pytest.raises(AtDecodeError):
            parse_cops(bad)


def test_parse_identity() -> None:
    assert parse_cgmi(["SIMCOM_Ltd"]) == "SIMCOM_Ltd"
    assert parse_cgmi(["+CGMI: huawei"]) == "huawei"
    assert parse_cgmm(["+CGMM: EC25"]) == "EC25"
    assert parse_cgsn(["866123045678906"]) == "866123045678906"
    assert parse_cgsn(['+CGSN: "866123045678906"']) == "866123045678906"
    assert parse_cimi(["250991234567890"]) == "250991234567890"
    for parser in (parse_cgmi, parse_cgmm, parse_cgsn, parse_cimi):
        with pytest.raises(AtDecodeError):
            parser([])
    with pytest.raises(AtDecodeError):
        parse_cgsn(["86612304567890X"])


_LINE_PARSERS: list[Callable[[Sequence[str]], object]] = [
    parse_cmgl,
    parse_cmgr,
    parse_cmgs,
    parse_cpms,
    parse_csq,
    parse_creg,
    parse_cnum,
    parse_cpin,
    parse_iccid,
    parse_cops,
    parse_cgmi,
    parse_cgmm,
    parse_cgsn,
    parse_cimi,
]
_GARBAGE_TEXT = st.one_of(
    st.text(max_size=60),
    st.builds(
        lambda prefix, body: prefix + body,
        st.sampled_from(
            [
                "+CMGL: ",
                "+CMGR: ",
                "+CPMS: ",
                "+CSQ: ",
                "+CREG: ",
                "+CNUM: ",
                "+CPIN: ",
                "+CCID: ",
                "^ICCID: ",
                "+COPS: ",
                "+CGSN: ",
                "+CMGS: ",
            ]
        ),
        st.text(alphabet='0123456789,"ABCDEFSM -+x\x00', max_size=40),
    ),
)


@settings(max_examples=300)
@given(parser=st.sampled_from(_LINE_PARSERS), lines=st.lists(_GARBAGE_TEXT, max_size=5))
def test_parsers_raise_only_decode_errors_on_garbage(
    parser: Callable[[Sequence[str]], object], lines: list[str]
) -> None:
    # Anything but AtDecodeError (a DecodeError) escapes and fails the test.
    with contextlib.suppress(AtDecodeError):
        parser(lines)
    assert issubclass(AtDecodeError, DecodeError)


@given(st.text(max_size=60))
def test_urc_parsers_raise_only_decode_errors_on_garbage(args: str) -> None:
    for parser in (parse_cmti, parse_creg_urc):
        with contextlib.suppress(AtDecodeError):
            parser(args)


@given(
    st.lists(st.tuples(st.integers(0, 999), st.integers(0, 999)), min_size=1, max_size=3),
    st.booleans(),
)
def test_parse_cpms_round_trip(counts: list[tuple[int, int]], query: bool) -> None:
    counts = [(min(u, t), max(u, t)) for u, t in counts]
    if query:
        line = "+CPMS: " + ",".join(f'"SM",{u},{t}' for u, t in counts)
    else:
        line = "+CPMS: " + ",".join(f"{u},{t}" for u, t in counts)
    assert parse_cpms([line]) == counts
