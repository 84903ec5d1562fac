"""Classification of modem lines: answers of the command in flight, final result codes, URCs."""

from __future__ import annotations

import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.sources.modem.answers import ICCID_PREFIXES, split_result
from gateway.sources.modem.framing import Line, LineFramer
from gateway.sources.modem.lines import (
    URC_WITH_PDU,
    AtClassifier,
    Echo,
    Event,
    Final,
    Garbage,
    Info,
    Prompt,
    Stray,
    Urc,
    answer_prefixes,
    command_prefix,
)

PDU = "07911326040000F0040B911346610089F60000208062917314080CC8F71D14969741F977FD07"


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


# ----------------------------------------------------- lines that cannot belong to the answer


def test_unknown_urc_before_the_answer_is_unsolicited() -> None:
    # Seen on a live modem: +CSQN between AT+CMGR and its answer broke the read.
    events = classify("AT+CMGR=3", "+CSQN: 20,99", "+CMGR: 0,,39", "^XMODE", PDU, "OK")
    assert events == [
        Urc("+CSQN", "20,99"),
        Info("+CMGR: 0,,39"),
        Urc("^XMODE"),
        Info(PDU),
        Final("OK", True),
    ]


@pytest.mark.parametrize(
    ("command", "text", "is_info"),
    [
        ("AT+CSQ", "+CSQN: 20,99", False),
        ("AT+CGSN", "+PACSP: 1", False),
        ("AT+CGSN", "+CGSN: 866123045678906", True),
        ("AT+CGSN", "866123045678906", True),
        ("AT+CMGF=0", "^SRVST: 2", False),  # a set command answering only OK
        ("AT+CNMI=2,1,0,0,0", "+XYZ", False),
        ("ATI", "+GCAP: +CGSM", True),  # a basic command: its lines have no fixed shape
    ],
)
def test_a_result_code_that_is_not_the_commands_answer_is_unsolicited(
    command: str, text: str, is_info: bool
) -> None:
    (event,) = classify(command, text)
    assert isinstance(event, Info) == is_info
    assert isinstance(event, Urc) == (not is_info)


def test_the_caller_may_name_more_answer_prefixes() -> None:
    classifier = AtClassifier()
    classifier.begin("AT+CCID", answers=ICCID_PREFIXES)
    line = "+ICCID: 8970199123456789012"
    assert classifier.feed(Line(text=line, raw=line.encode())) == [Info(line)]


@pytest.mark.parametrize(
    ("command", "answers"),
    [
        ("AT+CMGR=3", frozenset({"+CMGR"})),
        ("AT^ICCID?", frozenset({"^ICCID"})),
        ("AT+CMEE=1", frozenset()),
        ("ATE0", None),
        ("ATI", None),
        ("AT", None),
    ],
)
def test_answer_prefixes(command: str, answers: frozenset[str] | None) -> None:
    assert answer_prefixes(command) == answers


# A command in flight and the lines of its answer (PDU lines, bare values, its own +NAME: lines).
ANSWERS = [
    ("AT+CMGR=3", ["+CMGR: 0,,39", PDU]),
    ("AT+CMGL=4", ["+CMGL: 1,0,,39", PDU, '+CMGL: 3,1,"",39', PDU]),
    ("AT+CSQ", ["+CSQ: 20,99"]),
    ("AT+CPMS?", ['+CPMS: "SM",3,30,"SM",3,30,"SM",3,30']),
    ("AT+CGSN", ["866123045678906"]),
    ("AT^ICCID?", ["^ICCID: 98071021436587092143"]),
    ("AT+CMGD=3", []),
    ("AT+CNMI=2,1,0,0,0", []),
]
_NAMES = st.from_regex(r"[A-Z][A-Z0-9]{0,7}", fullmatch=True)
_ARGS = st.text(alphabet=string.ascii_letters + string.digits + ',"._ -', max_size=20)
_UNSOLICITED = st.builds(
    lambda sigil, name, args: f"{sigil}{name}" if args is None else f"{sigil}{name}: {args}",
    st.sampled_from("+^"),
    _NAMES,
    st.none() | _ARGS,
)


@given(
    st.sampled_from(ANSWERS),
    st.lists(st.tuples(st.integers(0, 10), _UNSOLICITED), max_size=6),
)
def test_result_codes_of_any_name_around_an_answer_never_join_it(
    answer: tuple[str, list[str]], inserts: list[tuple[int, str]]
) -> None:
    command, lines = answer
    own = answer_prefixes(command) or frozenset()
    inserts = [
        (at, text)
        for at, text in inserts
        if split_result(text)[0].upper() not in own | URC_WITH_PDU
    ]
    stream = [*lines]
    for at, text in inserts:
        stream.insert(at % (len(stream) + 1), text)
    framed = LineFramer().feed("".join(f"\r\n{t}\r\n" for t in [*stream, "OK"]).encode())
    classifier = AtClassifier()
    classifier.begin(command)
    events = [e for line in framed for e in classifier.feed(line)]
    assert [e.text for e in events if isinstance(e, Info)] == lines
    assert len([e for e in events if isinstance(e, Urc)]) == len(inserts)
    assert events[-1] == Final("OK", True)
