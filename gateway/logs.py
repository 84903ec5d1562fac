"""Logging setup: structlog, one JSON object a line (journald) or console, secrets scrubbed."""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from collections.abc import Iterable, MutableMapping
from typing import Any, TextIO

import structlog

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
    logging.basicConfig(handlers=[handler], level=logging.WARNING, force=True)
