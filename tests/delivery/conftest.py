"""Fixtures of the delivery tests: a real store, the log events, a worker built around them."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import structlog
from structlog.testing import LogCapture

from gateway.outbox import Outbox

T = TypeVar("T")
WAIT = 10.0


class LogWatch(LogCapture):
    """Captures structlog events and wakes waiters on each one."""

    def __init__(self) -> None:
        super().__init__()
        self.changed = asyncio.Event()

    def __call__(self, logger: Any, method_name: str, event_dict: Any) -> Any:
        self.changed.set()
        return super().__call__(logger, method_name, event_dict)

    def named(self, event: str, **match: Any) -> list[dict[str, Any]]:
        return [
            e
            for e in self.entries
            if e["event"] == event and all(e.get(k) == v for k, v in match.items())
        ]

    async def wait(self, event: str, timeout: float = WAIT, **match: Any) -> dict[str, Any]:
        """The first `event` (with the given fields) logged, waiting for it if need be."""
        async with asyncio.timeout(timeout):
            while True:
                self.changed.clear()
                found = self.named(event, **match)
                if found:
                    return found[0]
                await self.changed.wait()


@pytest.fixture
def logs() -> Iterator[LogWatch]:
    """Every structlog event (processors swapped in place, as structlog.testing does)."""
    watch = LogWatch()
    processors = structlog.get_config()["processors"]
    saved = list(processors)
    processors.clear()
    processors.append(watch)
    structlog.configure(processors=processors)
    yield watch
    processors.clear()
    processors.extend(saved)
    structlog.configure(processors=processors)


@pytest.fixture
async def outbox(tmp_path: Path) -> AsyncIterator[Outbox]:
    store = await Outbox.open(str(tmp_path / "outbox.sqlite3"))
    yield store
    await store.close()


async def until(
    check: Callable[[], Awaitable[T | None]], changed: asyncio.Event, timeout: float = WAIT
) -> T:
    """The first true result of `check`, asked again each time `changed` is set; bounded."""
    async with asyncio.timeout(timeout):
        while True:
            changed.clear()
            if result := await check():
                return result
            await changed.wait()
