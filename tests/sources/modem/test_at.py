"""The AT layer without a modem: framer, classifier, parsers, and AtChannel over a memory link."""

from __future__ import annotations

import asyncio
import contextlib
import string
from collections.abc import Callable, Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.errors import DecodeError, GatewayError
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
    split_result,
)
from gateway.sources.modem.at import (
    AtChannel,
    AtClassifier,
    AtError,
    AtResponse,
    AtTimeout,
    Echo,
    Event,
    Final,
    Garbage,
    Info,
    Line,
    LineFramer,
    LinkClosed,
    Prompt,
    Stray,
    Urc,
    command_prefix,
)

PDU = "07911326040000F0040B911346610089F60000208062917314080CC8F71D14969741F977FD07"


def texts(lines: Sequence[Line]) -> list[str]:
    return [line.text for line in lines]


def feed_chunked(data: bytes, cuts: Sequence[int], max_line: int = 4096) -> list[Line]:
    framer = LineFramer(max_line)
    out: list[Line] = []
    start = 0
    for cut in sorted(set(cuts)):
        out += framer.feed(data[start:cut])
        start = cut
    out += framer.feed(data[start:])
    return out


# ---------------------------------------------------------------------------------- framer


def test_framer_splits_on_crlf_cr_and_lf_and_drops_empty_lines() -> None:
    framer = LineFramer()
    data = b"\r\nOK\r\n\r\n+CSQ: 20,99\rRING\nlast"
    assert texts(framer.feed(data)) == ["OK", "+CSQ: 20,99", "RING"]
    assert framer.pending == 4
    assert texts(framer.feed(b"\r\n")) == ["last"]


def test_framer_reports_the_prompt_without_terminator() -> None:
    framer = LineFramer()
    lines = framer.feed(b"AT+CMGS=23\r\r\n> ")
    assert texts(lines) == ["AT+CMGS=23", ">"]
    assert lines[1].prompt
    assert framer.pending == 0


def test_framer_prompt_split_across_chunks() -> None:
    framer = LineFramer()
    assert framer.feed(b"\r\n>") == []
    lines = framer.feed(b" ")
    assert len(lines) == 1
    assert lines[0].prompt


def test_framer_greater_than_without_space_is_a_line() -> None:
    assert texts(LineFramer().feed(b">x\r\n>\r\n")) == [">x", ">"]


def test_framer_flags_invalid_utf8_and_control_characters() -> None:
    lines = LineFramer().feed(b"\xff\xfeOK\r\n\x00\x00\r\nfine\r\n")
    assert [(line.garbled, line.invalid) for line in lines] == [
        (True, True),
        (True, True),
        (False, False),
    ]
    assert lines[0].text == "\ufffd\ufffdOK"
    assert lines[0].raw == b"\xff\xfeOK"


def test_framer_caps_line_length_and_resumes_at_next_terminator() -> None:
    framer = LineFramer(max_line=16)
    lines = framer.feed(b"A" * 40)
    assert len(lines) == 1
    assert lines[0].truncated
    assert lines[0].raw == b"A" * 16
    assert framer.pending == 0
    assert framer.feed(b"B" * 10_000) == []
    assert framer.pending == 0
    assert texts(framer.feed(b"CCC\r\nOK\r\n")) == ["OK"]


def test_framer_line_of_exactly_max_length_is_whole() -> None:
    lines = LineFramer(max_line=4).feed(b"ABCD\r\n")
    assert texts(lines) == ["ABCD"]
    assert not lines[0].truncated


_TOKENS = st.sampled_from(
    [b"\r", b"\n", b"\r\n", b"> ", b">", b" ", b"OK", b'+CMTI: "SM",3', b"\xff", b"\x00", b"A" * 20]
)
_STREAM = st.one_of(
    st.binary(max_size=300),
    st.lists(_TOKENS, max_size=40).map(b"".join),
)


@given(data=_STREAM, cuts=st.lists(st.integers(0, 300), max_size=20), max_line=st.integers(2, 64))
def test_framer_any_chunking_gives_the_same_lines(
    data: bytes, cuts: list[int], max_line: int
) -> None:
    whole = LineFramer(max_line).feed(data)
    assert feed_chunked(data, cuts, max_line) == whole
    bytewise = feed_chunked(data, list(range(len(data))), max_line)
    assert bytewise == whole


@given(chunks=st.lists(st.binary(max_size=200), max_size=30), max_line=st.integers(2, 64))
def test_framer_random_bytes_never_crash_and_memory_is_bounded(
    chunks: list[bytes], max_line: int
) -> None:
    framer = LineFramer(max_line)
    for chunk in chunks:
        for line in framer.feed(chunk):
            assert len(line.raw) <= max_line
            assert b"\r" not in line.raw
            assert b"\n" not in line.raw
            assert line.prompt or line.garbled or line.text
        assert framer.pending <= max_line


_PRINTABLE_LINE = st.text(
    alphabet=string.ascii_letters + string.digits + '+:,"^#= ', min_size=1, max_size=60
).filter(lambda s: s.strip() != "" and not s.startswith("> ") and s != ">")


@given(
    lines=st.lists(_PRINTABLE_LINE, max_size=20),
    terminators=st.lists(st.sampled_from([b"\r\n", b"\r", b"\n", b"\r\n\r\n"]), min_size=1),
)
def test_framer_round_trips_printable_lines(lines: list[str], terminators: list[bytes]) -> None:
    data = b"".join(
        line.encode() + terminators[i % len(terminators)] for i, line in enumerate(lines)
    )
    out = LineFramer().feed(data)
    assert texts(out) == [line.strip() for line in lines]
    assert not any(line.garbled for line in out)


# ------------------------------------------------------------------------------ classifier


def classify(command: str | None, *raw: str) -> list[Event]:
    classifier = AtClassifier()
    if command is not None:
        classifier.begin(command)
    out: list[Event] = []
    for text in raw:
        out += classifier.feed(Line(text=text, raw=text.encode()))
    return out


@pytest.mark.parametrize(
    ("text", "ok"),
    [
        ("OK", True),
        ("ERROR", False),
        ("+CME ERROR: 10", False),
        ("+CMS ERROR: 321", False),
        ("+CME ERROR: SIM not inserted", False),
        ("NO CARRIER", False),
        ("COMMAND NOT SUPPORT", False),
        ("TOO MANY PARAMETERS", False),
    ],
)
def test_final_result_codes(text: str, ok: bool) -> None:
    assert classify("AT+CSQ", text) == [Final(text, ok)]


def test_final_without_command_is_stray() -> None:
    assert classify(None, "OK") == [Stray("OK")]


def test_info_lines_and_urc_while_command_in_flight() -> None:
    events = classify("AT+CSQ", '+CMTI: "SM",3', "+CSQ: 20,99", "RING", "OK")
    assert events == [Urc("+CMTI", '"SM",3'), Info("+CSQ: 20,99"), Urc("RING"), Final("OK", True)]


def test_plain_info_lines_belong_to_the_command() -> None:
    assert classify("AT+CGSN", "866123045678906", "OK") == [
        Info("866123045678906"),
        Final("OK", True),
    ]


@pytest.mark.parametrize(
    ("command", "text", "is_info"),
    [
        ("AT+CREG?", "+CREG: 0,1", True),
        ("AT+CSQ", "+CREG: 1", False),
        (None, "+CREG: 1", False),
        ("AT+CPIN?", "+CPIN: READY", True),
        ('AT+CPIN="1234"', "+CPIN: READY", False),
        ("AT+CFUN=1,1", "+CPIN: READY", False),
        ("AT^ICCID?", "^ICCID: 98071021436587092143", True),
        ("AT+CMGL=4", "+CMGL: 1,0,,24", True),
    ],
)
def test_same_prefix_is_info_only_while_that_query_is_in_flight(
    command: str | None, text: str, is_info: bool
) -> None:
    events = classify(command, text)
    assert len(events) == 1
    assert isinstance(events[0], Info) == is_info
    assert isinstance(events[0], Urc) == (not is_info)


def test_cmt_header_takes_the_next_pdu_line() -> None:
    assert classify(None, "+CMT: ,24", PDU) == [Urc("+CMT", ",24", PDU)]
    # even while a listing is in flight, the PDU after +CMT is the URC's, not the command's
    events = classify("AT+CMGL=4", "+CMGL: 1,0,,24", PDU, "+CMT: ,24", PDU, "OK")
    assert events == [
        Info("+CMGL: 1,0,,24"),
        Info(PDU),
        Urc("+CMT", ",24", PDU),
        Final("OK", True),
    ]


def test_cds_header_takes_its_pdu() -> None:
    assert classify("AT", "+CDS: 25", "0006D60B911326880736F4", "OK") == [
        Urc("+CDS", "25", "0006D60B911326880736F4"),
        Final("OK", True),
    ]


def test_cmt_header_without_pdu_is_released_and_next_line_classified() -> None:
    assert classify("AT", "+CMT: ,24", "OK") == [Urc("+CMT", ",24"), Final("OK", True)]


def test_echo_dropped_only_before_the_answer() -> None:
    events = classify("AT+CGMI", "AT+CGMI", "SIMCOM_Ltd", "OK")
    assert events == [Echo("AT+CGMI"), Info("SIMCOM_Ltd"), Final("OK", True)]


def test_garbage_and_prompt() -> None:
    classifier = AtClassifier()
    classifier.begin("AT+CMGS=23")
    bad = Line(text="\ufffd", raw=b"\xff", invalid=True)
    assert classifier.feed(bad) == [Garbage(bad)]
    assert classifier.feed(Line(text=">", raw=b"> ", prompt=True)) == [Prompt()]


@pytest.mark.parametrize(
    "text",
    [
        "RDY",
        "Call Ready",
        "SMS Ready",
        "^SYSSTART",
        "^RSSI:18",
        "^BOOT:1,0,0,0,75",
        "+QIND: PB DONE",
    ],
)
def test_known_urcs_while_a_command_is_in_flight(text: str) -> None:
    events = classify("AT+CGSN", text)
    assert len(events) == 1
    assert isinstance(events[0], Urc)


def test_unknown_line_when_idle_is_an_urc() -> None:
    assert classify(None, "+XYZ: 1,2") == [Urc("+XYZ", "1,2")]
    assert classify(None, "hello") == [Urc("hello")]


@pytest.mark.parametrize(
    ("command", "prefix"),
    [
        ("AT+CSQ", "+CSQ"),
        ("at+cmgl=4", "+CMGL"),
        ("AT^ICCID?", "^ICCID"),
        ("AT#CCID", "#CCID"),
        ("ATE0", None),
        ("AT", None),
        ('AT+CPIN="1234"', None),
        ("AT+CPIN?", "+CPIN"),
        ("AT+CREG=2", None),
        ('AT+CPMS="SM","SM","SM"', "+CPMS"),
    ],
)
def test_command_prefix(command: str, prefix: str | None) -> None:
    assert command_prefix(command) == prefix


def test_split_result() -> None:
    assert split_result('+CMTI: "SM",3') == ("+CMTI", '"SM",3')
    assert split_result("^RSSI:18") == ("^RSSI", "18")
    assert split_result("+CME ERROR: 10") == ("+CME ERROR", "10")
    assert split_result("RING") == ("RING", "")


@given(st.lists(st.text(max_size=40), max_size=10), st.sampled_from([None, "AT+CSQ", "AT+CMGL=4"]))
def test_classifier_never_crashes(raw: list[str], command: str | None) -> None:
    events = classify(command, *raw)
    assert all(isinstance(e, Urc | Info | Final | Prompt | Echo | Garbage | Stray) for e in events)


# --------------------------------------------------------------------------------- parsers


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


# ------------------------------------------------------------- AtChannel over memory link


class MemoryLink:
    """A scripted modem: ``respond(written_command) -> bytes`` answers each written line."""

    def __init__(self, respond: Callable[[bytes], bytes] | None = None) -> None:
        self.name = "memory"
        self.written: list[bytes] = []
        self.closed = False
        self._respond = respond
        self._incoming: asyncio.Queue[bytes] = asyncio.Queue()

    def push(self, data: bytes) -> None:
        self._incoming.put_nowait(data)

    async def read(self) -> bytes:
        return await self._incoming.get()

    def write(self, data: bytes) -> None:
        if self.closed:
            raise LinkClosed("memory: closed")
        self.written.append(data)
        if self._respond is not None:
            answer = self._respond(data)
            if answer:
                self.push(answer)

    async def close(self) -> None:
        self.closed = True


async def open_memory(
    respond: Callable[[bytes], bytes] | None = None,
) -> tuple[AtChannel, MemoryLink, list[Urc]]:
    link = MemoryLink(respond)
    urcs: list[Urc] = []
    channel = AtChannel(link, on_urc=urcs.append)
    channel.start()
    return channel, link, urcs


async def test_channel_ok_and_info_lines() -> None:
    channel, link, _ = await open_memory(lambda _: b"\r\n+CSQ: 20,99\r\n\r\nOK\r\n")
    response = await channel.command("AT+CSQ")
    assert response == AtResponse("AT+CSQ", ("+CSQ: 20,99",), "OK")
    assert response.first("+CSQ") == "20,99"
    assert response.first() == "+CSQ: 20,99"
    assert link.written == [b"AT+CSQ\r"]
    await channel.close()
    assert link.closed


@pytest.mark.parametrize(
    ("final", "kind", "code", "text"),
    [
        (b"ERROR", "ERROR", None, ""),
        (b"+CME ERROR: 16", "+CME ERROR", 16, "16"),
        (b"+CMS ERROR: 321", "+CMS ERROR", 321, "321"),
        (b"+CME ERROR: SIM not inserted", "+CME ERROR", None, "SIM not inserted"),
        (b"COMMAND NOT SUPPORT", "COMMAND NOT SUPPORT", None, ""),
    ],
)
async def test_channel_errors_are_typed(
    final: bytes, kind: str, code: int | None, text: str
) -> None:
    channel, _, _ = await open_memory(lambda _: b"\r\n" + final + b"\r\n")
    with pytest.raises(AtError) as info:
        await channel.command('AT+CPIN="0000"')
    assert (info.value.kind, info.value.code, info.value.text) == (kind, code, text)
    assert info.value.command == 'AT+CPIN="0000"'
    assert isinstance(info.value, GatewayError)
    await channel.close()


async def test_channel_writes_the_pdu_after_the_prompt() -> None:
    def respond(data: bytes) -> bytes:
        if data.startswith(b"AT+CMGS"):
            return b"\r\n> "
        if data.endswith(b"\x1a"):
            return b"\r\n+CMGS: 7\r\n\r\nOK\r\n"
        return b""

    channel, link, _ = await open_memory(respond)
    response = await channel.command("AT+CMGS=10", expect_pdu_prompt=b"0011AA")
    assert parse_cmgs(response.lines) == 7
    assert link.written == [b"AT+CMGS=10\r", b"0011AA\x1a"]
    await channel.close()


async def test_channel_prompt_timeout_cancels_input_with_esc() -> None:
    channel, link, _ = await open_memory()
    with pytest.raises(AtTimeout):
        await channel.command("AT+CMGS=10", timeout=0.05, expect_pdu_prompt=b"00")
    assert link.written == [b"AT+CMGS=10\r", b"\x1b"]
    await channel.close()


async def test_channel_eof_fails_the_command_and_later_ones() -> None:
    channel, link, _ = await open_memory()
    task = asyncio.create_task(channel.command("AT", timeout=5))
    await asyncio.sleep(0)
    link.push(b"")
    with pytest.raises(LinkClosed):
        await asyncio.wait_for(task, 1)
    assert isinstance(await asyncio.wait_for(channel.wait_closed(), 1), LinkClosed)
    with pytest.raises(LinkClosed):
        await channel.command("AT")
    await channel.close()


async def test_channel_survives_a_failing_urc_callback() -> None:
    link = MemoryLink(lambda _: b"\r\nOK\r\n")
    seen: list[Urc] = []

    def on_urc(urc: Urc) -> None:
        seen.append(urc)
        raise RuntimeError("boom")

    async with AtChannel(link, on_urc=on_urc) as channel:
        link.push(b"\r\nRING\r\n")
        assert (await channel.command("AT")).lines == ()
        assert seen == [Urc("RING")]


async def test_channel_serialises_concurrent_commands() -> None:
    answers = {b"AT+CGMI\r": b"\r\nX\r\n\r\nOK\r\n", b"AT+CGMM\r": b"\r\nY\r\n\r\nOK\r\n"}
    channel, _, _ = await open_memory(lambda data: answers[data])
    first, second = await asyncio.gather(channel.command("AT+CGMI"), channel.command("AT+CGMM"))
    assert (first.lines, second.lines) == (("X",), ("Y",))
    await channel.close()


async def test_channel_rejects_bad_commands() -> None:
    channel, _, _ = await open_memory()
    for bad in ["CSQ", "AT\r+CSQ", "AT+CMGS=1\x1a"]:
        with pytest.raises(ValueError, match="not a single AT command"):
            await channel.command(bad)
    await channel.close()
