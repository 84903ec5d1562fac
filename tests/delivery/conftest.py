"""Fixtures of the delivery tests: a real store, the log events, a worker built around them."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from gateway.outbox import Outbox
from tests.fakes import watch
from tests.fakes.watch import LogWatch, watching

T = TypeVar("T")
WAIT = 10.0


@pytest.fixture
def logs() -> Iterator[LogWatch]:
    """Every structlog event."""
    yield from watching(WAIT)


@pytest.fixture
async def outbox(tmp_path: Path) -> AsyncIterator[Outbox]:
    store = await Outbox.open(str(tmp_path / "outbox.sqlite3"))
    yield store
    await store.close()


async def until(
    check: Callable[[], Awaitable[T | None]], changed: asyncio.Event, timeout: float = WAIT
) -> T:
    """The first true result of `check`, asked again each time `changed` is set; bounded."""
    return await watch.until(check, changed, timeout)
