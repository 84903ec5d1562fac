"""What an upstream answer means for a message: a pure decision, no I/O (CONTRACT section 4)."""

from __future__ import annotations

import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

from gateway.outbox import Outcome

# Answers that say the API key is the problem (Onlinesim's common exceptions).
KEY_CODES = ("ERROR_WRONG_KEY", "ERROR_NO_KEY", "ACCOUNT_BLOCKED")
_KEY_PATTERN = r"API_ACCESS_[A-Z_]+"
# Codes worth recording on an attempt although they do not end a message by default.
NOTED_CODES = ("TOO_MANY_ATTEMPTS", "IGNORED", "SERVICE_BAN")
# A Retry-After beyond this is taken as this: a typo upstream must not stop us for days.
MAX_RETRY_AFTER = 3600.0


@dataclass(frozen=True)
class Verdict:
    outcome: Outcome
    code: str | None = None  # the drop, key or other known code found in the body
    retry_after: float | None = None  # seconds the upstream asked us to wait (429)
    key_rejected: bool = False
    upstream_down: bool = False  # counts toward the circuit breaker (network, timeout, 5xx)


def _word(codes: Iterable[str], *extra_patterns: str) -> re.Pattern[str]:
    # A code is a whole word: NO_OP must not match inside NO_OPERATIONS or XNO_OP.
    escaped = sorted((re.escape(c) for c in codes), key=len, reverse=True)
    alternatives = "|".join([*escaped, *extra_patterns])
    return re.compile(rf"(?<![A-Za-z0-9_])(?:{alternatives})(?![A-Za-z0-9_])")


class Policy:
    """Classifies one attempt's result. Built once from the configured drop codes."""

    def __init__(self, drop_on: Iterable[str]) -> None:
        codes = list(drop_on)
        self._drop = _word(codes) if codes else None
        self._key = _word(KEY_CODES, _KEY_PATTERN)
        self._noted = _word(NOTED_CODES)

    def classify_error(self, error: str) -> Verdict:
        """No HTTP answer at all: timeout, refused, reset, DNS."""
        return Verdict(Outcome.ERROR, upstream_down=True)

    def classify(self, status: int, body: str, retry_after: str | None = None) -> Verdict:
        if status == 200:
            return Verdict(Outcome.DELIVERED)
        if self._drop is not None and (m := self._drop.search(body)):
            return Verdict(Outcome.DROPPED, code=m.group(0))
        key = self._key.search(body)
        if status in (401, 403) or key:
            code = key.group(0) if key else f"HTTP_{status}"
            return Verdict(Outcome.RETRY, code=code, key_rejected=True)
        noted = self._noted.search(body)
        if status == 429:
            return Verdict(
                Outcome.RATE_LIMITED,
                code=noted.group(0) if noted else "TOO_MANY_ATTEMPTS",
                retry_after=parse_retry_after(retry_after),
            )
        return Verdict(
            Outcome.RETRY, code=noted.group(0) if noted else None, upstream_down=status >= 500
        )


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Retry-After as delta-seconds or an HTTP date; None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return min(float(value), MAX_RETRY_AFTER)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    delay = when.timestamp() - (time.time() if now is None else now)
    return min(max(0.0, delay), MAX_RETRY_AFTER)
