"""Shared fixtures: the stand-in upstream (a real aiohttp server) and the daemon in a subprocess."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from gateway.play.standin import StandIn
from tests.fakes.daemon import DaemonProcess, write_config


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """With PEERS_REQUIRED=1 (.ci/run sets it), a test skipped because a third-party peer
    (gammu-smsd, smstools, Kannel, Net::SMPP, Chromium, ...) is not installed fails instead:
    CI must not go green without them."""
    outcome = yield
    report = outcome.get_result()
    if (
        os.environ.get("PEERS_REQUIRED") == "1"
        and report.skipped
        and "not installed" in str(report.longrepr)
    ):
        report.outcome = "failed"
        report.longrepr = f"PEERS_REQUIRED=1, yet skipped: {report.longrepr}"


@pytest.fixture
async def standin() -> AsyncIterator[StandIn]:
    server = StandIn()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def daemon_factory(tmp_path: Path, standin: StandIn) -> AsyncIterator[Callable[..., Any]]:
    started: list[DaemonProcess] = []

    async def make(start: bool = True, **config: Any) -> DaemonProcess:
        d = DaemonProcess(write_config(tmp_path, standin.url, **config))
        started.append(d)
        if start:
            await d.start()
        return d

    yield make
    for d in started:
        if d.proc is not None and d.proc.poll() is None:
            d.kill()


@pytest.fixture
async def daemon(daemon_factory: Callable[..., Any]) -> DaemonProcess:
    d: DaemonProcess = await daemon_factory()
    return d
