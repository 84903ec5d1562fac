"""Logging setup: structlog, one JSON object a line (journald) or console, secrets scrubbed."""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from collections.abc import Callable, Hashable, Iterable, MutableMapping
from typing import Any, TextIO

import structlog
from aiohttp.http_exceptions import HttpProcessingError

from gateway.config import MASK

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


class _Scrub:
    """Replace any secret that slipped into a log field (defence in depth: none should)."""

    def __init__(self, secrets: Iterable[str]) -> None:
        found = sorted({s for s in secrets if s}, key=len, reverse=True)  # longest first
        self._pattern = re.compile("|".join(map(re.escape, found))) if found else None

    def __call__(
        self, _: Any, __: str, event: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        pattern = self._pattern
        if pattern is not None:
            for key, value in event.items():
                if isinstance(value, str) and pattern.search(value):
                    event[key] = pattern.sub(MASK, value)
        return event


class _UtcStamp:
    """`timestamp`: ISO 8601 in UTC with microseconds, the date and time part kept per second.

    Same text as structlog's TimeStamper(fmt="iso", utc=True), at a third of the cost: it
    runs for every line, and ingest writes a line per message.
    """

    def __init__(self, clock: Any = time.time) -> None:
        self._clock = clock
        self._second = -1
        self._prefix = ""

    def __call__(
        self, _: Any, __: str, event: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        now = self._clock()
        second = int(now)
        if second != self._second:
            self._second = second
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        event["timestamp"] = f"{self._prefix}.{int((now - second) * 1_000_000):06d}Z"
        return event


class RateLimit:
    """At most `burst` lines per key in each `period` seconds, so a flood of one event (a
    hostile client, a resource running out) cannot flood the journal. `take` says whether a
    line may go out and, if so, how many of its kind were held back since the last one."""

    def __init__(
        self, period: float = 10.0, burst: int = 5, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._period = period
        self._burst = burst
        self._clock = clock
        self._windows: dict[Hashable, list[float | int]] = {}  # key -> [start, sent, held back]

    def take(self, key: Hashable) -> int | None:
        now = self._clock()
        window = self._windows.get(key)
        if window is None or now - window[0] >= self._period:
            held = int(window[2]) if window is not None else 0
            if len(self._windows) > 1024:  # keys come from outside: forget old ones
                self._windows.clear()
            self._windows[key] = [now, 1, 0]
            return held
        if window[1] < self._burst:
            window[1] += 1
            held, window[2] = int(window[2]), 0
            return held
        window[2] += 1
        return None


# What a client or the network did to us, not a bug of ours: one line, no traceback.
_PEER_FAULTS: tuple[type[BaseException], ...] = (HttpProcessingError, OSError)


class _Throttle(logging.Filter):
    """Lines from libraries (aiohttp, asyncio): rate-limited per kind; a fault of the peer
    (malformed request, reset, EMFILE on accept) becomes one warning line without a traceback."""

    def __init__(self, limit: RateLimit | None = None) -> None:
        super().__init__()
        self._limit = limit or RateLimit()

    def filter(self, record: logging.LogRecord) -> bool:
        first_line = str(record.msg).split("\n", 1)[0]
        held = self._limit.take((record.name, first_line))
        if held is None:
            return False
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, _PEER_FAULTS) or (exc is None and "\n" in str(record.msg)):
            text = record.getMessage().split("\n", 1)[0]
            record.msg = f"{text}: {type(exc).__name__}: {exc}" if exc is not None else text
            record.args = None
            record.exc_info = None
            record.exc_text = None
            if isinstance(exc, HttpProcessingError) and record.levelno > logging.WARNING:
                record.levelno, record.levelname = logging.WARNING, "WARNING"
        if held:
            record.msg = f"{record.msg} ({held} more like this not logged)"
        return True


_ENCODER = json.JSONEncoder(ensure_ascii=False, default=repr)


def _dumps(obj: Any, **_: Any) -> str:
    """json.dumps builds an encoder on every call when given options; this one is built once."""
    return _ENCODER.encode(obj)


def configure(
    level: str = "info",
    fmt: str = "json",
    secrets: Iterable[str] = (),
    stream: TextIO | None = None,
    *,
    once: bool = False,
) -> None:
    """Set up logging. `once=True` (the daemon, configured before anything logs): each
    module's logger is built on first use and kept, instead of rebuilt for every line; only
    right for a process that never configures again (tests do, so it is off by default)."""
    renderer: Any = (
        structlog.processors.JSONRenderer(serializer=_dumps)
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            _UtcStamp(),
            structlog.processors.format_exc_info,
            _Scrub(secrets),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        # One write per line (print() makes two, message and newline: two syscalls when
        # stderr is unbuffered, as under systemd).
        logger_factory=structlog.WriteLoggerFactory(file=stream or sys.stderr),
        cache_logger_on_first_use=once,
    )
    # Libraries that use stdlib logging (aiohttp, asyncio) go to the same stream, in the same
    # format (one JSON object a line), warnings and up.
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processor=renderer,
            foreign_pre_chain=[
                structlog.stdlib.add_logger_name,
                structlog.processors.add_log_level,
                _UtcStamp(),  # its own: lines may come from other threads
                structlog.processors.format_exc_info,
                _Scrub(secrets),
            ],
        )
    )
    handler.addFilter(_Throttle())
    logging.basicConfig(handlers=[handler], level=logging.WARNING, force=True)
