"""The housekeeper alone, on a real store: expiry, purge and the stale-parts flush (no source)."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from gateway.housekeeper import Housekeeper, flush_interval
from gateway.intake import Intake
from gateway.outbox import Attempt, AttemptRecord, Incoming, Outbox, Outcome, Part, State
from gateway.play.standin import StandIn
from tests.delivery.conftest import LogWatch, logs
from tests.delivery.test_e2e import daemon_logged
from tests.fakes.daemon import DaemonProcess

__all__ = ["logs"]  # a fixture


class Clock:
    """The store's clock: real time, or set back to make a message old."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def outbox(tmp_path: Path, clock: Clock) -> AsyncIterator[Outbox]:
    store = await Outbox.open(str(tmp_path / "outbox.sqlite3"), clock=clock)
    yield store
    await store.close()


HousekeeperFactory = Callable[..., Housekeeper]


@pytest.fixture
async def housekeepers(outbox: Outbox) -> AsyncIterator[HousekeeperFactory]:
    made: list[Housekeeper] = []

    def make(**kw: Any) -> Housekeeper:
        kw.setdefault("max_age", 0)
        kw.setdefault("keep_finished", 3600)
        kw.setdefault("multipart_timeout", 300)
        keeper = Housekeeper(outbox, Intake(outbox), **kw)
        made.append(keeper)
        return keeper

    yield make
    for keeper in made:
        await keeper.stop()


def incoming(ref: str) -> Incoming:
    return Incoming("http", "79001234567", "S", f"text {ref}", time.time(), ref)


async def state_of(outbox: Outbox, sms_id: int) -> State | None:
    message = await outbox.get_message(sms_id)
    return message.state if message is not None else None


async def test_messages_past_max_age_expire_at_start(
    outbox: Outbox, clock: Clock, housekeepers: HousekeeperFactory, logs: LogWatch
) -> None:
    clock.offset = -1000  # accepted 1000 s ago
    (old,) = await outbox.accept([incoming("old")])
    clock.offset = 0
    (fresh,) = await outbox.accept([incoming("fresh")])
    await housekeepers(max_age=100).start()
    line = await logs.wait("push.expired", sms_id=old.sms_id)
    assert line["max_age"] == 100 and line["log_level"] == "warning"
    assert await state_of(outbox, old.sms_id) is State.EXPIRED
    assert await state_of(outbox, fresh.sms_id) is State.QUEUED


async def test_expiry_runs_again_every_round(
    outbox: Outbox, clock: Clock, housekeepers: HousekeeperFactory, logs: LogWatch
) -> None:
    keeper = housekeepers(max_age=100, maintenance_every=0.2)
    await keeper.start()
    clock.offset = -1000
    (late,) = await outbox.accept([incoming("late")])  # after the first round
    clock.offset = 0
    await logs.wait("push.expired", sms_id=late.sms_id, timeout=5)


async def test_finished_messages_past_keep_finished_are_purged(
    outbox: Outbox, clock: Clock, housekeepers: HousekeeperFactory, logs: LogWatch
) -> None:
    clock.offset = -1000
    old, recent = await outbox.accept([incoming("old"), incoming("recent")])
    await outbox.claim_due(limit=1, lease=60, max_age=0)
    await outbox.record(
        [AttemptRecord(Attempt(old.sms_id, clock(), 0.01, Outcome.DELIVERED, 200), None)]
    )
    clock.offset = 0
    await outbox.claim_due(limit=1, lease=60, max_age=0)
    await outbox.record(
        [AttemptRecord(Attempt(recent.sms_id, clock(), 0.01, Outcome.DELIVERED, 200), None)]
    )
    await housekeepers(keep_finished=100).start()
    line = await logs.wait("store.purged")
    assert line["count"] == 1
    assert await outbox.get_message(old.sms_id) is None
    assert await state_of(outbox, recent.sms_id) is State.DELIVERED


async def test_an_open_ended_group_is_joined_after_multipart_timeout_without_any_modem_bank(
    outbox: Outbox, housekeepers: HousekeeperFactory, logs: LogWatch
) -> None:
    """A GoIP-like source sends a long SMS as packets with total 0 and closes the group
    itself; if its closing never comes, the housekeeper joins what arrived."""
    intake = Intake(outbox)
    now = time.time()
    for seq, text in ((1, "first half, "), (2, "second half")):
        part = Part("goip:box1", "g-17", seq, 0, text, "79001234567", "Bank", now, f"p{seq}")
        assert (await intake.accept_part(part)).joined is None
    keeper = housekeepers(multipart_timeout=0.5)
    assert flush_interval(0.5) == 0.05
    started = time.monotonic()
    await keeper.start()
    line = await logs.wait("modem.parts_flushed", timeout=5)
    assert time.monotonic() - started >= 0.5 - (time.time() - now) - 0.01
    message = await outbox.get_message(line["sms_id"])
    assert message is not None
    assert (message.text, message.source, message.partial) == (
        "first half, second half",
        "goip:box1",
        False,
    )
    await keeper.stop()
    assert not keeper.alive


async def test_the_daemon_runs_the_housekeeper(
    daemon_factory: Callable[..., Any], standin: StandIn
) -> None:
    """Started with the daemon: a message accepted long ago expires at start, never pushed."""
    daemon: DaemonProcess = await daemon_factory(start=False, upstream={"max_age": 60})
    path = str(daemon.dir / "outbox.sqlite3")
    clock = Clock()
    clock.offset = -1000
    store = await Outbox.open(path, clock=clock)
    (old,) = await store.accept([incoming("old")])
    await store.close()
    await daemon.start()
    await daemon_logged(daemon, "push.expired", timeout=5, sms_id=old.sms_id)
    await daemon.stop()
    with sqlite3.connect(path) as db:
        row = db.execute("SELECT state FROM messages WHERE sms_id = ?", (old.sms_id,))
        assert row.fetchone() == ("expired",)
    assert not standin.pushes
