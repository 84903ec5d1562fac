"""The health report behind GET /health: each part says ok, degraded or failing, and why."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import IntEnum
from typing import Any

from gateway.delivery import DeliveryWorker
from gateway.metrics import Metrics
from gateway.outbox import Outbox


def _iso(when: float | None) -> str | None:
    """A time as ISO 8601 in UTC, to the second."""
    if when is None:
        return None
    return datetime.fromtimestamp(when, UTC).isoformat(timespec="seconds")


class Level(IntEnum):
    OK = 0
    DEGRADED = 1
    FAILING = 2

    @property
    def label(self) -> str:
        return self.name.lower()


@dataclass(frozen=True)
class Check:
    level: Level
    details: dict[str, Any] = field(default_factory=dict)


CheckFn = Callable[[], Check]

# A write transaction (an fsync) per /health call let a flood of health checks slow ingest
# down; a success is trusted this long. A failure is not kept: the next call probes again.
PROBE_EVERY = 5.0

# Left out of /health for callers without `http.status_token`: who the SIMs and modems are
# (IMSI, ICCID, IMEI, phone number), where things are (paths, ports, hosts, addresses), and
# free-text errors, which can quote any of these.
IDENTIFYING = frozenset(
    {
        "iccid",
        "imsi",
        "imei",
        "phone",
        "path",
        "port",
        "host",
        "listen",
        "error",
        "last_error",
        "problem",
    }
)


def without_identities(value: Any) -> Any:
    """`value` with every IDENTIFYING key dropped, at any depth."""
    if isinstance(value, dict):
        return {k: without_identities(v) for k, v in value.items() if k not in IDENTIFYING}
    if isinstance(value, list):
        return [without_identities(v) for v in value]
    return value


class Health:
    def __init__(
        self,
        outbox: Outbox,
        worker: DeliveryWorker,
        *,
        degraded_after: int,
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._outbox = outbox
        self._worker = worker
        self._degraded_after = degraded_after
        self._metrics = metrics
        self._clock = clock
        self._monotonic = monotonic
        self._checks: dict[str, CheckFn] = {}
        self._writable_at: float | None = None  # monotonic time of the last successful probe
        self._probe: asyncio.Task[str | None] | None = None

    def add_check(self, name: str, fn: CheckFn) -> None:
        """Sources (modems, gateway boxes) add their own check under their name."""
        self._checks[name] = fn

    async def report(self, *, full: bool = True) -> tuple[Level, dict[str, Any]]:
        """The level and the body of /health; `full=False` leaves out IDENTIFYING fields."""
        now = self._clock()
        checks: dict[str, Check] = {
            "store": await self._store(),
            "worker": Check(
                Level.OK if self._worker.alive else Level.FAILING, {"alive": self._worker.alive}
            ),
            "upstream": self._upstream(now),
        }
        for name, fn in self._checks.items():
            checks[name] = fn()
        level = max(c.level for c in checks.values())
        queued = await self._outbox.queued_count()
        oldest = await self._outbox.oldest_queued_received_at()
        body = {
            "status": level.label,
            "checks": {n: {"status": c.level.label, **c.details} for n, c in checks.items()},
            "queue": {
                "queued": queued,
                "oldest_queued_age": round(now - oldest, 3) if oldest is not None else 0,
            },
        }
        return level, (body if full else without_identities(body))

    async def _store(self) -> Check:
        error = await self._writable()
        return Check(
            Level.FAILING if error else Level.OK,
            {"writable": error is None, "error": error, "path": self._outbox.path},
        )

    async def store_writable(self) -> bool:
        """The store probe /health runs (cached as there), for GET /metrics: it sets
        `sms_gateway_store_writable` even where nobody calls /health."""
        return await self._writable() is None

    async def _writable(self) -> str | None:
        """None when the store took a write transaction within PROBE_EVERY, else why not.
        Callers arriving during a probe share it; a caller that goes away does not cancel it."""
        at = self._writable_at
        if at is not None and self._monotonic() - at < PROBE_EVERY:
            return None
        if self._probe is None or self._probe.done():
            self._probe = asyncio.create_task(self._run_probe(), name="health.store_probe")
        return await asyncio.shield(self._probe)

    async def _run_probe(self) -> str | None:
        error = await self._outbox.check_writable()
        self._writable_at = self._monotonic() if error is None else None
        if self._metrics is not None:
            self._metrics.store_writable.set(1 if error is None else 0)
        return error

    def _upstream(self, now: float) -> Check:
        s = self._worker.status()
        level = Level.OK
        if s.key_rejected or s.consecutive_failures >= self._degraded_after:
            level = Level.DEGRADED
        if s.paused_until is not None:  # a 429 stopped every push (for up to an hour)
            level = Level.DEGRADED
        return Check(
            level,
            {
                "last_success_age": round(now - s.last_success_at, 3)
                if s.last_success_at is not None
                else None,
                "consecutive_failures": s.consecutive_failures,
                "last_failure": s.last_failure,
                "key_rejected": s.key_rejected,
                "key_error": s.key_error,
                "circuit": s.pacer.circuit.value,
                "window": s.pacer.window,
                "paused_for": round(s.pacer.paused_for, 3),
                "paused_until": _iso(s.paused_until),
                "rate_cap": s.pacer.rate_cap,
                "in_flight": s.in_flight,
            },
        )
