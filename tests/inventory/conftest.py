"""The inventory tests run on the modem tests' parts: simulated modems on real ptys, a real
SQLite outbox behind an Intake, and an inventory watcher that wakes waiters on each change."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest

from gateway.inventory.sims import Inventory, LiveSim
from gateway.outbox import Outbox
from gateway.outbox.partner import PartnerBook
from tests.sources.modem.conftest import (  # noqa: F401 - fixtures, used by name
    db_path,
    fakes,
    intake,
    logs,
    metrics,
    outbox,
    store,
)

WAIT = 10.0


class InventoryWatch:
    """An inventory on the real store, and bounded waits for what it shows."""

    def __init__(self, inventory: Inventory) -> None:
        self.inventory = inventory
        self.changed = asyncio.Event()
        inventory.on_change(lambda _: self.changed.set())

    async def until(self, check: Callable[[], bool], timeout: float = WAIT) -> None:
        async with asyncio.timeout(timeout):
            while not check():
                self.changed.clear()
                await self.changed.wait()

    def by_key(self) -> dict[str, LiveSim]:
        return {s.record.sim_key: s for s in self.inventory.records()}


@pytest.fixture
async def inventory(outbox: Outbox) -> AsyncIterator[InventoryWatch]:  # noqa: F811
    inv = Inventory(PartnerBook(outbox), names={"250-01": "mts"}, save_delay=0.05)
    await inv.start()
    yield InventoryWatch(inv)
    await inv.stop()
