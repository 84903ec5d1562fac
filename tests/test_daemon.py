"""The daemon's stop, with real signals to a real daemon subprocess: the shutdown budget holds
even when a part hangs, and a second SIGTERM ends the process at once."""

from __future__ import annotations

import signal
import sqlite3
import time
from collections.abc import Callable
from typing import Any

from gateway.daemon import SHUTDOWN_BUDGET
from gateway.play.standin import Answer, StandIn
from tests.fakes.daemon import DaemonProcess

GOOD = {"phone": "79001234567", "phoneFrom": "Instagram", "text": "code 1234"}


async def push_in_flight(daemon: DaemonProcess, standin: StandIn) -> None:
    """One push the upstream holds for a minute."""
    standin.default = Answer(200, delay=60)
    status, _ = await daemon.post_sms(GOOD)
    assert status == 201
    await standin.wait_for(lambda s: s.in_flight == 1, timeout=10)


async def test_a_second_sigterm_ends_the_daemon_at_once(
    daemon_factory: Callable[..., Any], standin: StandIn
) -> None:
    daemon: DaemonProcess = await daemon_factory()
    await push_in_flight(daemon, standin)
    daemon.signal(signal.SIGTERM)  # the push would get 3.5 s of grace
    await daemon.wait_notification("STOPPING=1", timeout=5)
    second = time.monotonic()
    daemon.signal(signal.SIGTERM)
    assert await daemon.wait(timeout=5) == 1
    assert time.monotonic() - second < 1.5
    events = [e.get("event") for e in daemon.logs()]
    assert "daemon.forced_exit" in events
    assert "daemon.stopped" not in events


async def test_the_daemon_exits_within_its_budget_when_a_part_hangs(
    daemon_factory: Callable[..., Any], standin: StandIn
) -> None:
    daemon: DaemonProcess = await daemon_factory()
    await push_in_flight(daemon, standin)
    # Another process holds the store's write lock: after the push's grace the worker's
    # release of its lease waits for SQLite's busy timeout (5 s), beyond the budget.
    blocker = sqlite3.connect(daemon.dir / "outbox.sqlite3", timeout=1, isolation_level=None)
    try:
        blocker.execute("BEGIN EXCLUSIVE")
        sent = time.monotonic()
        daemon.signal(signal.SIGTERM)
        code = await daemon.wait(timeout=SHUTDOWN_BUDGET + 5)
        took = time.monotonic() - sent
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert took <= SHUTDOWN_BUDGET + 0.5, f"took {took:.2f} s to exit"
    assert code == 1
    assert "daemon.shutdown_overran" in [e.get("event") for e in daemon.logs()]
    # Nothing is lost: the next start sends the message again, same smsId.
    standin.default = None
    await daemon.start()
    await standin.wait_for(lambda s: len(s.delivered()) == 1, timeout=10)
    assert await daemon.stop() == 0
