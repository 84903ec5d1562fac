"""The delivery worker: claims due messages, POSTs them to PUSH_SMS, records what came back."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import sqlite3
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass

import aiohttp
import structlog

from gateway import __version__
from gateway.config import UpstreamConfig
from gateway.delivery.pacing import Circuit, Pacer, PacerSnapshot
from gateway.delivery.policy import Policy, Verdict
from gateway.errors import StoreError
from gateway.metrics import Metrics
from gateway.outbox import Attempt, AttemptRecord, Message, Outbox, Outcome
from gateway.outbox.store import BODY_LIMIT

log = structlog.get_logger(__name__)
USER_AGENT = f"partner-sms-gateway/{__version__}"
IDLE_POLL = 1.0  # seconds; picks up messages other processes (sms-gateway ingest) committed
MAINTENANCE_EVERY = 30.0
LEASE_MARGIN = 5.0
STORE_RETRY = 1.0
MIN_SLEEP = 0.001


@dataclass(frozen=True)
class UpstreamStatus:
    alive: bool
    last_success_at: float | None
    last_failure: str | None
    consecutive_failures: int
    key_rejected: bool
    key_error: str | None
    pacer: PacerSnapshot
    in_flight: int


def push_body(message: Message, cfg: UpstreamConfig) -> bytes:
    """The exact PUSH_SMS body: these keys, raw UTF-8, smsId an integer; same bytes on a retry."""
    body = {
        "smsId": message.sms_id,
        "phoneFrom": message.phone_from,
        "phone": int(message.phone) if cfg.phone_type == "integer" else message.phone,
        "text": message.text,
        "action": "PUSH_SMS",
        "key": cfg.api_key,
    }
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


class DeliveryWorker:
    def __init__(
        self,
        outbox: Outbox,
        cfg: UpstreamConfig,
        metrics: Metrics,
        *,
        keep_finished: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._outbox = outbox
        self._cfg = cfg
        self._metrics = metrics
        self._keep_finished = keep_finished
        self._clock = clock
        self._policy = Policy(cfg.drop_on)
        self._pacer = Pacer(
            concurrency=cfg.concurrency,
            circuit_after=cfg.circuit_after,
            retry_interval=cfg.retry_interval,
        )
        # Long enough for a prefetched message to wait one timeout and then be sent.
        self._lease = 2 * cfg.timeout + LEASE_MARGIN
        self._wake = asyncio.Event()
        self._stopping = False
        self._in_flight: dict[int, asyncio.Task[None]] = {}  # HTTP requests out now
        self._tasks: set[asyncio.Task[None]] = set()  # pushes not yet recorded
        self._buffer: collections.deque[Message] = collections.deque()  # claimed, not yet sent
        self._session: aiohttp.ClientSession | None = None
        self._task: asyncio.Task[None] | None = None
        self._maintenance: asyncio.Task[None] | None = None
        self._headers = {
            "Content-Type": "application/json; charset=utf-8",
            "User-Agent": USER_AGENT,
        }
        if cfg.bearer_header:
            self._headers["Authorization"] = f"Bearer {cfg.api_key}"
        self._last_success_at: float | None = None
        self._last_failure: str | None = None
        self._consecutive_failures = 0
        self._key_error: str | None = None
        outbox.on_accepted(self._wake.set)

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        released = await self._outbox.release_stale_leases()
        if released:
            log.info("delivery.leases_released", count=released)
        connector = aiohttp.TCPConnector(
            limit=self._cfg.concurrency, ssl=ssl.create_default_context(), keepalive_timeout=60
        )
        self._session = aiohttp.ClientSession(
            connector=connector, timeout=aiohttp.ClientTimeout(total=self._cfg.timeout)
        )
        self._task = asyncio.create_task(self._run(), name="delivery-worker")
        self._maintenance = asyncio.create_task(self._maintain(), name="delivery-maintenance")

    async def stop(self, grace: float) -> None:
        """Stop claiming; let pushes in flight finish within `grace`, abandon the rest."""
        self._stopping = True
        self._wake.set()
        for task in (self._task, self._maintenance):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        unsent = [m.sms_id for m in self._buffer]
        self._buffer.clear()
        pending = list(self._in_flight.values())
        abandoned: list[int] = []
        if pending:
            _, still = await asyncio.wait(pending, timeout=grace)
            abandoned = [sid for sid, t in self._in_flight.items() if t in still]
            for t in still:
                t.cancel()
            if abandoned:
                log.warning("delivery.pushes_abandoned", sms_ids=abandoned)
        # Answers already received are written before the store closes.
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if abandoned or unsent:
            with contextlib.suppress(Exception):
                await self._outbox.release(abandoned + unsent)
        if self._session is not None:
            await self._session.close()

    @property
    def alive(self) -> bool:
        return self._task is not None and not self._task.done()

    def status(self) -> UpstreamStatus:
        return UpstreamStatus(
            alive=self.alive,
            last_success_at=self._last_success_at,
            last_failure=self._last_failure,
            consecutive_failures=self._consecutive_failures,
            key_rejected=self._key_error is not None,
            key_error=self._key_error,
            pacer=self._pacer.snapshot(self._clock()),
            in_flight=len(self._in_flight),
        )

    # -- the loop ------------------------------------------------------------------------

    async def _run(self) -> None:
        while not self._stopping:
            self._wake.clear()
            now = self._clock()
            free = self._pacer.allowed(now, len(self._in_flight))
            if free > 0 and len(self._buffer) < free:
                try:
                    await self._refill(now, free)
                except StoreError as e:
                    # Health shows the store failing; keep trying, without spinning.
                    log.error("delivery.claim_failed", error=str(e))
                    await asyncio.sleep(STORE_RETRY)
                    continue
                now = self._clock()
                free = self._pacer.allowed(now, len(self._in_flight))
            sent = 0
            while sent < free and self._buffer:
                message = self._buffer.popleft()
                self._pacer.sent(now)
                task = asyncio.create_task(self._push(message), name=f"push-{message.sms_id}")
                self._in_flight[message.sms_id] = task
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
                sent += 1
            self._metrics.in_flight.set(len(self._in_flight))
            if sent and sent == free:
                continue  # the window may have room again: loop until it is full
            await self._sleep(free - sent)

    async def _refill(self, now: float, free: int) -> None:
        """Claim what is due, plus (when all is well) a window's worth ahead of need.

        Claiming ahead means a freed slot is refilled at once instead of waiting for a
        store round trip; prefetched leases are handed back when the flow is not steady.
        """
        steady = self._pacer.circuit is Circuit.CLOSED and self._pacer.rate_cap(now) is None
        if not steady and self._buffer:
            await self._outbox.release([m.sms_id for m in self._buffer])
            self._buffer.clear()
        want = free + (self._cfg.concurrency if steady else 0) - len(self._buffer)
        if want <= 0:
            return
        claimed = await self._outbox.claim_due(
            limit=want, lease=self._lease, max_age=self._cfg.max_age
        )
        self._buffer.extend(claimed)

    async def _sleep(self, free: int) -> None:
        now = self._clock()
        timeout = IDLE_POLL
        hint = self._pacer.wait_hint(now, len(self._in_flight))
        if hint is not None:
            timeout = min(timeout, hint)
        if free > 0:
            try:
                due = await self._outbox.next_due_at(self._cfg.max_age)
            except sqlite3.Error as e:
                log.error("delivery.store_unreadable", error=str(e))
                due = None
            if due is not None:
                timeout = min(timeout, max(0.0, due - now))
        # Always yield to the loop, even when something is due right now.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), max(timeout, MIN_SLEEP))

    async def _push(self, message: Message) -> None:
        log_ = log.bind(sms_id=message.sms_id)
        started = self._clock()
        t0 = time.monotonic()
        status: int | None = None
        body = ""
        error: str | None = None
        retry_after: str | None = None
        assert self._session is not None
        try:
            async with self._session.post(
                self._cfg.url, data=push_body(message, self._cfg), headers=self._headers
            ) as resp:
                status = resp.status
                retry_after = resp.headers.get("Retry-After")
                raw = await resp.content.read(BODY_LIMIT + 1)
                body = raw.decode("utf-8", "replace")
        except TimeoutError:
            error = "Timeout"
        except aiohttp.ClientError as e:
            error = e.__class__.__name__
        except OSError as e:
            error = e.__class__.__name__
        duration = time.monotonic() - t0
        ended = self._clock()
        self._metrics.push_seconds.observe(duration)
        if status is None:
            verdict = self._policy.classify_error(error or "unknown")
        else:
            verdict = self._policy.classify(status, body, retry_after)
        # The HTTP slot is free now; the lease keeps the message ours until the record commits.
        self._in_flight.pop(message.sms_id, None)
        self._metrics.in_flight.set(len(self._in_flight))
        self._metrics.attempts.labels(verdict.outcome.value).inc()
        self._track_upstream(verdict, ended, status, error)
        changed = self._pacer.finished(verdict, ended)
        if changed is not None:
            self._metrics.circuit_open.set(1 if changed is Circuit.OPEN else 0)
            log.warning(f"upstream.circuit_{changed.value}", failures=self._pacer.consecutive_down)
        self._wake.set()
        await self._settle(message, verdict, started, duration, ended, status, body, error, log_)

    async def _settle(
        self,
        message: Message,
        verdict: Verdict,
        started: float,
        duration: float,
        ended: float,
        status: int | None,
        body: str,
        error: str | None,
        log_: structlog.typing.FilteringBoundLogger,
    ) -> None:
        outcome = verdict.outcome
        next_due: float | None = None
        if outcome in (Outcome.RETRY, Outcome.ERROR, Outcome.RATE_LIMITED):
            wait = self._cfg.retry_interval
            if verdict.retry_after is not None:
                wait = max(wait, verdict.retry_after)
            next_due = ended + wait
        attempt = Attempt(
            sms_id=message.sms_id,
            started_at=started,
            duration=duration,
            outcome=outcome,
            http_status=status,
            code=verdict.code,
            error=error,
            body=body or None,
        )
        try:
            await self._outbox.record([AttemptRecord(attempt, next_due)])
        except Exception as e:
            # The lease runs out and the message is simply due again, same smsId.
            log_.error("push.record_failed", error=str(e), outcome=outcome.value)
        fields = {
            "http_status": status,
            "duration": round(duration, 4),
            "attempt": message.attempts + 1,
        }
        match outcome:
            case Outcome.DELIVERED:
                self._metrics.delivery_seconds.observe(max(0.0, ended - message.received_at))
                log_.info("push.delivered", **fields)
            case Outcome.DROPPED:
                log_.warning("push.dropped", code=verdict.code, **fields)
            case Outcome.RATE_LIMITED:
                log_.warning("push.rate_limited", retry_after=verdict.retry_after, **fields)
            case Outcome.RETRY:
                log_.info(
                    "push.retry_scheduled",
                    code=verdict.code,
                    next_in=next_due and round(next_due - ended, 3),
                    **fields,
                )
            case Outcome.ERROR:
                log_.info(
                    "push.failed",
                    error=error,
                    next_in=next_due and round(next_due - ended, 3),
                    **fields,
                )
        self._wake.set()

    def _track_upstream(
        self, verdict: Verdict, now: float, status: int | None, error: str | None
    ) -> None:
        if verdict.outcome is Outcome.DELIVERED:
            self._last_success_at = now
            self._consecutive_failures = 0
            if self._key_error is not None:
                log.info("upstream.key_accepted")
            self._key_error = None
            return
        if verdict.outcome is Outcome.DROPPED:
            self._consecutive_failures = 0
            return
        self._consecutive_failures += 1
        self._last_failure = error or f"HTTP {status}" + (
            f" {verdict.code}" if verdict.code else ""
        )
        if verdict.key_rejected:
            if self._key_error is None:
                log.error("upstream.key_rejected", http_status=status, code=verdict.code)
            self._key_error = verdict.code

    async def _maintain(self) -> None:
        """Expire messages past max_age and purge finished ones past keep_finished."""
        while True:
            try:
                expired = await self._outbox.expire_old(self._cfg.max_age)
                for sms_id in expired:
                    log.warning("push.expired", sms_id=sms_id, max_age=self._cfg.max_age)
                purged = await self._outbox.purge_finished(self._keep_finished)
                if purged:
                    log.info("store.purged", count=purged)
            except Exception as e:
                log.error("store.maintenance_failed", error=str(e))
            await asyncio.sleep(MAINTENANCE_EVERY)
