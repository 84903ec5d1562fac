"""A client of a Yeastar TG gateway's TCP API (port 5038): logs in and takes its ReceivedSMS events.

Reference: Yeastar TG series "API Developer Guide" (an Asterisk-manager-style protocol): the
client sends ``Action: Login`` / ``Username`` / ``Secret``; the TG answers ``Response: Success``
(or ``Error``) and from then on writes one block per received SMS part::

    Event: ReceivedSMS
    Privilege: all,smscommand
    ID: 244
    GsmSpan: 2
    Sender: +79001234567
    Recvtime: 2025-03-06 06:12:09
    Index: 1
    Total: 2
    Smsc: +79000000000
    Content: %D0%9F%D1%80%D0%B8%D0%B2%D0%B5%D1%82+
    --END SMS EVENT--

``Content`` is URL-encoded UTF-8 (``+`` is a space; some firmware starts it with a BOM); parts of
one long SMS share ``ID`` and are joined by ``Index`` / ``Total``. Firmware numbers the parts from
1 (``1..Total``) or from 0 (``0..Total-1``): each part goes to the outbox as it comes, with its
``Index`` as given, and the outbox completes a group in either numbering (gateway/outbox/parts.py).
The TG does not repeat an event, so one that cannot be committed is retried here until it is
(reading pauses meanwhile); nothing is acknowledged or kept in memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import time
from collections.abc import Callable, Mapping, Sequence
from urllib.parse import unquote_plus

import structlog

from gateway.config import SimConfig, YeastarConfig
from gateway.errors import DecodeError, GatewayError, StoreError
from gateway.fields import MAX_TEXT, FieldError, device_time
from gateway.health import Check, Level
from gateway.intake import Intake
from gateway.outbox.models import Hold, Incoming, Part
from gateway.sources.dedup import digest
from gateway.sources.sim_match import phone_for
from gateway.sources.status import SourceStatus

__all__ = ["KIND", "YeastarClient", "item_from_event", "part_position"]

log = structlog.get_logger(__name__)
KIND = "yeastar"
_ENDS = ("--END SMS EVENT--", "--END COMMAND--")
MAX_PARTS = 255
# The event's own names for the fields the rules check, for the log.
_FIELD_NAMES = {"phone_from": "Sender", "text": "Content"}


class LoginRejected(GatewayError):
    """The TG refused the API user or password."""


def part_position(fields: Mapping[str, str]) -> tuple[int, int]:
    """(Index, Total) of an event, each part numbered from 0 or from 1; ``DecodeError`` when
    they fit neither numbering."""
    index, total = _number(fields, "Index"), _number(fields, "Total")
    if not (1 <= total <= MAX_PARTS and 0 <= index <= total):
        raise DecodeError(
            f"Index {index} of Total {total}; expected 0 <= Index <= Total <= {MAX_PARTS}"
        )
    return index, total


def group_of(fields: Mapping[str, str]) -> str:
    """The key the parts of one long SMS share."""
    span, sender = fields.get("GsmSpan", "").strip(), fields.get("Sender", "").strip()
    total = fields.get("Total", "1").strip() or "1"
    return f"{span}|{sender}|{fields.get('ID', '').strip() or '-'}|{total}"


def item_from_event(
    fields: Mapping[str, str],
    *,
    source: str,
    sims: Sequence[SimConfig],
    now: float,
) -> Incoming | Part:
    """The message (or part of one, numbered by its ``Index`` from 0 or from 1 as the TG
    numbered it) a ReceivedSMS event carries; ``DecodeError`` if malformed."""
    span = fields.get("GsmSpan", "").strip()
    sender = fields.get("Sender", "").strip()
    sms_id = fields.get("ID", "").strip()
    recvtime = fields.get("Recvtime", "").strip()
    content = fields.get("Content")
    if not span or content is None:
        raise DecodeError("ReceivedSMS without GsmSpan or Content")
    index, total = part_position(fields)
    text = decode_content(content)
    phone = phone_for(sims, source=source, port=span) or ""
    ref = f"{span}|{sender}|{sms_id}|{recvtime}|{index}/{total}|{digest(content)}"
    received_at = device_time(recvtime, now, source=source)
    if total > 1:
        return Part(
            source=source,
            group_key=group_of(fields),
            seq=index,
            total=total,
            text=text,
            phone=phone,
            phone_from=sender,
            received_at=received_at,
            source_ref=ref,
            raw=content[:4096],
        )
    return Incoming(
        source=source,
        phone=phone,
        phone_from=sender,
        text=text,
        received_at=received_at,
        source_ref=ref,
        hold=None if phone else Hold.NO_PHONE,
        raw=content[:4096],
    )


def decode_content(content: str) -> str:
    """URL-encoded UTF-8 to text, a leading byte-order mark dropped."""
    try:
        text = unquote_plus(content.strip(), encoding="utf-8", errors="strict")
    except UnicodeDecodeError:
        raise DecodeError("Content is not URL-encoded UTF-8") from None
    text = text.removeprefix("\ufeff")
    if len(text) > MAX_TEXT:
        raise DecodeError(f"Content longer than {MAX_TEXT} characters")
    return text


def _number(fields: Mapping[str, str], key: str) -> int:
    value = fields.get(key, "1").strip() or "1"
    if not (value.isascii() and value.isdigit() and len(value) <= 3):
        raise DecodeError(f"{key} is {value[:10]!r}; expected a small number")
    return int(value)


class YeastarClient:
    """One ``[[yeastar]]`` TG: stays logged in, reconnecting with capped, jittered backoff."""

    def __init__(
        self,
        cfg: YeastarConfig,
        intake: Intake,
        sims: Sequence[SimConfig] = (),
        *,
        status: SourceStatus | None = None,
        clock: Callable[[], float] = time.time,
        ping_interval: float = 20.0,
        idle_timeout: float = 60.0,
        connect_timeout: float = 10.0,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.cfg = cfg
        self.source = f"{KIND}:{cfg.name}"
        self._intake = intake
        self._sims = sims
        self._clock = clock
        self.status = status or SourceStatus(self.source, clock=clock)
        self._ping_interval = ping_interval
        self._idle_timeout = idle_timeout
        self._connect_timeout = connect_timeout
        self._rand = rand
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.connected = False
        self.connects = 0
        self.last_connected_at: float | None = None

    def reconnect_delay(self, failures: int) -> float:
        """Seconds before the next attempt after ``failures`` failed ones in a row: 0.5 s,
        doubling, capped at ``reconnect_max``, plus up to 1 s (a quarter of a smaller cap) of
        jitter so TGs cut off together do not reconnect together; never above the cap."""
        cap = self.cfg.reconnect_max
        exponent = min(max(1, failures) - 1, 64)  # 2**64 * 0.5 s is past any cap
        jitter = min(1.0, cap / 4) * self._rand()
        return min(min(cap, 0.5 * 2.0**exponent) + jitter, cap)

    async def start(self) -> None:
        self._stopping.clear()
        self._task = asyncio.get_running_loop().create_task(self._run(), name=self.source)

    async def stop(self) -> None:
        """Cancel the session. A cancel of ``stop`` itself propagates."""
        self._stopping.set()
        if self._task is not None:
            task, self._task = self._task, None
            await _cancel_and_wait(task)
        self._set_connected(False)

    def check(self) -> Check:
        now = self._clock()
        return self.status.check(
            level=Level.OK if self.connected else Level.DEGRADED,
            connected=self.connected,
            host=f"{self.cfg.host}:{self.cfg.port}",
            connects=self.connects,
            last_connected_age=round(now - self.last_connected_at, 3)
            if self.last_connected_at is not None
            else None,
        )

    # -- connection ----------------------------------------------------------------------

    async def _run(self) -> None:
        failures = 0
        while not self._stopping.is_set():
            try:
                await self._session()
                failures = 0  # the session logged in and later ended
                error = "connection closed by the TG"
            except LoginRejected as e:
                error = str(e)
                log.error("yeastar.login_failed", source=self.source, user=self.cfg.username)
            except (OSError, TimeoutError, ValueError, DecodeError) as e:
                error = f"{type(e).__name__}: {e}"
            self._set_connected(False)
            if self._stopping.is_set():
                return
            failures += 1
            delay = self.reconnect_delay(failures)
            self.status.last_error = error[:300]
            log.warning("yeastar.disconnected", source=self.source, error=error, retry_in=delay)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._stopping.wait()

    async def _session(self) -> None:
        async with asyncio.timeout(self._connect_timeout):
            reader, writer = await asyncio.open_connection(self.cfg.host, self.cfg.port)
        pinger: asyncio.Task[None] | None = None
        try:
            writer.write(
                f"Action: Login\r\nUsername: {self.cfg.username}\r\n"
                f"Secret: {self.cfg.password}\r\n\r\n".encode()
            )
            await writer.drain()
            answer = await self._block(reader)
            if answer is None:
                raise ConnectionError("closed before answering the login")
            if answer.get("Response", "").lower() != "success":
                raise LoginRejected(f"login refused: {answer.get('Message', 'no reason given')}")
            self.connects += 1
            self.last_connected_at = self._clock()
            self._set_connected(True)
            log.info("yeastar.connected", source=self.source, host=self.cfg.host)
            pinger = asyncio.get_running_loop().create_task(self._ping(writer))
            while (block := await self._block(reader)) is not None:
                if block.get("Event") == "ReceivedSMS":
                    await self._take(block)
        finally:
            writer.close()
            if pinger is not None:
                await _cancel_and_wait(pinger)
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def _ping(self, writer: asyncio.StreamWriter) -> None:
        """Something to answer now and then, so a dead link shows as silence."""
        for n in itertools.count(1):
            await asyncio.sleep(self._ping_interval)
            writer.write(f"Action: Ping\r\nActionID: ping-{n}\r\n\r\n".encode())
            await writer.drain()

    async def _block(self, reader: asyncio.StreamReader) -> dict[str, str] | None:
        """The next ``Key: Value`` block (ended by a blank line or an ``--END ...--`` line);
        ``None`` at end of stream; ``TimeoutError`` after ``idle_timeout`` of silence."""
        fields: dict[str, str] = {}
        while True:
            async with asyncio.timeout(self._idle_timeout):
                raw = await reader.readline()
            if not raw:
                return None
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            if line.strip() in _ENDS or (not line.strip() and fields):
                return fields
            if not fields and line.startswith("Asterisk Call Manager"):
                continue  # the greeting
            key, colon, value = line.partition(":")
            if colon and key.strip():
                fields.setdefault(key.strip(), value.strip())

    def _set_connected(self, up: bool) -> None:
        self.connected = up
        self.status.set_up(up)

    # -- events ----------------------------------------------------------------------------

    def _rejected(self, reason: str, *, field: str | None = None) -> None:
        log.warning("yeastar.event_rejected", source=self.source, reason=reason, field=field)
        self.status.rejected_input(reason)

    async def _take(self, fields: Mapping[str, str]) -> None:
        """Commit one event, retrying while the store cannot (the TG will not send it again)."""
        try:
            item = item_from_event(fields, source=self.source, sims=self._sims, now=self._clock())
        except DecodeError as e:
            self._rejected(str(e))
            return
        for attempt in itertools.count(1):
            try:
                if isinstance(item, Part):
                    result = await self._intake.accept_part(item)
                    joined = result.joined is not None and not result.joined.duplicate
                    self.status.accepted(1 if joined else 0)
                else:
                    (accepted,) = await self._intake.accept([item])
                    self.status.accepted(0 if accepted.duplicate else 1)
                return
            except FieldError as e:  # never acceptable: that event alone is refused
                name = _FIELD_NAMES.get(e.field, e.field)
                self._rejected(f"{name}: {e.problem}", field=name)
                return
            except StoreError as e:
                self.status.store_failed(str(e))
                log.error("yeastar.store_unavailable", source=self.source, error=str(e))
            try:
                await asyncio.sleep(min(10.0, 0.5 * 2**attempt))
            except asyncio.CancelledError:
                log.error("yeastar.event_lost", source=self.source, sender=item.phone_from)
                raise


async def _cancel_and_wait(task: asyncio.Task[None]) -> None:
    """Cancel ``task`` and wait for its end. Only the cancellation asked for here is absorbed:
    when the caller itself is being cancelled (``stop`` under a timeout, a shutdown), that
    CancelledError propagates instead of being swallowed with the task's."""
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if current is not None and current.cancelling():
            raise
