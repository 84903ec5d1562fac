"""The record each source keeps for /health: traffic, rejected input and store trouble."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Protocol

from gateway.health import Check, Level

__all__ = ["SourceStatus"]


class _Child(Protocol):
    def inc(self, amount: float = 1) -> None: ...


class _GaugeChild(Protocol):
    def set(self, value: float) -> None: ...


class SourceStatus:
    """What /health shows about one source: traffic, rejections and store trouble, kept in memory.

    ``rejected`` and ``up`` are the source's Prometheus children when metrics are wired in.
    """

    def __init__(
        self,
        source: str,
        *,
        clock: Callable[[], float] = time.time,
        rejected: _Child | None = None,
        up: _GaugeChild | None = None,
    ) -> None:
        self.source = source
        self._clock = clock
        self._rejected_metric = rejected
        self._up_metric = up
        self.messages = 0
        self.rejected = 0
        self.store_errors = 0
        self.last_message_at: float | None = None
        self.last_success_at: float | None = None
        self.last_failure_at: float | None = None
        self.last_error: str | None = None

    def accepted(self, count: int = 1) -> None:
        """``count`` messages (or parts) were committed; 0 for an acknowledged non-message."""
        now = self._clock()
        self.last_success_at = now
        if count:
            self.messages += count
            self.last_message_at = now

    def rejected_input(self, reason: str) -> None:
        self.rejected += 1
        self._failed(f"rejected: {reason}")
        if self._rejected_metric is not None:
            self._rejected_metric.inc()

    def store_failed(self, error: str) -> None:
        self.store_errors += 1
        self._failed(f"store: {error}")

    def set_up(self, up: bool) -> None:
        if self._up_metric is not None:
            self._up_metric.set(1 if up else 0)

    def _failed(self, error: str) -> None:
        self.last_failure_at = self._clock()
        self.last_error = error[:300]

    def check(self, *, level: Level = Level.OK, **extra: Any) -> Check:
        """Degraded while the latest outcome is a failure (bad input or a store error)."""
        now = self._clock()
        failing = self.last_failure_at is not None and (
            self.last_success_at is None or self.last_failure_at > self.last_success_at
        )
        if failing:
            level = max(level, Level.DEGRADED)

        def age(t: float | None) -> float | None:
            return round(now - t, 3) if t is not None else None

        return Check(
            level,
            {
                "messages": self.messages,
                "last_message_age": age(self.last_message_at),
                "rejected": self.rejected,
                "store_errors": self.store_errors,
                "last_error": self.last_error,
                "last_error_age": age(self.last_failure_at),
                **extra,
            },
        )
