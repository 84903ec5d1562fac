"""The health report (gateway/health.py) over a real store: cached write probes, identities
left out for callers without the status token."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from gateway.config import UpstreamConfig
from gateway.delivery import DeliveryWorker
from gateway.health import PROBE_EVERY, Check, Health, Level, without_identities
from gateway.metrics import Metrics
from gateway.outbox import Outbox


class CountingOutbox(Outbox):
    """The real outbox, counting its write probes."""

    probes = 0

    async def check_writable(self, timeout: float = 2.0) -> str | None:
        type(self).probes += 1
        return await super().check_writable(timeout)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def outbox(tmp_path: Path) -> AsyncIterator[CountingOutbox]:
    CountingOutbox.probes = 0
    box = await CountingOutbox.open(str(tmp_path / "outbox.sqlite3"))
    assert isinstance(box, CountingOutbox)
    yield box
    await box.close()


def health_for(outbox: Outbox, clock: Clock) -> Health:
    worker = DeliveryWorker(
        outbox, UpstreamConfig(url="http://127.0.0.1:9/", api_key="k"), Metrics()
    )
    return Health(outbox, worker, degraded_after=5, monotonic=clock)


async def test_many_health_calls_probe_the_store_at_most_once_per_interval(
    outbox: CountingOutbox,
) -> None:
    clock = Clock()
    health = health_for(outbox, clock)
    await asyncio.gather(*(health.report() for _ in range(200)))  # at once: one shared probe
    for _ in range(200):
        _, body = await health.report()
        assert body["checks"]["store"]["writable"] is True
    assert CountingOutbox.probes == 1
    clock.now += PROBE_EVERY
    await health.report()
    assert CountingOutbox.probes == 2


async def test_a_failed_probe_is_not_cached(outbox: CountingOutbox) -> None:
    clock = Clock()
    health = health_for(outbox, clock)
    blocker = sqlite3.connect(outbox.path, timeout=1, isolation_level=None)
    try:
        blocker.execute("BEGIN EXCLUSIVE")
        _, body = await health.report()
        assert body["checks"]["store"]["writable"] is False
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    _, body = await health.report()  # no time has passed: probed again all the same
    assert body["checks"]["store"]["writable"] is True


SIM = {"iccid": "8970199", "imsi": "25001", "imei": "35000", "phone": "79001234567"}


async def test_identities_are_left_out_unless_full(outbox: CountingOutbox) -> None:
    health = health_for(outbox, Clock())
    modem: dict[str, Any] = {"port": "/dev/serial/by-id/usb-X-if00", "signal_dbm": -70, **SIM}
    health.add_check("modems", lambda: Check(Level.OK, {"up": 1, "modems": {"m1": modem}}))
    _, full = await health.report(full=True)
    assert full["checks"]["modems"]["modems"]["m1"]["imsi"] == "25001"
    assert full["checks"]["store"]["path"] == outbox.path
    _, public = await health.report(full=False)
    m1 = public["checks"]["modems"]["modems"]["m1"]
    assert m1 == {"signal_dbm": -70}
    assert "path" not in public["checks"]["store"]
    assert public["checks"]["store"]["writable"] is True
    assert public["queue"] == full["queue"]
    text = repr(public)
    assert not any(v in text for v in SIM.values())


def test_without_identities_walks_lists_and_nested_tables() -> None:
    data = {"a": [{"imei": "1", "b": {"phone": "2", "ok": True}}], "host": "10.0.0.1:5038"}
    assert without_identities(data) == {"a": [{"b": {"ok": True}}]}
