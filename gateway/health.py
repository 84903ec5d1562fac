"""The health report behind GET /health: each part says ok, degraded or failing, and why."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

from gateway.delivery import DeliveryWorker
from gateway.outbox import Outbox


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


class Health:
    def __init__(
        self,
        outbox: Outbox,
        worker: DeliveryWorker,
        *,
        degraded_after: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._outbox = outbox
        self._worker = worker
        self._degraded_after = degraded_after
        self._clock = clock
        self._checks: dict[str, CheckFn] = {}

    def add_check(self, name: str, fn: CheckFn) -> None:
        """Sources (modems, gateway boxes) add their own check under their name."""
        self._checks[name] = fn

    async def report(self) -> tuple[Level, dict[str, Any]]:
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
        return level, body

    async def _store(self) -> Check:
        error = await self._outbox.check_writable()
        return Check(
            Level.FAILING if error else Level.OK,
            {"writable": error is None, "error": error, "path": self._outbox.path},
        )

    def _upstream(self, now: float) -> Check:
        s = self._worker.status()
        level = Level.OK
        if s.key_rejected or s.consecutive_failures >= self._degraded_after:
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
                "rate_cap": s.pacer.rate_cap,
                "in_flight": s.in_flight,
            },
        )
