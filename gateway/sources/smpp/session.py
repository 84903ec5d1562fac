"""A bound SMPP session, either side: reads PDUs, answers each short message once it is
committed (up to `window` in flight), enquire_link both ways, unbind, and garbage answered with
generic_nack or a close, never an exception out of the connection."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import structlog

from gateway.tasks import cancel_and_wait

from .inbound import Answer, Inbound, PeerRules
from .pdu import (
    BINDS,
    MESSAGES,
    RESPONSE,
    Command,
    FrameError,
    Header,
    PduError,
    ShortMessage,
    Status,
    cstring,
    decode_message,
    encode,
    read_pdu,
)

__all__ = ["BindStatus", "Link", "LinkCounters"]

log = structlog.get_logger(__name__)


def _resp_body(resp: int, answer: Answer) -> bytes:
    """A message's answer body: its message id; with an error status none for submit_sm_resp
    (SMPP 3.4, 4.4.2: no body), an empty message_id for deliver_sm_resp and data_sm_resp,
    whose body is mandatory (strict peers fail to read a body-less one)."""
    if answer.status == Status.ROK:
        return cstring(answer.message_id)
    return b"" if resp == Command.SUBMIT_SM_RESP else b"\0"


NACK_STORM = 10  # generic_nacks from the peer within a minute: the session is rebound


class LinkCounters(Protocol):
    """The per-source metric children a link counts into (gateway.metrics.Metrics.smpp_*)."""

    def message(self, outcome: str) -> None: ...

    def error(self, kind: str) -> None: ...


@dataclass
class BindStatus:
    """What /health shows about one bind; owned by the event loop."""

    source: str
    peer: str = ""
    state: str = "connecting"  # connecting | bound | closed | refused
    bound_at: float | None = None
    last_pdu_at: float | None = None
    last_pdu: str = ""  # the command of the last PDU read
    messages: int = 0
    errors: int = 0
    last_error: str = ""
    in_flight: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def error(self, what: str) -> None:
        self.errors += 1
        self.last_error = what

    def details(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "host": self.peer,
            "bound_at": self.bound_at,
            "last_pdu_at": self.last_pdu_at,
            "last_pdu": self.last_pdu or None,
            "messages": self.messages,
            "errors": self.errors,
            "last_error": self.last_error or None,
            "in_flight": self.in_flight,
        }


def _command_name(command_id: int) -> str:
    try:
        return Command(command_id).name.lower()
    except ValueError:
        return f"{command_id:#010x}"


class Link:
    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        rules: PeerRules,
        inbound: Inbound,
        status: BindStatus,
        counters: LinkCounters,
        window: int = 10,
        enquire_every: float = 30.0,
        response_timeout: float = 10.0,
        takes: frozenset[Command] = frozenset({Command.SUBMIT_SM, Command.DELIVER_SM}),
        next_seq: Callable[[], int] | None = None,
        gather: float = 0.001,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._rules = rules
        self._inbound = inbound
        self.status = status
        self._counters = counters
        self._window = asyncio.Semaphore(window)
        self._enquire_every = enquire_every
        self._response_timeout = response_timeout
        self._takes = takes
        self._seq = 1
        self._next_seq = next_seq or self._own_seq
        self._clock = clock
        self._tasks: set[asyncio.Task[None]] = set()
        self._last_heard = time.monotonic()
        self._nacks: list[float] = []
        self._closing = False
        self._silent = False  # closed by us: no answer to our enquire_link
        self._out: list[bytes] = []  # PDUs to write at the end of this loop turn
        self._held: list[tuple[int, ShortMessage]] = []  # (response command, message) to commit
        self._storing = False  # a batch of this bind is being committed
        self._target = 1  # most in flight while the last batch committed: the peer's window
        self._peak = 0  # most in flight while the current batch commits
        self._gather_for = gather
        self._gather_timer: asyncio.TimerHandle | None = None

    def _own_seq(self) -> int:
        self._seq = self._seq % 0x7FFFFFFF + 1
        return self._seq

    def _send(self, data: bytes) -> None:
        """Queue a PDU; everything queued in one loop turn goes out in one write, in order.

        The answers of one commit (a window's worth) then reach the peer in one segment, so
        the PDUs it sends back arrive together and share the next commit (one fsync) instead
        of trickling into two or three.
        """
        if not self._out:
            asyncio.get_running_loop().call_soon(self._flush)
        self._out.append(data)

    def _flush(self) -> None:
        if self._out and not self._writer.is_closing():
            self._writer.write(b"".join(self._out))
        self._out.clear()

    async def run(self) -> str:
        """Serve until the peer unbinds or goes, or `close()`; the reason it ended."""
        pinger = asyncio.create_task(self._ping())
        try:
            return await self._serve()
        finally:
            await cancel_and_wait(pinger)
            await self._settle()
            self._flush()
            self._writer.close()
            with contextlib.suppress(OSError, ConnectionError):
                await self._writer.wait_closed()

    async def _settle(self) -> None:
        """Commit what was read and let commits in flight finish (their answers may still go
        out) before the close."""
        deadline = time.monotonic() + 30
        while (self._tasks or self._held) and time.monotonic() < deadline:
            if self._held and not self._storing:
                self._commit_held()
            await asyncio.wait(list(self._tasks), timeout=deadline - time.monotonic())

    async def _serve(self) -> str:
        while not self._closing:
            try:
                header, pdu = await read_pdu(self._reader)
            except asyncio.IncompleteReadError as e:
                if self._silent:
                    return "no answer to enquire_link"
                return "closed by peer" if not e.partial else "closed mid-PDU"
            except FrameError as e:
                self._bad("frame", str(e))
                self._send(encode(Command.GENERIC_NACK, 0, Status.RINVCMDLEN))
                return "unframeable PDU"
            except (ConnectionError, OSError) as e:
                return f"connection lost: {e}"
            self._last_heard = time.monotonic()
            self.status.last_pdu_at = self._clock()
            self.status.last_pdu = _command_name(header.command_id)
            ended = await self._dispatch(header, pdu)
            if ended:
                return ended
        return "closed"

    def _bad(self, kind: str, what: str) -> None:
        self.status.error(what)
        self._counters.error(kind)
        log.warning("smpp.bad_pdu", source=self._rules.source, kind=kind, error=what)

    async def _dispatch(self, h: Header, pdu: bytes) -> str | None:
        cid = h.command_id
        if cid in MESSAGES:
            resp = cid | RESPONSE
            if cid not in self._takes:
                self._send(encode(resp, h.seq, Status.RINVBNDSTS))
                return None
            try:
                m = decode_message(h, pdu)
            except PduError as e:
                self._bad("undecodable", str(e))
                self._send(encode(Command.GENERIC_NACK, h.seq, e.status))
                return None
            await self._window.acquire()  # a full window stops reading: TCP pushes back
            self.status.in_flight += 1
            self._peak = max(self._peak, self.status.in_flight)
            self._held.append((resp, m))
            self._gather()
            return None
        if cid == Command.ENQUIRE_LINK:
            self._send(encode(Command.ENQUIRE_LINK_RESP, h.seq))
        elif cid == Command.UNBIND:
            await self._settle()
            self._send(encode(Command.UNBIND_RESP, h.seq))
            return "unbound by peer"
        elif cid == Command.UNBIND_RESP:
            return "unbound"
        elif cid == Command.GENERIC_NACK:
            self._bad("nack", f"generic_nack status {h.status:#x} seq {h.seq}")
            now = time.monotonic()
            self._nacks = [t for t in self._nacks if now - t < 60] + [now]
            if len(self._nacks) >= NACK_STORM:
                return "generic_nack storm"
        elif cid in BINDS:
            self._send(encode(cid | RESPONSE, h.seq, Status.RALYBND))
        elif not h.is_response:
            self._bad("unknown_command", f"command {cid:#x} not served")
            self._send(encode(Command.GENERIC_NACK, h.seq, Status.RINVCMDID))
        return None  # other responses (enquire_link_resp ...) only show the peer is there

    # -- group commit per bind ---------------------------------------------------------------
    #
    # Messages read while this bind's previous batch is still being committed wait for it (the
    # store commits one transaction at a time anyway) and then go as one batch: one commit,
    # one log line, their answers in one write. A peer that refills its window as answers come
    # back then keeps sending whole windows; committing the first arrival alone splits every
    # window in two commits (two fsyncs) for good. Once nothing of the bind is in the store, a
    # batch goes as soon as it holds as many as were in flight while the last batch committed
    # (the peer's window as seen: its answers bring that many back) or our window is full, and
    # at the latest `gather` seconds after its first message came in.

    def _gather(self) -> None:
        if self._storing:
            return
        if len(self._held) >= self._target or self._window.locked():
            self._commit_held()
        elif self._gather_timer is None:
            self._gather_timer = asyncio.get_running_loop().call_later(
                self._gather_for, self._commit_held
            )

    def _commit_held(self) -> None:
        if self._gather_timer is not None:
            self._gather_timer.cancel()
            self._gather_timer = None
        if self._storing or not self._held:
            return
        batch, self._held = self._held, []
        self._storing = True
        self._peak = len(batch)
        task = asyncio.create_task(self._answer(batch))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _answer(self, batch: list[tuple[int, ShortMessage]]) -> None:
        try:
            answers = await self._inbound.take_many(self._rules, [m for _, m in batch])
        except Exception as e:  # a bug must not leave the peer's PDUs unanswered
            log.exception(
                "smpp.take_failed", source=self._rules.source, seqs=[m.seq for _, m in batch]
            )
            answers = [Answer(Status.RX_T_APPN)] * len(batch)
            self.status.error(f"{type(e).__name__}")
        finally:
            for _ in batch:
                self._window.release()
            self.status.in_flight -= len(batch)
            self._storing = False
            self._target = self._peak
        for (resp, m), answer in zip(batch, answers, strict=True):
            body = _resp_body(resp, answer)
            self._send(encode(resp, m.seq, answer.status, body))
            outcome = {
                Status.ROK: "stored" if answer.stored else "duplicate",
                Status.RX_T_APPN: "temporary_error",
            }.get(answer.status, "refused")
            self._counters.message(outcome)
            if answer.status == Status.ROK:
                self.status.messages += 1
            elif answer.status == Status.RX_T_APPN:
                self.status.error("store unavailable")
        if self._held:
            self._gather()
        with contextlib.suppress(ConnectionError, OSError):
            await self._writer.drain()

    async def _ping(self) -> None:
        """enquire_link after `enquire_every` of silence; no answer in time ends the session."""
        while True:
            if self._window.locked():
                # We stopped reading (a full window waits for the store): whatever the peer
                # sent, its enquire_link_resp too, waits unread in TCP; the silence is ours.
                self._last_heard = time.monotonic()
            quiet = time.monotonic() - self._last_heard
            if quiet < self._enquire_every:
                await asyncio.sleep(self._enquire_every - quiet)
                continue
            self._send(encode(Command.ENQUIRE_LINK, self._next_seq()))
            await asyncio.sleep(self._response_timeout)
            if self._window.locked():
                continue
            if time.monotonic() - self._last_heard >= self._enquire_every + self._response_timeout:
                log.warning("smpp.link_silent", source=self._rules.source)
                self.status.error("no answer to enquire_link")
                self._counters.error("silent")
                self._silent = True
                self._flush()
                self._writer.close()
                return

    async def close(self, timeout: float = 5.0) -> None:
        """Unbind politely; the peer's unbind_resp (or `timeout`) ends `run`."""
        self._closing = True
        self._send(encode(Command.UNBIND, self._next_seq()))
        self._flush()
        with contextlib.suppress(ConnectionError, OSError):
            await self._writer.drain()
        loop = asyncio.get_running_loop()
        loop.call_later(timeout, self._writer.close)
