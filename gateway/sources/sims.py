"""What every non-modem source shares: which SIM (phone) a message came in on, stable dedup
digests, device clocks taken with care, and the record each source keeps for /health."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, Protocol

from gateway.config import SimConfig
from gateway.health import Check, Level
from gateway.http.ingest import normalize_phone

__all__ = ["SourceStatus", "device_time", "digest", "phone_for"]

MAX_CLOCK_SKEW = 600.0  # seconds a device clock may run ahead of ours
MAX_DEVICE_AGE = 7 * 86400.0  # an older device time is a wrong clock, not a stored message
DEVICE_TIME_FORMAT = "%Y-%m-%d %H:%M:%S"


def _digits(value: str) -> str:
    return "".join(c for c in value if c.isascii() and c.isdigit())


def normalise_iccid(value: str) -> str:
    """``"8970 1991 2345 6789 012F"`` -> ``"8970199123456789012"``: uppercase, one trailing
    filler ``F`` dropped, then only the digits kept (spaces and dashes from copy-paste go)."""
    return _digits(value.strip().upper().removesuffix("F"))


def phone_for(
    sims: Sequence[SimConfig],
    *,
    source: str,
    port: str | None = None,
    imsi: str | None = None,
    iccid: str | None = None,
) -> str | None:
    """The phone of the first ``[[sim]]`` entry matching, digits only; ``None`` when none does.

    An entry matches by ``iccid`` (normalised: the filler F and spacing ignored), by ``imsi``,
    or by ``source`` (either the full source name such as
    ``"dinstar:box-1"`` or the peer's bare name ``"box-1"``) together with ``port`` when the entry
    names one. An entry without a port stands for every port of that source; a lookup without a
    port only finds such entries.
    """
    bare = source.split(":", 1)[1] if ":" in source else source
    wanted_imsi = _digits(imsi or "")
    wanted_iccid = normalise_iccid(iccid or "")
    for sim in sims:
        by_iccid = bool(sim.iccid and wanted_iccid and normalise_iccid(sim.iccid) == wanted_iccid)
        by_imsi = bool(sim.imsi and wanted_imsi and _digits(sim.imsi) == wanted_imsi)
        by_port = bool(sim.source in (source, bare) and sim.source) and (
            not sim.port or (port is not None and sim.port == port)
        )
        if by_iccid or by_imsi or by_port:
            phone = normalize_phone(sim.phone)
            if phone:
                return phone
    return None


def digest(*parts: str | bytes) -> str:
    """A short, stable hash of ``parts`` (joined unambiguously) for dedup keys."""
    h = hashlib.sha256()
    for part in parts:
        data = part.encode("utf-8", "surrogatepass") if isinstance(part, str) else part
        h.update(len(data).to_bytes(4, "big"))
        h.update(data)
    return h.hexdigest()[:16]


def device_time(value: object, now: float, *, fmt: str = DEVICE_TIME_FORMAT) -> float:
    """A device's receipt time (epoch seconds, or text in ``fmt`` read as this host's local
    time), or ``now`` when it is missing, unreadable or implausible: a clock far ahead or a week
    behind is a wrong clock, and the message must not expire early because of it."""
    when: float | None = None
    if isinstance(value, int | float) and not isinstance(value, bool):
        when = float(value)
    elif isinstance(value, str) and value.strip():
        text = value.strip()
        if text.isdigit():
            when = float(text)
        else:
            try:
                when = datetime.strptime(text, fmt).timestamp()
            except (ValueError, OverflowError, OSError):
                when = None
    if when is None or not (now - MAX_DEVICE_AGE <= when <= now + MAX_CLOCK_SKEW):
        return now
    return when


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
