"""How many pushes may start now: concurrency window, circuit breaker and 429 back-off.

Pure state over an injected clock, so every rule is testable without sleeping:
- at most `concurrency` requests in flight;
- after `circuit_after` failures in a row that say "the upstream is down" (network, timeout,
  5xx), only one probe at a time, one every `retry_interval`; the first answer that is not such
  a failure closes the circuit and the window grows back by one per success (no burst);
- a 429 pauses every push for Retry-After (else `retry_interval`) and caps the request rate at
  half the rate that provoked it; the cap grows 20 % a second and is lifted at twice that rate.
"""

from __future__ import annotations

import collections
import math
from dataclasses import dataclass
from enum import StrEnum

from gateway.delivery.policy import Verdict
from gateway.outbox import Outcome

RATE_WINDOW = 1.0  # seconds over which the send rate is measured
RATE_GROWTH = 1.2  # per second, while capped


class Circuit(StrEnum):
    CLOSED = "closed"
    OPEN = "open"  # one probe at a time, every retry_interval
    RAMPING = "ramping"  # reopened; window growing back to concurrency


@dataclass(frozen=True)
class PacerSnapshot:
    circuit: Circuit
    window: int
    consecutive_down: int
    paused_for: float
    rate_cap: float | None


class Pacer:
    def __init__(self, *, concurrency: int, circuit_after: int, retry_interval: float) -> None:
        self._concurrency = concurrency
        self._circuit_after = circuit_after
        self._retry_interval = retry_interval
        self.window = concurrency
        self.circuit = Circuit.CLOSED
        self.consecutive_down = 0
        self._next_probe_at = 0.0
        self._paused_until = 0.0
        self._cap0: float | None = None  # rate cap (req/s) at _cap_since
        self._cap_since = 0.0
        self._cap_lift = math.inf
        self._tokens = 0.0
        self._tokens_at = 0.0
        self._sends: collections.deque[float] = collections.deque()

    # -- asking --------------------------------------------------------------------------

    def allowed(self, now: float, in_flight: int) -> int:
        """How many new requests may start at `now` with `in_flight` already running."""
        if now < self._paused_until:
            return 0
        if self.circuit is Circuit.OPEN:
            return 1 if in_flight == 0 and now >= self._next_probe_at else 0
        free = max(0, self.window - in_flight)
        cap = self.rate_cap(now)
        if cap is not None:
            self._refill(now, cap)
            free = min(free, int(self._tokens))
        return max(0, free)

    def wait_hint(self, now: float, in_flight: int) -> float | None:
        """Seconds until allowed() may grow without a request finishing; None if never."""
        if now < self._paused_until:
            return self._paused_until - now
        if self.circuit is Circuit.OPEN:
            # While the probe is out only its answer can change anything.
            return None if in_flight else max(0.0, self._next_probe_at - now)
        cap = self.rate_cap(now)
        if cap is not None and self._tokens < 1:
            return (1 - self._tokens) / cap
        return None

    def rate_cap(self, now: float) -> float | None:
        if self._cap0 is None:
            return None
        cap: float = self._cap0 * RATE_GROWTH ** max(0.0, now - self._cap_since)
        if cap >= self._cap_lift:
            self._cap0 = None
            return None
        return cap

    def snapshot(self, now: float) -> PacerSnapshot:
        return PacerSnapshot(
            circuit=self.circuit,
            window=1 if self.circuit is Circuit.OPEN else self.window,
            consecutive_down=self.consecutive_down,
            paused_for=max(0.0, self._paused_until - now),
            rate_cap=self.rate_cap(now),
        )

    # -- telling -------------------------------------------------------------------------

    def sent(self, now: float) -> None:
        self._sends.append(now)
        while self._sends and self._sends[0] < now - RATE_WINDOW:
            self._sends.popleft()
        if self._cap0 is not None:
            self._tokens = max(0.0, self._tokens - 1)

    def finished(self, verdict: Verdict, now: float) -> Circuit | None:
        """Take one attempt's verdict into account; returns the new circuit state if it changed."""
        before = self.circuit
        if verdict.upstream_down:
            self.consecutive_down += 1
            if self.circuit is Circuit.OPEN or self.consecutive_down >= self._circuit_after:
                self.circuit = Circuit.OPEN
                self._next_probe_at = now + self._retry_interval
        else:
            self.consecutive_down = 0
            if self.circuit is Circuit.OPEN:
                self.circuit = Circuit.RAMPING
                self.window = 1
            elif self.circuit is Circuit.RAMPING and verdict.outcome is not Outcome.RATE_LIMITED:
                self.window = min(self._concurrency, self.window + 1)
                if self.window == self._concurrency:
                    self.circuit = Circuit.CLOSED
        if verdict.outcome is Outcome.RATE_LIMITED:
            self._slow_down(now, verdict.retry_after)
        return self.circuit if self.circuit is not before else None

    def _slow_down(self, now: float, retry_after: float | None) -> None:
        pause = retry_after if retry_after is not None else self._retry_interval
        self._paused_until = max(self._paused_until, now + pause)
        recent = sum(1 for t in self._sends if t >= now - RATE_WINDOW) / RATE_WINDOW
        current = self.rate_cap(now)
        base = min(recent, current) if current is not None else recent
        self._cap0 = max(1.0, base / 2)
        self._cap_since = self._paused_until
        self._cap_lift = max(2.0, base * 2)
        self._tokens = 1.0
        self._tokens_at = self._paused_until

    def _refill(self, now: float, cap: float) -> None:
        if now > self._tokens_at:
            self._tokens = min(max(1.0, cap), self._tokens + (now - self._tokens_at) * cap)
            self._tokens_at = now
