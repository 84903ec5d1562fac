"""Delivered, retried, dropped and held messages per minute over the last hour, in memory, for
the status page: the Prometheus counters that already count them, sampled every few seconds,
so nothing is counted twice and the worker's hot path is not touched."""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from prometheus_client import Counter

from gateway.metrics import Metrics
from gateway.outbox import Outcome
from gateway.tasks import cancel_and_wait

__all__ = ["Activity", "Minute"]

SAMPLE_EVERY = 5.0  # seconds between samples of the counters
MINUTES = 60
# Attempts that did not finish their message: it is sent again later.
_RETRIED = frozenset({Outcome.RETRY.value, Outcome.RATE_LIMITED.value, Outcome.ERROR.value})


@dataclass(frozen=True, slots=True)
class Minute:
    start: float  # UNIX time of the minute's first second
    delivered: int = 0
    retried: int = 0  # attempts answered with a retry, a 429 or no answer
    dropped: int = 0  # attempts answered with a drop code
    held: int = 0  # messages committed held (not pushed)


def _totals(counter: Counter, label: str) -> dict[str, float]:
    """Each label value's running total, through the public `collect()`."""
    out: dict[str, float] = {}
    for family in counter.collect():
        for sample in family.samples:
            if sample.name.endswith("_total"):
                out[sample.labels[label]] = sample.value
    return out


class Activity:
    """A ring of per-minute counts: `start()` samples every `every` seconds until `stop()`."""

    def __init__(
        self,
        metrics: Metrics,
        *,
        every: float = SAMPLE_EVERY,
        minutes: int = MINUTES,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._metrics = metrics
        self._every = every
        self._minutes = minutes
        self._clock = clock
        self._ring: collections.deque[list[int]] = collections.deque(maxlen=minutes)
        self._starts: collections.deque[int] = collections.deque(maxlen=minutes)
        self._last = self._read()  # counts before the daemon started are not this hour's
        self._task: asyncio.Task[None] | None = None

    def _read(self) -> tuple[float, float, float, float]:
        attempts = _totals(self._metrics.attempts, "result")
        held = _totals(self._metrics.held, "reason")
        return (
            attempts.get(Outcome.DELIVERED.value, 0.0),
            sum(v for k, v in attempts.items() if k in _RETRIED),
            attempts.get(Outcome.DROPPED.value, 0.0),
            sum(held.values()),
        )

    def sample(self) -> None:
        """Add what the counters gained since the last sample to the current minute."""
        now = self._read()
        gained = [max(0, round(n - b)) for n, b in zip(now, self._last, strict=True)]
        self._last = now
        minute = int(self._clock() // 60)
        if not self._starts or self._starts[-1] != minute:
            self._starts.append(minute)
            self._ring.append([0, 0, 0, 0])
        bucket = self._ring[-1]
        for i, n in enumerate(gained):
            bucket[i] += n

    def minutes(self) -> list[Minute]:
        """The last `minutes` minutes, oldest first, this one last (after a fresh sample);
        minutes without a sample (quiet, or before the start) count zero."""
        self.sample()
        current = int(self._clock() // 60)
        by_start = dict(zip(self._starts, self._ring, strict=True))
        out = []
        for m in range(current - self._minutes + 1, current + 1):
            counts = by_start.get(m, (0, 0, 0, 0))
            out.append(Minute(float(m * 60), *counts))
        return out

    @staticmethod
    def totals(minutes: Iterable[Minute]) -> dict[str, int]:
        t = {"delivered": 0, "retried": 0, "dropped": 0, "held": 0}
        for m in minutes:
            t["delivered"] += m.delivered
            t["retried"] += m.retried
            t["dropped"] += m.dropped
            t["held"] += m.held
        return t

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="activity-sampler")

    async def stop(self) -> None:
        if self._task is not None:
            await cancel_and_wait(self._task)
            self._task = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._every)
            self.sample()
