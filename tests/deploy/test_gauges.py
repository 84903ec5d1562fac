"""The gauges behind the newer alert rules, set by a real daemon (a subprocess) and read from its
/metrics: the upstream rejecting the key and accepting it again, the store refusing a write
transaction and taking one again."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from gateway.play.standin import Answer, StandIn
from tests.deploy.promql import Exposition
from tests.fakes.daemon import DaemonProcess, write_config


@pytest.fixture
async def standin() -> AsyncIterator[StandIn]:
    s = StandIn()
    await s.start()
    yield s
    await s.stop()


@pytest.fixture
async def daemon(tmp_path: Path, standin: StandIn) -> AsyncIterator[DaemonProcess]:
    d = DaemonProcess(write_config(tmp_path, standin.url))
    await d.start()
    yield d
    if d.proc is not None:
        await d.stop()


async def scrape(daemon: DaemonProcess) -> Exposition:
    async with aiohttp.ClientSession() as s, s.get(daemon.base + "/metrics") as resp:
        assert resp.status == 200
        return Exposition.parse(await resp.text())


async def gauge_becomes(daemon: DaemonProcess, name: str, value: float, timeout: float) -> None:
    async with asyncio.timeout(timeout):
        while True:
            if (await scrape(daemon)).value(name) == value:
                return
            await asyncio.sleep(0.1)  # polled, bounded by the timeout above


async def test_key_rejected_is_1_while_the_upstream_rejects_the_key(
    daemon: DaemonProcess, standin: StandIn
) -> None:
    assert (await scrape(daemon)).value("sms_gateway_upstream_key_rejected") == 0
    standin.default = Answer(401, '{"response": "ERROR_WRONG_KEY"}')
    status, answer = await daemon.post_sms({"phone": "79001234567", "phoneFrom": "S", "text": "t"})
    assert status == 201
    await gauge_becomes(daemon, "sms_gateway_upstream_key_rejected", 1, timeout=10)
    standin.default = None  # the key is right again: the next retry is a 200
    await standin.wait_for(lambda s: answer["smsId"] in s.delivered_ids(), timeout=10)
    await gauge_becomes(daemon, "sms_gateway_upstream_key_rejected", 0, timeout=10)


async def test_store_writable_follows_the_probe_on_each_scrape(daemon: DaemonProcess) -> None:
    """No /health call at all: the scrape itself probes (a failure is never cached)."""
    assert (await scrape(daemon)).value("sms_gateway_store_writable") == 1
    path = daemon.dir / "outbox.sqlite3"
    blocker = sqlite3.connect(path, timeout=1, isolation_level=None)
    try:
        # The success is trusted for 5 s; a lock held past that makes the probe fail (2 s).
        blocker.execute("BEGIN EXCLUSIVE")
        await gauge_becomes(daemon, "sms_gateway_store_writable", 0, timeout=15)
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    await gauge_becomes(daemon, "sms_gateway_store_writable", 1, timeout=10)
