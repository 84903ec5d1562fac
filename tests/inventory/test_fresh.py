"""Evidence that ages (``Sighting.fresh_for``): a SIM reported by a box that pushes its ports'
state now and then (Ejoin's dev-status / port-status) is live only while the last report is
fresh, then absent; a listed-only sighting (an SMS push) at its place neither replaces nor
demotes it; ``stop()`` makes it absent. Real inventory, real event loop timers, bounded waits."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
import structlog

from gateway.inventory.sims import Inventory, LiveSim, Sighting, SimState

ICCID = "8970199123456789012"
OTHER = "8970199123456789013"
SOURCE = "ejoin:sky-1"


def status(
    fresh_for: float | None,
    *,
    iccid: str = ICCID,
    port: str = "1.01",
    state: SimState = SimState.READY,
) -> Sighting:
    return Sighting(
        SOURCE, port, state, port=port, iccid=iccid, phone="79001230001",
        phone_origin="sim", fresh_for=fresh_for,
    )  # fmt: skip


def sms_row(*, iccid: str | None = None, at: float = 1234.5) -> Sighting:
    """What an SMS push on port 1.01 lists: not live."""
    return Sighting(
        SOURCE, "1.01", SimState.READY, port="1.01", iccid=iccid, phone="79005550000",
        phone_origin="source", last_sms=at, live=False,
    )  # fmt: skip


class Watch:
    def __init__(self, inventory: Inventory) -> None:
        self.inventory = inventory
        self.changed = asyncio.Event()
        inventory.on_change(lambda _: self.changed.set())

    def get(self, key: str) -> LiveSim:
        found = self.inventory.record(key)
        assert found is not None
        return found

    async def until(self, check: Callable[[], bool], timeout: float = 5.0) -> None:
        async with asyncio.timeout(timeout):
            while not check():
                self.changed.clear()
                await self.changed.wait()


async def test_a_report_keeps_the_sim_live_until_its_evidence_ages_out() -> None:
    w = Watch(Inventory())
    with structlog.testing.capture_logs() as logs:
        w.inventory.report(status(0.3))
        assert w.get(ICCID).live
        loop = asyncio.get_running_loop()
        started = loop.time()
        await w.until(lambda: not w.get(ICCID).live)
        assert loop.time() - started >= 0.25  # not before its time
    assert w.get(ICCID).record.state == "absent"
    stale = [e for e in logs if e["event"] == "inventory.sim_stale"]
    assert len(stale) == 1 and stale[0]["sim"] == ICCID and stale[0]["location"] == "1.01"


async def test_each_report_renews_the_deadline_and_a_shorter_one_never_cuts_it() -> None:
    w = Watch(Inventory())
    w.inventory.report(status(0.4))
    for _ in range(4):  # reports every 0.2 s keep it live well past the first 0.4 s
        await asyncio.sleep(0.2)
        w.inventory.report(status(0.4))
        assert w.get(ICCID).live
    w.inventory.report(status(60.0))  # a dev-status announcing a long period ...
    w.inventory.report(status(0.05))  # ... then a port-status with the default window
    await asyncio.sleep(0.3)
    assert w.get(ICCID).live  # the longer deadline stands


async def test_an_sms_push_at_a_fresh_place_only_sets_last_sms() -> None:
    w = Watch(Inventory())
    w.inventory.report(status(30.0))
    before = w.get(ICCID).record
    w.inventory.report(sms_row())  # no ICCID in the row: would be another SIM at 1.01
    w.inventory.report(sms_row(iccid=OTHER, at=2000.0))  # a different ICCID in the row
    after = w.get(ICCID)
    assert after.live and after.record.state == "ready"
    assert after.record.last_sms == 2000.0
    assert (after.record.phone, after.record.phone_origin) == (before.phone, "sim")
    assert {s.record.sim_key for s in w.inventory.records()} == {ICCID}


async def test_once_stale_an_sms_push_lists_as_before() -> None:
    w = Watch(Inventory())
    w.inventory.report(status(0.1))
    await w.until(lambda: not w.get(ICCID).live)
    w.inventory.report(sms_row())
    listed = w.get(f"{SOURCE}:1.01")
    assert not listed.live and listed.record.last_sms == 1234.5


async def test_news_that_the_place_is_empty_or_another_sim_ends_the_old_deadline() -> None:
    w = Watch(Inventory())
    w.inventory.report(status(0.3))
    w.inventory.report(status(0.3, iccid=OTHER))  # a new SIM at 1.01
    assert not w.get(ICCID).live and w.get(OTHER).live
    w.inventory.report(Sighting(SOURCE, "1.01", SimState.ABSENT, port="1.01", fresh_for=0.3))
    assert not w.get(OTHER).live and w.get(OTHER).record.state == "absent"
    with structlog.testing.capture_logs() as logs:
        await asyncio.sleep(0.5)  # the old deadlines pass: nothing left to go stale
    assert not [e for e in logs if e["event"] == "inventory.sim_stale"]


async def test_a_source_that_says_when_it_is_gone_clears_the_deadline() -> None:
    w = Watch(Inventory())
    w.inventory.report(status(0.2))
    w.inventory.report(status(None))  # the same SIM, now reported with no deadline
    await asyncio.sleep(0.4)
    assert w.get(ICCID).live


async def test_stop_makes_every_sim_held_live_by_aging_evidence_absent() -> None:
    inv = Inventory()
    await inv.start()
    inv.report(status(600.0))
    inv.report(Sighting("goip:g", "g1", SimState.READY, port="g1"))  # no deadline: its source
    await inv.stop()  # ... says itself when it is gone
    fresh = inv.record(ICCID)
    assert fresh is not None and not fresh.live and fresh.record.state == "absent"
    other = inv.record("goip:g:g1")
    assert other is not None and other.live


@pytest.mark.parametrize("window", [0.0, -5.0])
async def test_a_window_of_nothing_goes_stale_at_once(window: float) -> None:
    w = Watch(Inventory())
    w.inventory.report(status(window))
    await w.until(lambda: not w.get(ICCID).live, timeout=2.0)
