"""The AT layer: bytes -> lines -> classified events -> one command in flight at a time.

Three parts, each usable alone:

* :class:`LineFramer`, pure and synchronous: splits the byte stream on CR/LF, recognises the
  ``> `` prompt of ``AT+CMGS``, flags undecodable lines and caps line length.
* :class:`AtClassifier`, pure and synchronous: sorts lines into the in-flight command's
  information lines, its final result code, unsolicited result codes (URCs, with the PDU line
  that belongs to ``+CMT:``/``+CDS:``), the echo of the command, and garbage.
* :class:`AtChannel`: owns one :class:`~gateway.sources.modem.serial_link.SerialLink`, a reader
  task that feeds the two above, and ``command()`` with exactly one command in flight.

The parsers of the answers themselves (``parse_*``) live in
:mod:`gateway.sources.modem.answers`.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Callable
from dataclasses import dataclass, field

import structlog

from gateway.errors import GatewayError
from gateway.sources.modem.answers import (
    HEX_LINE,
    split_result,
)
from gateway.sources.modem.serial_link import LinkClosed, LinkError, SerialLink

__all__ = [
    "MAX_LINE",
    "AtChannel",
    "AtClassifier",
    "AtCommandError",
    "AtError",
    "AtResponse",
    "AtTimeout",
    "Echo",
    "Event",
    "Final",
    "Garbage",
    "Info",
    "Line",
    "LineFramer",
    "LinkClosed",
    "Prompt",
    "Stray",
    "Urc",
    "command_prefix",
    "redact_command",
]

log = structlog.get_logger(__name__)

MAX_LINE = 4096
CTRL_Z = b"\x1a"
ESC = b"\x1b"
_PROMPT = b"> "
_TERMINATORS = b"\r\n"


# --------------------------------------------------------------------------------------------
# Errors


class AtCommandError(GatewayError):
    """Base of the errors :meth:`AtChannel.command` raises besides :class:`LinkClosed`."""


class AtError(AtCommandError):
    """The modem answered with an error final result code (``ERROR``, ``+CME ERROR: 10``, ...).

    ``kind`` is the result code without its argument (``"ERROR"``, ``"+CME ERROR"``,
    ``"+CMS ERROR"``, ``"NO CARRIER"``, ``"COMMAND NOT SUPPORT"``...); ``code`` the numeric
    argument of ``+CME``/``+CMS`` errors when it is a number, ``text`` the argument as sent.
    """

    def __init__(
        self,
        command: str,
        kind: str,
        *,
        code: int | None = None,
        text: str = "",
        lines: tuple[str, ...] = (),
    ) -> None:
        self.command = command
        self.kind = kind
        self.code = code
        self.text = text
        self.lines = lines
        detail = f"{kind}: {text}" if text else kind
        super().__init__(f"{command}: {detail}")


class AtTimeout(AtCommandError):
    """No final result code arrived within the timeout."""

    def __init__(self, command: str, timeout: float) -> None:
        self.command = command
        self.timeout = timeout
        super().__init__(f"{command}: no answer within {timeout:g}s")


# --------------------------------------------------------------------------------------------
# Framing


@dataclass(frozen=True, slots=True)
class Line:
    """One line from the modem, without its terminator.

    ``text`` is the decoded, stripped line (invalid UTF-8 replaced). ``prompt`` marks the
    ``> `` prompt (``text == ">"``). ``invalid`` marks bytes that are not UTF-8 or hold control
    characters; ``truncated`` a line cut at :data:`MAX_LINE` bytes. Either makes it ``garbled``.
    """

    text: str
    raw: bytes
    prompt: bool = False
    invalid: bool = False
    truncated: bool = False

    @property
    def garbled(self) -> bool:
        return self.invalid or self.truncated


_PROMPT_LINE = Line(text=">", raw=_PROMPT, prompt=True)
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def _make_line(raw: bytes, *, truncated: bool = False) -> Line | None:
    invalid = False
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("utf-8", errors="replace")
        invalid = True
    if _CONTROL.search(text):
        invalid = True
    text = text.strip()
    if not text and not invalid and not truncated:
        return None
    return Line(text=text, raw=raw, invalid=invalid, truncated=truncated)


class LineFramer:
    """Split a modem byte stream into :class:`Line` objects. Any chunking, same lines.

    * lines end at CR or LF (``\\r\\n``, bare ``\\r`` or bare ``\\n``); empty lines are dropped;
    * ``> `` at the start of a line is the SMS input prompt: it has no terminator and is
      reported at once as a prompt line;
    * a line longer than ``max_line`` bytes is reported once, truncated and flagged, and the rest
      of it up to the next terminator is discarded, so memory stays bounded on any input.
    """

    def __init__(self, max_line: int = MAX_LINE) -> None:
        if max_line < 2:
            raise ValueError("max_line must be at least 2")
        self._max = max_line
        self._buf = bytearray()
        self._discarding = False

    @property
    def pending(self) -> int:
        """Bytes held for an unfinished line."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[Line]:
        out: list[Line] = []
        buf = self._buf
        i, n = 0, len(data)
        while i < n:
            if self._discarding:
                j = _find_terminator(data, i)
                if j < 0:
                    return out
                self._discarding = False
                i = j + 1
                continue
            if not buf:
                if data[i] in _TERMINATORS:
                    i += 1
                    continue
                if data.startswith(_PROMPT, i):
                    out.append(_PROMPT_LINE)
                    i += len(_PROMPT)
                    continue
            elif buf == b">" and data[i] == 0x20:
                buf.clear()
                out.append(_PROMPT_LINE)
                i += 1
                continue
            j = _find_terminator(data, i)
            end = n if j < 0 else j
            room = self._max - len(buf)
            if end - i > room:
                buf += data[i : i + room]
                line = _make_line(bytes(buf), truncated=True)
                buf.clear()
                if line is not None:
                    out.append(line)
                self._discarding = True
                i += room
                continue
            buf += data[i:end]
            if j < 0:
                return out
            line = _make_line(bytes(buf))
            buf.clear()
            if line is not None:
                out.append(line)
            i = j + 1
        return out


def _find_terminator(data: bytes, start: int) -> int:
    cr = data.find(b"\r", start)
    lf = data.find(b"\n", start)
    if cr < 0:
        return lf
    if lf < 0:
        return cr
    return min(cr, lf)


# --------------------------------------------------------------------------------------------
# Classification


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

# URCs that are a "+NAME: args" or "^NAME: args" line.
_URC_PREFIXED = frozenset(
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
# URCs that are a whole line (compared upper-case).
_URC_WORDS = frozenset(
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
# URC headers whose next line is a PDU that belongs to them.
_URC_WITH_PDU = frozenset({"+CMT", "+CDS", "+CBM"})
# Set commands (``AT+X=...``) that answer only with a result code: a ``+X:`` line while they
# are in flight is an unsolicited code (``AT+CPIN="1234"`` is followed by ``+CPIN: READY``).
_SET_WITHOUT_INFO = frozenset(
    {"+CPIN", "+CREG", "+CGREG", "+CEREG", "+CFUN", "+CNMI", "+CMEE", "+CMGF", "+CSCS"}
)

_CMD_PREFIX = re.compile(r"AT([+^$%#*][A-Z0-9_]+|&?[A-Z])?", re.IGNORECASE)


def command_prefix(command: str) -> str | None:
    """The prefix of the information lines ``command`` answers with: ``AT+CSQ`` -> ``"+CSQ"``.

    ``None`` for basic commands (``ATE0``, ``ATI``) and for set commands that answer only OK.
    """
    m = _CMD_PREFIX.match(command.strip())
    if m is None or m.group(1) is None or m.group(1)[0] not in "+^$%#*":
        return None
    prefix = m.group(1).upper()
    rest = command.strip()[m.end() :]
    if rest.startswith("=") and not rest.startswith("=?") and prefix in _SET_WITHOUT_INFO:
        return None
    return prefix


def _final(text: str) -> Final | None:
    if text == "OK":
        return Final(text, ok=True)
    upper = text.upper()
    if upper in _FINAL_ERROR_WORDS or upper.startswith(_FINAL_ERROR_PREFIXES):
        return Final(text, ok=False)
    return None


def _is_urc(text: str) -> bool:
    upper = text.upper()
    if upper in _URC_WORDS:
        return True
    name, _ = split_result(text)
    return name != text and name.upper() in _URC_PREFIXED


class AtClassifier:
    """Sort lines into :data:`Event` objects, knowing which command is in flight. Pure.

    Rules, in order: a garbled line is :class:`Garbage`; the line after a ``+CMT:``/``+CDS:``/
    ``+CBM:`` header is its PDU if it is hex; the prompt is :class:`Prompt`; the command's own
    text before any answer is :class:`Echo`; final result codes end the command (or are
    :class:`Stray` with none in flight); a line with the in-flight command's prefix is
    :class:`Info` (so ``+CREG: 0,1`` answers ``AT+CREG?``); a known URC is :class:`Urc`; any
    other line is :class:`Info` of the command in flight, or an unknown :class:`Urc` if none is.
    """

    def __init__(self) -> None:
        self._command: str | None = None
        self._prefix: str | None = None
        self._answered = False
        self._pdu_header: Urc | None = None

    @property
    def in_flight(self) -> str | None:
        return self._command

    def begin(self, command: str) -> None:
        self._command = command.strip()
        self._prefix = command_prefix(command)
        self._answered = False

    def end(self) -> None:
        self._command = None
        self._prefix = None
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
        if command is not None and self._prefix is not None and name.upper() == self._prefix:
            self._answered = True
            return [Info(text)]
        if _is_urc(text):
            urc = Urc(name, args) if name != text else Urc(text)
            if urc.name.upper() in _URC_WITH_PDU:
                self._pdu_header = urc
                return []
            return [urc]
        if command is not None:
            self._answered = True
            return [Info(text)]
        return [Urc(name, args) if name != text else Urc(text)]


# --------------------------------------------------------------------------------------------
# The channel


@dataclass(frozen=True, slots=True)
class AtResponse:
    """The answer to one command: its information lines in order (PDU lines included)."""

    command: str
    lines: tuple[str, ...] = ()
    final: str = "OK"

    def with_prefix(self, prefix: str) -> tuple[str, ...]:
        """The values of the lines starting with ``prefix:`` (``"+CSQ"`` -> ``("20,99",)``)."""
        out: list[str] = []
        for text in self.lines:
            name, args = split_result(text)
            if name.upper() == prefix.upper():
                out.append(args)
        return tuple(out)

    def first(self, prefix: str | None = None) -> str | None:
        """The first line (or the first ``prefix:`` line's value); ``None`` if there is none."""
        if prefix is None:
            return self.lines[0] if self.lines else None
        values = self.with_prefix(prefix)
        return values[0] if values else None

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


@dataclass(slots=True)
class _Pending:
    command: str
    future: asyncio.Future[AtResponse]
    payload: bytes | None
    payload_sent: bool = False
    lines: list[str] = field(default_factory=list)


_SECRET_COMMANDS = ("AT+CPIN=", "AT+CPWD=", "AT+CLCK=")


def redact_command(cmd: str) -> str:
    """``AT+CPIN="1234"`` -> ``AT+CPIN=<redacted>``: PINs never reach logs or error messages."""
    if cmd.upper().startswith(_SECRET_COMMANDS):
        return cmd[: cmd.index("=") + 1] + "<redacted>"
    return cmd


_CME = re.compile(r"\+(CME|CMS) ERROR:\s*(.*)", re.IGNORECASE)


def _error_from_final(command: str, text: str, lines: tuple[str, ...]) -> AtError:
    m = _CME.fullmatch(text)
    if m is None:
        return AtError(command, text.upper(), lines=lines)
    arg = m.group(2).strip().strip('"')
    code = int(arg) if arg.isascii() and arg.isdigit() and len(arg) < 6 else None
    return AtError(command, f"+{m.group(1).upper()} ERROR", code=code, text=arg, lines=lines)


class AtChannel:
    """One modem port: a reader task, URCs to ``on_urc``, one AT command in flight at a time.

    ``start()`` starts the reader task; ``close()`` stops it and closes the link. When the link
    dies (EOF, I/O error) the command in flight and every later one raise :class:`LinkClosed`,
    and :meth:`wait_closed` returns.
    """

    def __init__(
        self,
        link: SerialLink,
        *,
        on_urc: Callable[[Urc], None],
        max_line: int = MAX_LINE,
    ) -> None:
        self._link = link
        self._on_urc = on_urc
        self._framer = LineFramer(max_line)
        self._classifier = AtClassifier()
        self._lock = asyncio.Lock()
        self._pending: _Pending | None = None
        self._reader: asyncio.Task[None] | None = None
        self._started = False
        self._closed = asyncio.Event()
        self._close_reason: LinkClosed | None = None

    @property
    def port(self) -> str:
        return self._link.name

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    @property
    def close_reason(self) -> LinkClosed | None:
        """Why the channel closed (``None`` while open)."""
        return self._close_reason

    def start(self) -> None:
        """Start the reader task. Call once, from a running event loop."""
        if self._started:
            raise RuntimeError("AtChannel already started")
        if self.closed:
            raise LinkClosed(f"{self.port}: channel closed")
        self._started = True
        self._reader = asyncio.get_running_loop().create_task(
            self._read_loop(), name=f"at-reader:{self.port}"
        )

    async def close(self) -> None:
        """Stop the reader, fail the command in flight with :class:`LinkClosed`, close the link."""
        self._mark_closed(LinkClosed(f"{self.port}: channel closed"))
        reader, self._reader = self._reader, None
        if reader is not None and reader is not asyncio.current_task():
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
        await self._link.close()

    async def wait_closed(self) -> LinkClosed:
        """Wait until the link is gone; returns the reason."""
        await self._closed.wait()
        assert self._close_reason is not None
        return self._close_reason

    async def __aenter__(self) -> AtChannel:
        self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def command(
        self,
        cmd: str,
        *,
        timeout: float = 5.0,
        expect_pdu_prompt: bytes | None = None,
    ) -> AtResponse:
        """Send ``cmd`` (``"AT+CSQ"``, no terminator) and wait for its final result code.

        With ``expect_pdu_prompt`` (for ``AT+CMGS=<len>``) those bytes are written, followed by
        Ctrl-Z, when the modem sends its ``> `` prompt; if the prompt never comes the input mode
        is cancelled with ESC on timeout. Raises :class:`AtError`, :class:`AtTimeout`,
        :class:`LinkClosed`.
        """
        if not cmd[:2].upper() == "AT" or any(c in cmd for c in "\r\n\x1a\x1b"):
            raise ValueError(f"not a single AT command: {cmd!r}")
        if not self._started:
            raise RuntimeError("AtChannel.start() was not called")
        payload = None
        if expect_pdu_prompt is not None:
            payload = expect_pdu_prompt.rstrip(CTRL_Z) + CTRL_Z
        async with self._lock:
            if self._close_reason is not None:
                raise LinkClosed(str(self._close_reason))
            loop = asyncio.get_running_loop()
            pending = _Pending(cmd, loop.create_future(), payload)
            self._pending = pending
            self._classifier.begin(cmd)
            try:
                self._link.write(cmd.encode("ascii", errors="replace") + b"\r")
                # asyncio.timeout, not wait_for: on Python 3.11 wait_for swallows a cancellation
                # that arrives as the answer does, and the caller's task then never stops.
                async with asyncio.timeout(timeout):
                    return await pending.future
            except TimeoutError:
                if payload is not None and not pending.payload_sent:
                    with contextlib.suppress(LinkError):
                        self._link.write(ESC)
                shown = redact_command(cmd)  # a PIN must not reach logs or /health
                log.warning("modem.at_timeout", port=self.port, command=shown, timeout=timeout)
                raise AtTimeout(shown, timeout) from None
            except LinkClosed:
                self._mark_closed(LinkClosed(f"{self.port}: write failed"))
                raise
            finally:
                self._pending = None
                self._classifier.end()
                if not pending.future.done():
                    pending.future.cancel()

    # -- reader side -------------------------------------------------------------------------

    async def _read_loop(self) -> None:
        try:
            reason = await self._pump()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug here must not leave a half-alive channel behind
            log.exception("modem.reader_failed", port=self.port)
            reason = LinkClosed(f"{self.port}: reader failed: {exc!r}")
        if not self.closed:
            log.warning("modem.link_closed", port=self.port, reason=str(reason))
        self._mark_closed(reason)

    async def _pump(self) -> LinkClosed:
        """Feed the framer and classifier until the link ends; returns why it ended."""
        while True:
            try:
                data = await self._link.read()
            except LinkClosed as exc:
                return exc
            except OSError as exc:
                return LinkClosed(f"{self.port}: read failed: {exc}")
            if not data:
                return LinkClosed(f"{self.port}: end of file")
            for line in self._framer.feed(data):
                for event in self._classifier.feed(line):
                    self._dispatch(event)

    def _dispatch(self, event: Event) -> None:
        pending = self._pending
        if isinstance(event, Urc):
            try:
                self._on_urc(event)
            except Exception:
                log.exception("modem.urc_callback_failed", port=self.port, urc=event.name)
        elif isinstance(event, Info):
            if pending is not None:
                pending.lines.append(event.text)
        elif isinstance(event, Final):
            if pending is not None and not pending.future.done():
                lines = tuple(pending.lines)
                if event.ok:
                    pending.future.set_result(AtResponse(pending.command, lines, event.text))
                else:
                    pending.future.set_exception(
                        _error_from_final(pending.command, event.text, lines)
                    )
        elif isinstance(event, Prompt):
            if pending is not None and pending.payload is not None and not pending.payload_sent:
                pending.payload_sent = True
                try:
                    self._link.write(pending.payload)
                except LinkClosed:
                    command = redact_command(pending.command)
                    log.warning("modem.write_failed", port=self.port, command=command)
            else:
                log.debug("modem.unexpected_prompt", port=self.port)
        elif isinstance(event, Garbage):
            log.warning(
                "modem.garbage_skipped",
                port=self.port,
                first_bytes=repr(event.line.raw[:32]),
                length=len(event.line.raw),
                truncated=event.line.truncated,
            )
        elif isinstance(event, Stray):
            log.info("modem.stray_result", port=self.port, result=event.text)
        # Echo: dropped.

    def _mark_closed(self, reason: LinkClosed) -> None:
        if self._close_reason is None:
            self._close_reason = reason
            self._closed.set()
        pending = self._pending
        if pending is not None and not pending.future.done():
            pending.future.set_exception(LinkClosed(str(self._close_reason)))
