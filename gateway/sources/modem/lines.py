"""What each line from the modem is: an answer line of the command in flight, its final result
code, an unsolicited result code (URC), the echo, the prompt or garbage.

Pure and synchronous: :class:`AtClassifier` turns :class:`~gateway.sources.modem.framing.Line`
objects into :data:`Event` values, knowing which command is in flight. The URCs modems are
known to send are listed here as data.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from gateway.sources.modem.answers import HEX_LINE, split_result
from gateway.sources.modem.framing import Line

__all__ = [
    "URC_LINES",
    "URC_NAMES",
    "URC_WITH_PDU",
    "AtClassifier",
    "Echo",
    "Event",
    "Final",
    "Garbage",
    "Info",
    "Prompt",
    "Stray",
    "Urc",
    "answer_prefixes",
    "command_prefix",
]


@dataclass(frozen=True, slots=True)
class Urc:
    """An unsolicited result code: ``name`` like ``"+CMTI"`` or ``"RING"``, ``args`` the text
    after ``": "`` (empty for bare words), ``pdu`` the PDU line of ``+CMT``/``+CDS``/``+CBM``."""

    name: str
    args: str = ""
    pdu: str | None = None


@dataclass(frozen=True, slots=True)
class Info:
    """An information line of the command in flight (PDU lines included)."""

    text: str


@dataclass(frozen=True, slots=True)
class Final:
    """The final result code of the command in flight."""

    text: str
    ok: bool


@dataclass(frozen=True, slots=True)
class Prompt:
    """The ``> `` prompt asking for the PDU of ``AT+CMGS``/``AT+CMGW``."""


@dataclass(frozen=True, slots=True)
class Echo:
    """The modem echoing the command back (echo still on)."""

    text: str


@dataclass(frozen=True, slots=True)
class Garbage:
    """A line that is not text (bad UTF-8, control characters) or too long; to log and skip."""

    line: Line


@dataclass(frozen=True, slots=True)
class Stray:
    """A final result code while no command is in flight (a late answer after a timeout)."""

    text: str


Event = Urc | Info | Final | Prompt | Echo | Garbage | Stray

_FINAL_ERROR_WORDS = frozenset(
    {
        "ERROR",
        "NO CARRIER",
        "COMMAND NOT SUPPORT",
        "TOO MANY PARAMETERS",
        "BUSY",
        "NO ANSWER",
        "NO DIALTONE",
    }
)
_FINAL_ERROR_PREFIXES = ("+CME ERROR:", "+CMS ERROR:")

# The URCs modems are known to send. Any "+NAME:"/"^NAME:" line that is not the answer of an
# extended command in flight is unsolicited whether listed or not; the lists matter while a
# basic command (ATI, ATE0), whose answer lines have no fixed shape, is in flight.

#: URCs that are a "+NAME: args" or "^NAME: args" line.
URC_NAMES = frozenset(
    {
        "+CMTI",
        "+CMT",
        "+CDSI",
        "+CDS",
        "+CBM",
        "+CBMI",
        "+CLIP",
        "+CRING",
        "+CCWA",
        "+CUSD",
        "+CREG",
        "+CGREG",
        "+CEREG",
        "+C5GREG",
        "+CPIN",
        "+CFUN",
        "+CIEV",
        "+CTZV",
        "+CTZE",
        "+CTZU",
        "+PSUTTZ",
        "*PSUTTZ",
        "DST",
        "+QIND",
        "+QIURC",
        "+QUSIM",
        "+QSIMSTAT",
        "+STIN",
        "+STKPCI",
        "+CUSATP",
        "+WIND",
        "#QSS",
        "+SIMCARD",
        "^RSSI",
        "^HCSQ",
        "^BOOT",
        "^MODE",
        "^SRVST",
        "^SIMST",
        "^SYSSTART",
        "^STIN",
        "^CEND",
        "^ORIG",
        "^CONF",
        "^CONN",
        "^DSFLOWRPT",
        "^NDISSTAT",
        "^SMMEMFULL",
        "^SIMFILEREFRESH",
        "^ACTIVEBAND",
        "^CSNR",
        "^CERSSI",
        "^NWTIME",
        "^EONS",
        "^RSSILVL",
        "^HRSSILVL",
    }
)
#: URCs that are a whole line (compared upper-case).
URC_LINES = frozenset(
    {
        "RING",
        "RDY",
        "CALL READY",
        "SMS READY",
        "PB DONE",
        "PB READY",
        "^SYSSTART",
        "NORMAL POWER DOWN",
        "POWERED DOWN",
        "UNDER-VOLTAGE POWER DOWN",
        "UNDER-VOLTAGE WARNNING",
        "OVER-VOLTAGE POWER DOWN",
        "OVER-VOLTAGE WARNNING",
        "START",
    }
)
#: URC headers whose next line is a PDU that belongs to them.
URC_WITH_PDU = frozenset({"+CMT", "+CDS", "+CBM"})
# Set commands (``AT+X=...``) that answer only with a result code: a ``+X:`` line while they
# are in flight is an unsolicited code (``AT+CPIN="1234"`` is followed by ``+CPIN: READY``).
_SET_WITHOUT_INFO = frozenset(
    {"+CPIN", "+CREG", "+CGREG", "+CEREG", "+CFUN", "+CNMI", "+CMEE", "+CMGF", "+CSCS"}
)

_SIGILS = "+^$%#*"  # what an extended command's name, and so its result codes, start with
_CMD_PREFIX = re.compile(r"AT([+^$%#*][A-Z0-9_]+|&?[A-Z])?", re.IGNORECASE)


def command_prefix(command: str) -> str | None:
    """The prefix of the information lines ``command`` answers with: ``AT+CSQ`` -> ``"+CSQ"``.

    ``None`` for basic commands (``ATE0``, ``ATI``) and for set commands that answer only OK.
    """
    m = _CMD_PREFIX.match(command.strip())
    if m is None or m.group(1) is None or m.group(1)[0] not in _SIGILS:
        return None
    prefix = m.group(1).upper()
    rest = command.strip()[m.end() :]
    if rest.startswith("=") and not rest.startswith("=?") and prefix in _SET_WITHOUT_INFO:
        return None
    return prefix


def answer_prefixes(command: str, extra: Iterable[str] = ()) -> frozenset[str] | None:
    """The ``+NAME``/``^NAME`` prefixes the answer lines of ``command`` may carry: its own
    (:func:`command_prefix`) and ``extra`` (for makers that answer with another name:
    ``AT+CCID`` -> ``+ICCID: ...``). Empty for a set command that answers only OK; ``None`` for
    a basic command (``ATI``, ``ATE0``) without ``extra``: its lines have no fixed shape."""
    names = frozenset(name.upper() for name in extra)
    m = _CMD_PREFIX.match(command.strip())
    if m is None or m.group(1) is None or m.group(1)[0] not in _SIGILS:
        return names or None
    prefix = command_prefix(command)
    return names | {prefix} if prefix is not None else names


def _final(text: str) -> Final | None:
    if text == "OK":
        return Final(text, ok=True)
    upper = text.upper()
    if upper in _FINAL_ERROR_WORDS or upper.startswith(_FINAL_ERROR_PREFIXES):
        return Final(text, ok=False)
    return None


def _is_urc(text: str) -> bool:
    upper = text.upper()
    if upper in URC_LINES:
        return True
    name, _ = split_result(text)
    return name != text and name.upper() in URC_NAMES


class AtClassifier:
    """Sort lines into :data:`Event` objects, knowing which command is in flight. Pure.

    Rules, in order: a garbled line is :class:`Garbage`; the line after a ``+CMT:``/``+CDS:``/
    ``+CBM:`` header is its PDU if it is hex; the prompt is :class:`Prompt`; the command's own
    text before any answer is :class:`Echo`; final result codes end the command (or are
    :class:`Stray` with none in flight); a line with one of the in-flight command's answer
    prefixes (:func:`answer_prefixes`) is :class:`Info` (so ``+CREG: 0,1`` answers
    ``AT+CREG?``); a known URC is :class:`Urc`; so is a ``+NAME``/``^NAME`` line of any other
    name while an extended command is in flight (``+CSQN: 20,99`` before the ``+CMGR:`` answer
    cannot be part of it); any other line is :class:`Info` of the command in flight, or an
    unknown :class:`Urc` if none is.
    """

    def __init__(self) -> None:
        self._command: str | None = None
        self._answers: frozenset[str] | None = None
        self._answered = False
        self._pdu_header: Urc | None = None

    @property
    def in_flight(self) -> str | None:
        return self._command

    def begin(self, command: str, answers: Iterable[str] = ()) -> None:
        """``command`` is in flight; ``answers``: more prefixes its answer lines may carry."""
        self._command = command.strip()
        self._answers = answer_prefixes(command, answers)
        self._answered = False

    def end(self) -> None:
        self._command = None
        self._answers = None
        self._answered = False

    def feed(self, line: Line) -> list[Event]:
        events: list[Event] = []
        header = self._pdu_header
        if header is not None:
            self._pdu_header = None
            if not line.garbled and not line.prompt and HEX_LINE.fullmatch(line.text):
                events.append(Urc(header.name, header.args, line.text))
                return events
            events.append(header)
        events.extend(self._classify(line))
        return events

    def _classify(self, line: Line) -> list[Event]:
        if line.garbled:
            return [Garbage(line)]
        if line.prompt:
            return [Prompt()]
        text = line.text
        command = self._command
        if command is not None and not self._answered and text.upper() == command.upper():
            return [Echo(text)]
        final = _final(text)
        if final is not None:
            if command is None:
                return [Stray(text)]
            self._answered = True
            return [final]
        name, args = split_result(text)
        if command is not None and self._answers is not None and name.upper() in self._answers:
            self._answered = True
            return [Info(text)]
        if _is_urc(text):
            urc = Urc(name, args) if name != text else Urc(text)
            if urc.name.upper() in URC_WITH_PDU:
                self._pdu_header = urc
                return []
            return [urc]
        if command is not None and not (self._answers is not None and text[:1] in _SIGILS):
            self._answered = True
            return [Info(text)]
        return [Urc(name, args) if name != text else Urc(text)]
