"""The delivery worker: claims due messages, POSTs them to PUSH_SMS, records what came back."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json.encoder
import os
import sqlite3
import ssl
import time
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import structlog

from gateway import __version__
from gateway.config import MASK, UpstreamConfig
from gateway.delivery.client import (
    Proxy,
    Reply,
    UpstreamClient,
    UpstreamError,
    proxy_from_environment,
)
from gateway.delivery.pacing import Circuit, Pacer, PacerSnapshot
from gateway.delivery.policy import Policy, Verdict
from gateway.errors import StoreError
from gateway.metrics import Metrics
from gateway.outbox import Attempt, AttemptRecord, Message, Outbox, Outcome
from gateway.outbox.store import BODY_LIMIT
from gateway.tasks import cancel_and_wait

log = structlog.get_logger(__name__)
_str = json.encoder.encode_basestring  # a JSON string literal, non-ASCII kept as it is
USER_AGENT = f"partner-sms-gateway/{__version__}"
IDLE_POLL = 1.0  # seconds; picks up messages other processes (sms-gateway ingest) committed
LEASE_MARGIN = 5.0
STORE_RETRY = 1.0
MIN_SLEEP = 0.001
PREFETCH_WINDOWS = 4  # claimed ahead in steady flow, in windows of `concurrency`
ERROR_LIMIT = 1000  # characters of an error's text kept with its attempt
RENT_PATH = "/pushSmsRent"  # Onlinesim's PUSH_SMS (RENT), on the upstream's host by default


def default_rent_url(url: str) -> str:
    """Where rent pushes go when `[partner] rent_push_url` is empty: the upstream URL with its
    path replaced by /pushSmsRent (query kept)."""
    return urllib.parse.urlsplit(url)._replace(path=RENT_PATH, fragment="").geturl()


class _Bell:
    """What the loop sleeps on: rung by anything that may let it do more; rings are not lost.

    asyncio.wait_for(event.wait(), t) would do, but costs a task per sleep, and the loop sleeps
    once per answer at full speed.
    """

    def __init__(self) -> None:
        self._rung = False
        self._sleeper: asyncio.Future[bool] | None = None

    def ring(self) -> None:
        self._rung = True
        if self._sleeper is not None and not self._sleeper.done():
            self._sleeper.set_result(True)

    async def wait(self, timeout: float) -> bool:
        """True when rung (since the last wait returned), False when `timeout` ran out."""
        if not self._rung:
            loop = asyncio.get_running_loop()
            self._sleeper = sleeper = loop.create_future()
            timer = loop.call_later(timeout, _settle, sleeper, False)
            try:
                await sleeper
            finally:
                timer.cancel()
                self._sleeper = None
        else:
            await asyncio.sleep(0)  # yield to the loop all the same
        rung, self._rung = self._rung, False
        return rung


def _settle(future: asyncio.Future[bool], value: bool) -> None:
    if not future.done():
        future.set_result(value)


@dataclass(frozen=True, slots=True)
class _Result:
    """One answered attempt, waiting for its record to commit."""

    message: Message
    verdict: Verdict
    attempt: Attempt
    next_due: float | None
    ended: float
    kind: str  # the short error class, for the log line
    reason: str  # what the OS, TLS or the exception said about it
    unexpected: bool  # an exception the client does not know: a bug, or a case to handle
    location: str | None  # where a redirect pointed (never followed)


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
    paused_until: float | None  # a 429 stopped every push until then (None: not paused)


def push_body(message: Message, cfg: UpstreamConfig) -> bytes:
    """The exact PUSH_SMS body: these keys, raw UTF-8, smsId an integer; same bytes on a retry.
    A message for a rent activation also carries `service` (the activation's, before `key`).

    Byte for byte what json.dumps(..., ensure_ascii=False, separators=(",", ":")) gives (a test
    holds it to that), written out directly because it runs once per attempt.
    """
    phone = str(int(message.phone)) if cfg.phone_type == "integer" else _str(message.phone)
    service = ""
    if message.rent_service is not None:
        service = f'"service":{_str(message.rent_service)},'
    return (
        f'{{"smsId":{int(message.sms_id)},"phoneFrom":{_str(message.phone_from)},'
        f'"phone":{phone},"text":{_str(message.text)},"action":"PUSH_SMS",'
        f'{service}"key":{_str(cfg.api_key)}}}'
    ).encode()


class KeyScrubber:
    """Masks the API key in what the upstream sent back, before it is stored or shown.

    An upstream that echoes the request echoes the key: it is masked as written and as JSON
    writes it (escaped, up to three times over for a request echoed inside a string inside a
    string, and with PHP's escaped slashes too). A body cut at the size limit may end in the
    first characters of the key: that tail is masked as well.
    """

    def __init__(self, key: str) -> None:
        forms = {key}
        escaped = key
        for _ in range(3):
            escaped = json.dumps(escaped)[1:-1]
            forms |= {escaped, escaped.replace("/", "\\/")}
        self._forms = sorted(forms - {""}, key=len, reverse=True)  # longest first

    def __call__(self, text: str, *, cut: bool = False) -> str:
        for form in self._forms:
            if form in MASK:  # a key made of the mask's own characters: once, or forever
                text = text.replace(form, MASK)
                continue
            while form in text:  # until none is left, even one the masking itself joined
                text = text.replace(form, MASK)
        if cut:
            for form in self._forms:
                for n in range(min(len(form) - 1, len(text)), 0, -1):
                    if text.endswith(form[:n]):
                        return text[:-n] + MASK
        return text


def describe(exc: BaseException) -> str:
    """The text recorded with an attempt that got no answer: `Kind: detail`, and the cause's
    class and text when they add something (an UpstreamError names its kind, not its class)."""
    text = str(exc) if isinstance(exc, UpstreamError) else _class_and_text(exc)
    cause = exc.__cause__
    if cause is not None and str(cause) not in text:
        text += f" (from {_class_and_text(cause)})"
    return text


def _class_and_text(exc: BaseException) -> str:
    said = str(exc)
    return f"{type(exc).__name__}: {said}" if said else type(exc).__name__


class DeliveryWorker:
    def __init__(
        self,
        outbox: Outbox,
        cfg: UpstreamConfig,
        metrics: Metrics,
        *,
        clock: Callable[[], float] = time.time,
        ssl_context: ssl.SSLContext | None = None,
        environ: Mapping[str, str] | None = None,
        rent_url: str | None = None,
    ) -> None:
        """`rent_url` ([partner] on): where messages of rent activations go; None: the default
        (`default_rent_url`), its client made when the first such message comes."""
        self._outbox = outbox
        self._rent_url = rent_url
        self._environ = os.environ if environ is None else environ  # proxies: read at start
        self._cfg = cfg
        self._metrics = metrics
        self._clock = clock
        self._ssl_context = ssl_context  # None: the system's trust store
        self._policy = Policy(cfg.drop_on)
        self._scrub = KeyScrubber(cfg.api_key)
        self._pacer = Pacer(
            concurrency=cfg.concurrency,
            circuit_after=cfg.circuit_after,
            retry_interval=cfg.retry_interval,
        )
        # Long enough for a prefetched message to wait behind every window claimed before it
        # (each lasts at most one timeout) and then be sent.
        self._lease = (PREFETCH_WINDOWS + 2) * cfg.timeout + LEASE_MARGIN
        self._wake = _Bell()
        self._stopping = False
        self._in_flight: dict[int, asyncio.Task[None]] = {}  # HTTP requests out now
        self._results: list[_Result] = []  # answers not yet recorded
        self._recorder: asyncio.Task[None] | None = None
        self._attempt_counters = {o: metrics.attempts.labels(o.value) for o in Outcome}
        metrics.in_flight.set_function(lambda: len(self._in_flight))
        self._buffer: collections.deque[Message] = collections.deque()  # claimed, not yet sent
        self._refilling: asyncio.Task[None] | None = None
        self._dry = False  # the last claim found all that was due
        self._due_changes = 0
        self._client: UpstreamClient | None = None
        self._rent_client: UpstreamClient | None = None  # connections of their own (origin)
        self._task: asyncio.Task[None] | None = None
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
        outbox.on_accepted(self._due_changed)

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        """Release stale leases and start delivering. Raises ConfigError (before claiming
        anything) when the environment names a proxy that cannot be used."""
        proxy = proxy_from_environment(self._cfg.url, self._environ)
        rent_proxy = None
        if self._rent_url is not None:
            rent_proxy = proxy_from_environment(self._rent_url, self._environ)
        released = await self._outbox.release_stale_leases()
        if released:
            log.info("delivery.leases_released", count=released)
        self._client = self._new_client(self._cfg.url, proxy)
        if self._rent_url is not None:
            self._rent_client = self._new_client(self._rent_url, rent_proxy)
        self._task = asyncio.create_task(self._run(), name="delivery-worker")

    def _new_client(self, url: str, proxy: Proxy | None) -> UpstreamClient:
        if proxy is not None:
            rent = {"rent": True} if url != self._cfg.url else {}
            log.info("delivery.proxy_used", proxy=proxy.address, variable=proxy.variable, **rent)
        return UpstreamClient(
            url,
            self._headers,
            timeout=self._cfg.timeout,
            body_limit=BODY_LIMIT,
            ssl_context=self._ssl_context,
            proxy=proxy,
        )

    def _client_for(self, message: Message) -> UpstreamClient:
        """The rent URL's client for a rent activation's message, else the upstream's."""
        if message.rent_service is None:
            assert self._client is not None
            return self._client
        if self._rent_client is None:
            # [partner] is off now, but the message was accepted for a rent while it was on.
            url = self._rent_url or default_rent_url(self._cfg.url)
            self._rent_client = self._new_client(url, proxy_from_environment(url, self._environ))
        return self._rent_client

    async def stop(self, grace: float) -> None:
        """Stop claiming; let pushes in flight finish within `grace`, abandon the rest."""
        self._stopping = True
        self._wake.ring()
        if self._task is not None:
            await cancel_and_wait(self._task)
        if self._refilling is not None:  # a claim in progress hands its leases back itself
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(self._refilling), grace)
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
        while self._recorder is not None:
            await asyncio.gather(self._recorder, return_exceptions=True)
        if abandoned or unsent:
            with contextlib.suppress(Exception):
                await self._outbox.release(abandoned + unsent)
        if self._client is not None:
            await self._client.close()
        if self._rent_client is not None:
            await self._rent_client.close()

    @property
    def alive(self) -> bool:
        return self._task is not None and not self._task.done()

    def status(self) -> UpstreamStatus:
        now = self._clock()
        pacer = self._pacer.snapshot(now)
        return UpstreamStatus(
            alive=self.alive,
            last_success_at=self._last_success_at,
            last_failure=self._last_failure,
            consecutive_failures=self._consecutive_failures,
            key_rejected=self._key_error is not None,
            key_error=self._key_error,
            pacer=pacer,
            in_flight=len(self._in_flight),
            paused_until=now + pacer.paused_for if pacer.paused_for > 0 else None,
        )

    # -- the loop ------------------------------------------------------------------------

    async def _run(self) -> None:
        while not self._stopping:
            now = self._clock()
            free = self._pacer.allowed(now, len(self._in_flight))
            steady = self._pacer.circuit is Circuit.CLOSED and self._pacer.rate_cap(now) is None
            # Claiming runs beside sending: a claim waits for the writer (an fsync), and the
            # window must not stand still meanwhile. Steady flow keeps windows claimed ahead,
            # so a freed slot is refilled at once.
            low_water = free + (self._cfg.concurrency if steady else 0)
            if self._refilling is None and (
                (not steady and self._buffer)  # hand prefetched leases back
                or (not self._dry and len(self._buffer) < low_water)
            ):
                self._refilling = asyncio.create_task(self._refill(steady), name="delivery-claim")
            sent = 0
            while sent < free and self._buffer:
                message = self._buffer.popleft()
                self._pacer.sent(now)
                task = asyncio.create_task(self._push(message), name=f"push-{message.sms_id}")
                self._in_flight[message.sms_id] = task
                sent += 1
            if sent and sent == free:
                continue  # the window may have room again: loop until it is full
            await self._sleep(free - sent)

    async def _refill(self, steady: bool) -> None:
        """Claim what is due, plus (when all is well) a few windows' worth ahead of need.

        Prefetched leases are handed back when the flow is not steady, so a probe or a
        rate-capped trickle sends what is oldest due at that moment.
        """
        try:
            if not steady and self._buffer:
                unsent = [m.sms_id for m in self._buffer]
                self._buffer.clear()
                await self._outbox.release(unsent)
                self._dry = False
            now = self._clock()
            free = self._pacer.allowed(now, len(self._in_flight))
            ahead = PREFETCH_WINDOWS * self._cfg.concurrency if steady else 0
            want = free + ahead - len(self._buffer)
            if want > 0:
                changes = self._due_changes
                claimed = await self._outbox.claim_due(
                    limit=want, lease=self._lease, max_age=self._cfg.max_age
                )
                # Fewer than asked: nothing more is due; claim again when that may change
                # (unless it already did while this claim ran).
                self._dry = len(claimed) < want and changes == self._due_changes
                if self._stopping:
                    await self._outbox.release([m.sms_id for m in claimed])
                else:
                    self._buffer.extend(claimed)
        except StoreError as e:
            # Health shows the store failing; keep trying, without spinning.
            log.error("delivery.claim_failed", error=str(e))
            await asyncio.sleep(STORE_RETRY)
        finally:
            self._refilling = None
            self._wake.ring()

    async def _sleep(self, free: int) -> None:
        now = self._clock()
        timeout = IDLE_POLL
        hint = self._pacer.wait_hint(now, len(self._in_flight))
        if hint is not None:
            timeout = min(timeout, hint)
        if free > 0 and self._dry and self._refilling is None:
            try:
                due = await self._outbox.next_due_at(self._cfg.max_age)
            except sqlite3.Error as e:
                log.error("delivery.store_unreadable", error=str(e))
                due = None
            if due is not None:
                timeout = min(timeout, max(0.0, due - now))
        # Always yield to the loop, even when something is due right now.
        if not await self._wake.wait(max(timeout, MIN_SLEEP)):
            self._dry = False  # something may be due by now

    def _due_changed(self) -> None:
        """Messages may have become due (accepted, released, rescheduled): claim again."""
        self._dry = False
        self._due_changes += 1
        self._wake.ring()

    async def _push(self, message: Message) -> None:
        try:
            self._attempt(message, *await self._exchange(message))
        finally:
            # Whatever happened, the HTTP slot is free now (the lease keeps the message ours
            # until its record commits, or runs out and makes it due again).
            self._in_flight.pop(message.sms_id, None)
            self._wake.ring()

    async def _exchange(self, message: Message) -> tuple[float, float, Reply | BaseException]:
        """One request: when it started (clock, monotonic) and the reply or why there is none."""
        started, t0 = self._clock(), time.monotonic()
        try:
            client = self._client_for(message)
            return started, t0, await client.post(push_body(message, self._cfg))
        except Exception as e:
            # Not only UpstreamError: anything else (a library error nobody foresaw, a bug) is
            # a failed attempt too, or its slot would stay taken for good.
            return started, t0, e

    def _attempt(
        self, message: Message, started: float, t0: float, result: Reply | BaseException
    ) -> None:
        """Judge one attempt, tell the pacer and the upstream status, queue its record."""
        duration = time.monotonic() - t0
        ended = self._clock()
        self._metrics.push_seconds.observe(duration)
        status: int | None = None
        body = ""
        error: str | None = None  # recorded with the attempt: what failed, and its cause
        kind = reason = ""
        location: str | None = None
        if isinstance(result, Reply):
            status, body = result.status, result.body.decode("utf-8", "replace")
            verdict = self._policy.classify(status, body, result.retry_after)
            # An upstream that echoes the request must not put the key into the store.
            body = self._scrub(body, cut=len(result.body) > BODY_LIMIT)
            location = result.location and self._scrub(result.location)
        else:
            kind = result.kind if isinstance(result, UpstreamError) else type(result).__name__
            error = self._scrub(describe(result)[:ERROR_LIMIT])
            reason = error.removeprefix(kind).lstrip(": ").strip()
            verdict = self._policy.classify_error(kind)
        self._attempt_counters[verdict.outcome].inc()
        self._track_upstream(verdict, ended, status, kind or None)  # /health: the class
        changed = self._pacer.finished(verdict, ended)
        if changed is not None:
            self._metrics.circuit_open.set(1 if changed is Circuit.OPEN else 0)
            log.warning(f"upstream.circuit_{changed.value}", failures=self._pacer.consecutive_down)
        next_due: float | None = None
        if verdict.outcome in (Outcome.RETRY, Outcome.ERROR, Outcome.RATE_LIMITED):
            wait = self._cfg.retry_interval
            if verdict.retry_after is not None:
                wait = max(wait, verdict.retry_after)
            next_due = ended + wait
        attempt = Attempt(
            sms_id=message.sms_id,
            started_at=started,
            duration=duration,
            outcome=verdict.outcome,
            http_status=status,
            code=verdict.code,
            error=error,
            body=body or None,
        )
        unexpected = error is not None and not isinstance(result, UpstreamError)
        self._results.append(
            _Result(message, verdict, attempt, next_due, ended, kind, reason, unexpected, location)
        )
        if self._recorder is None:
            self._recorder = asyncio.create_task(self._record(), name="delivery-record")

    async def _record(self) -> None:
        """Write the results that came back, many per transaction, then say what happened."""
        try:
            while self._results:
                batch, self._results = self._results, []
                try:
                    await self._outbox.record([AttemptRecord(r.attempt, r.next_due) for r in batch])
                except Exception as e:
                    # The leases run out and the messages are simply due again, same smsIds.
                    log.error(
                        "push.record_failed",
                        sms_ids=[r.message.sms_id for r in batch],
                        error=str(e),
                    )
                    continue
                for r in batch:
                    self._tell(r)
                if any(r.next_due is not None for r in batch):
                    self._due_changed()  # a retry was scheduled: maybe soon (short intervals)
        finally:
            self._recorder = None
            self._wake.ring()

    def _tell(self, r: _Result) -> None:
        """The log line (and delivery-time metric) of one recorded attempt."""
        attempt, outcome = r.attempt, r.attempt.outcome
        fields: dict[str, object] = {
            "sms_id": attempt.sms_id,
            "http_status": attempt.http_status,
            "duration": round(attempt.duration, 4),
            "attempt": r.message.attempts + 1,
        }
        if r.message.activation_id is not None:
            fields["activation_id"] = r.message.activation_id
        if r.location is not None:
            fields["location"] = r.location  # a redirect: where the upstream wanted us to go
        next_in = r.next_due and round(r.next_due - r.ended, 3)
        match outcome:
            case Outcome.DELIVERED:
                self._metrics.delivery_seconds.observe(max(0.0, r.ended - r.message.received_at))
                log.info("push.delivered", **fields)
            case Outcome.DROPPED:
                log.warning("push.dropped", code=attempt.code, **fields)
            case Outcome.RATE_LIMITED:
                log.warning("push.rate_limited", retry_after=r.verdict.retry_after, **fields)
            case Outcome.RETRY:
                log.info("push.retry_scheduled", code=attempt.code, next_in=next_in, **fields)
            case Outcome.ERROR if r.unexpected:
                log.error(
                    "push.failed",
                    error=r.kind,
                    reason=r.reason or None,
                    unexpected=True,
                    next_in=next_in,
                    **fields,
                )
            case Outcome.ERROR:
                log.info(
                    "push.failed", error=r.kind, reason=r.reason or None, next_in=next_in, **fields
                )

    def _track_upstream(
        self, verdict: Verdict, now: float, status: int | None, error: str | None
    ) -> None:
        if verdict.outcome is Outcome.DELIVERED:
            self._last_success_at = now
            self._consecutive_failures = 0
            if self._key_error is not None:
                log.info("upstream.key_accepted")
            self._key_error = None
            self._metrics.key_rejected.set(0)
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
            self._metrics.key_rejected.set(1)
