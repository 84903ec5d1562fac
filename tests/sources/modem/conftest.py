"""Shared by the modem tests: the simulated modem (a real pty), a real SQLite outbox behind an
Intake, log and store watchers that wake waiters, and Modems started on the simulated ports."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from gateway.config import ModemConfig, ModemsConfig, SimConfig
from gateway.intake import Intake
from gateway.metrics import Metrics
from gateway.outbox import Message, Outbox
from gateway.play.modem import FakeModem
from gateway.play.pdu import encode_deliver
from gateway.sources.modem.device import Modem
from gateway.sources.modem.serial_link import SerialLink
from tests.fakes.watch import LogWatch, until, watching

T = TypeVar("T")
WAIT = 5.0
PHONE = "79001234567"
PIN = "4321"
FAST = ModemsConfig(scan_interval=30.0, command_timeout=0.5, reopen_max=0.2)
SCANNING = ModemsConfig(scan_interval=0.3, command_timeout=0.5, reopen_max=0.2)


class StoreWatch:
    """Wakes waiters whenever the outbox commits something new."""

    def __init__(self, outbox: Outbox) -> None:
        self.outbox = outbox
        self.changed = asyncio.Event()
        outbox.on_accepted(self.changed.set)

    async def messages(self) -> list[Message]:
        return list(reversed(await self.outbox.list_messages(limit=10_000)))

    async def until(self, check: Callable[[], Awaitable[T | None]], timeout: float = WAIT) -> T:
        return await until(check, self.changed, timeout)

    async def count(self, n: int, timeout: float = WAIT) -> list[Message]:
        async def enough() -> list[Message] | None:
            found = await self.messages()
            return found if len(found) >= n else None

        return await self.until(enough, timeout)


@pytest.fixture
def logs() -> Iterator[LogWatch]:
    """Every structlog event."""
    yield from watching(WAIT)


@pytest.fixture
def db_path(tmp_path: Path) -> str:
    return str(tmp_path / "outbox.sqlite3")


@pytest.fixture
async def outbox(db_path: str) -> AsyncIterator[Outbox]:
    box = await Outbox.open(db_path, busy_timeout_ms=50)
    yield box
    await box.close()


@pytest.fixture
def metrics() -> Metrics:
    return Metrics()


@pytest.fixture
def intake(outbox: Outbox, metrics: Metrics) -> Intake:
    return Intake(outbox, metrics)


@pytest.fixture
def store(outbox: Outbox) -> StoreWatch:
    return StoreWatch(outbox)


FakeFactory = Callable[..., FakeModem]


@pytest.fixture
async def fakes(tmp_path: Path) -> AsyncIterator[FakeFactory]:
    made: list[FakeModem] = []

    def make(profile: str = "simcom", **kw: Any) -> FakeModem:
        kw.setdefault("link_dir", tmp_path)
        fake = FakeModem(profile, **kw)
        fake.start()
        made.append(fake)
        return fake

    yield make
    for fake in made:
        fake.stop()


ModemFactory = Callable[..., Modem]


@pytest.fixture
async def modems(intake: Intake, metrics: Metrics, logs: LogWatch) -> AsyncIterator[ModemFactory]:
    made: list[Modem] = []

    def make(
        fake: FakeModem,
        *,
        settings: ModemsConfig = FAST,
        sims: list[SimConfig] | None = None,
        start: bool = True,
        **cfg: Any,
    ) -> Modem:
        cfg.setdefault("name", f"m{len(made) + 1}")
        if sims is None:
            sims = [SimConfig(phone=PHONE, iccid=fake.iccid)]
        modem = Modem(
            ModemConfig(port=fake.port, **cfg), settings, sims, intake=intake, metrics=metrics
        )
        made.append(modem)
        if start:
            modem.start()
        return modem

    yield make
    await asyncio.gather(*(m.stop() for m in made))


async def ready(fake: FakeModem) -> None:
    """The modem finished its start-up scan: indications are on, storage was read once."""
    await fake.wait_command("AT+CMGL=4")


def sms(text: str = "code 1234", sender: str = "Instagram", **kw: Any) -> str:
    return encode_deliver(sender, text, **kw)


class SlowToStopLink:
    """A link (the real pty's, a memory one) whose pending read takes a while to give up when
    cancelled, like a driver finishing a transfer: a channel's ``close()`` is then still
    awaiting its reader when a cancel lands."""

    def __init__(self, link: SerialLink) -> None:
        self.link = link
        self.name = link.name
        self.read_cancelled = asyncio.Event()

    async def read(self) -> bytes:
        try:
            return await self.link.read()
        except asyncio.CancelledError:
            self.read_cancelled.set()
            await asyncio.Event().wait()  # gives up only when cancelled once more
            raise

    def write(self, data: bytes) -> None:
        self.link.write(data)

    async def close(self) -> None:
        await self.link.close()
