"""The AT channel: one modem port, exactly one command in flight, URCs handed apart.

:class:`AtChannel` owns one :class:`~gateway.sources.modem.serial_link.SerialLink` and a reader
task that feeds the framer (:mod:`~gateway.sources.modem.framing`) and the classifier
(:mod:`~gateway.sources.modem.lines`); ``command()`` writes a command and waits for its final
result code under a timeout. The parsers of the answers themselves live in
:mod:`gateway.sources.modem.answers`.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import assert_never

import structlog

from gateway.errors import GatewayError
from gateway.sources.modem.answers import split_result
from gateway.sources.modem.framing import MAX_LINE, LineFramer
from gateway.sources.modem.lines import (
    AtClassifier,
    Echo,
    Event,
    Final,
    Garbage,
    Info,
    Prompt,
    Stray,
    Urc,
)
from gateway.sources.modem.serial_link import LinkClosed, LinkError, SerialLink
from gateway.tasks import cancel_and_wait

__all__ = [
    "AtChannel",
    "AtCommandError",
    "AtError",
    "AtResponse",
    "AtTimeout",
    "LinkClosed",  # what command() raises when the port is gone, and
    "Urc",  # what on_urc is given: part of the channel's interface, from the layers below
    "redact_command",
]

log = structlog.get_logger(__name__)

CTRL_Z = b"\x1a"
ESC = b"\x1b"


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
        """Stop the reader, fail the command in flight with :class:`LinkClosed`, close the link.
        The link is closed even when the caller is cancelled meanwhile; the cancel propagates."""
        self._mark_closed(LinkClosed(f"{self.port}: channel closed"))
        reader, self._reader = self._reader, None
        try:
            if reader is not None and reader is not asyncio.current_task():
                await cancel_and_wait(reader)  # a cancel of ours landing here propagates
        finally:
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
        answers: Iterable[str] = (),
    ) -> AtResponse:
        """Send ``cmd`` (``"AT+CSQ"``, no terminator) and wait for its final result code.

        With ``expect_pdu_prompt`` (for ``AT+CMGS=<len>``) those bytes are written, followed by
        Ctrl-Z, when the modem sends its ``> `` prompt; if the prompt never comes the input mode
        is cancelled with ESC on timeout. ``answers`` names more prefixes than the command's own
        that its answer lines may carry (``+NAME:`` lines of any other name are URCs). Raises
        :class:`AtError`, :class:`AtTimeout`, :class:`LinkClosed`.
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
            self._classifier.begin(cmd, answers)
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
        match event:
            case Urc():
                try:
                    self._on_urc(event)
                except Exception:
                    log.exception("modem.urc_callback_failed", port=self.port, urc=event.name)
            case Info(text=text):
                if pending is not None:
                    pending.lines.append(text)
            case Final(text=text, ok=ok):
                if pending is not None and not pending.future.done():
                    # The command is over now, not when its caller wakes up: a line in the
                    # same read after the final code (+CUSD after OK) is a URC, not its answer.
                    self._classifier.end()
                    lines = tuple(pending.lines)
                    if ok:
                        pending.future.set_result(AtResponse(pending.command, lines, text))
                    else:
                        pending.future.set_exception(
                            _error_from_final(pending.command, text, lines)
                        )
            case Prompt():
                if pending is not None and pending.payload is not None and not pending.payload_sent:
                    pending.payload_sent = True
                    try:
                        self._link.write(pending.payload)
                    except LinkClosed:
                        command = redact_command(pending.command)
                        log.warning("modem.write_failed", port=self.port, command=command)
                else:
                    log.debug("modem.unexpected_prompt", port=self.port)
            case Garbage(line=line):
                log.warning(
                    "modem.garbage_skipped",
                    port=self.port,
                    first_bytes=repr(line.raw[:32]),
                    length=len(line.raw),
                    truncated=line.truncated,
                )
            case Stray(text=text):
                log.info("modem.stray_result", port=self.port, result=text)
            case Echo():
                pass  # the modem repeating the command (echo still on): nothing in it
            case _:
                assert_never(event)

    def _mark_closed(self, reason: LinkClosed) -> None:
        if self._close_reason is None:
            self._close_reason = reason
            self._closed.set()
        pending = self._pending
        if pending is not None and not pending.future.done():
            pending.future.set_exception(LinkClosed(str(self._close_reason)))
