"""Waiting in tests without a bare sleep: structlog events captured and awaited, and a check
asked again each time something is set, always with a bound."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import structlog
from structlog.testing import LogCapture

__all__ = ["LogWatch", "until", "watching"]

T = TypeVar("T")


class LogWatch(LogCapture):
    """Captures structlog events and wakes waiters on each one."""

    def __init__(self, timeout: float) -> None:
        super().__init__()
        self.changed = asyncio.Event()
        self.timeout = timeout  # how long `wait` waits unless told

    def __call__(self, logger: Any, method_name: str, event_dict: Any) -> Any:
        self.changed.set()
        return super().__call__(logger, method_name, event_dict)

    def named(self, event: str, **match: Any) -> list[dict[str, Any]]:
        return [
            dict(e)
            for e in self.entries
            if e["event"] == event and all(e.get(k) == v for k, v in match.items())
        ]

    async def wait(self, event: str, timeout: float | None = None, **match: Any) -> dict[str, Any]:
        """The first `event` (with the given fields) logged, waiting for it if need be."""
        async with asyncio.timeout(self.timeout if timeout is None else timeout):
            while True:
                self.changed.clear()
                found = self.named(event, **match)
                if found:
                    return found[0]
                await self.changed.wait()


def watching(timeout: float) -> Iterator[LogWatch]:
    """Every structlog event into a `LogWatch` (processors swapped in place, as
    structlog.testing does), the processors put back after; the body of a `logs` fixture."""
    watch = LogWatch(timeout)
    processors = structlog.get_config()["processors"]
    saved = list(processors)
    processors.clear()
    processors.append(watch)
    structlog.configure(processors=processors)
    yield watch
    processors.clear()
    processors.extend(saved)
    structlog.configure(processors=processors)


async def until(
    check: Callable[[], Awaitable[T | None]], changed: asyncio.Event, timeout: float
) -> T:
    """The first true result of `check`, asked again each time `changed` is set; bounded."""
    async with asyncio.timeout(timeout):
        while True:
            changed.clear()
            if result := await check():
                return result
            await changed.wait()
