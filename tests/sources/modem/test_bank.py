"""The modem bank: many simulated modems at once, health, reload, multi-part flush."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from gateway.config import Config, ModemConfig, ModemsConfig, SimConfig, UpstreamConfig
from gateway.health import Level
from gateway.housekeeper import Housekeeper, flush_interval
from gateway.intake import Intake
from gateway.metrics import Metrics
from gateway.outbox import Incoming, State
from gateway.outbox.models import Hold
from gateway.play.modem import FakeModem
from gateway.play.pdu import split_deliver
from gateway.sources.modem.bank import NO_PHONE_PROBLEM, ModemBank
from tests.sources.modem.conftest import FAST, PHONE, FakeFactory, LogWatch, StoreWatch, ready, sms

UPSTREAM = UpstreamConfig(url="http://127.0.0.1:9/v1/PUSH_SMS", api_key="k")
BankFactory = Callable[..., ModemBank]


def config(
    modems: list[ModemConfig], sims: list[SimConfig], settings: ModemsConfig = FAST
) -> Config:
    return Config(upstream=UPSTREAM, modems=settings, modem=tuple(modems), sim=tuple(sims))


def iccid(i: int) -> str:
    return f"89701991234{i:08d}"


def phone(i: int) -> str:
    return f"7900{i:07d}"


@pytest.fixture
async def banks(intake: Intake, metrics: Metrics, logs: LogWatch) -> AsyncIterator[BankFactory]:
    made: list[ModemBank] = []

    def make(cfg: Config, *, start: bool = True) -> ModemBank:
        bank = ModemBank(intake, cfg, metrics)
        made.append(bank)
        if start:
            bank.start()
        return bank

    yield make
    for bank in made:
        await bank.stop()


def simulated(fakes: FakeFactory, n: int, **kw: Any) -> list[FakeModem]:
    return [
        fakes(iccid=iccid(i), imei=f"8661230{i:08d}", imsi=f"2509900{i:08d}", **kw)
        for i in range(n)
    ]


async def test_a_hundred_modems_each_deliver_within_a_bound(
    fakes: FakeFactory, banks: BankFactory, store: StoreWatch
) -> None:
    n = 100
    sims = simulated(fakes, n)
    cfg = config(
        [ModemConfig(port=f.port, name=f"m{i:03d}") for i, f in enumerate(sims)],
        [SimConfig(phone=phone(i), iccid=iccid(i)) for i in range(n)],
    )
    began = time.monotonic()
    bank = banks(cfg)
    await asyncio.gather(*(ready(f) for f in sims))
    started = time.monotonic() - began
    for i, fake in enumerate(sims):
        fake.deliver(sms(f"code {i:04d}"))
    messages = await store.count(n, timeout=30)
    took = time.monotonic() - began
    print(f"\n{n} modems: started in {started:.2f}s, {n} SMS committed after {took:.2f}s")
    assert took < 20
    assert {(m.phone, m.text) for m in messages} == {(phone(i), f"code {i:04d}") for i in range(n)}
    check = bank.health_check()
    assert check.level is Level.OK and check.details["up"] == n
    await bank.stop()
    left = [t.get_name() for t in asyncio.all_tasks() if t.get_name().startswith(("modem", "at-"))]
    assert left == []
    assert all(not s.port_open for s in bank.statuses())


async def test_a_broken_modem_does_not_stop_the_others(
    fakes: FakeFactory, banks: BankFactory, store: StoreWatch, tmp_path: Path, logs: LogWatch
) -> None:
    good = simulated(fakes, 2)
    gone = str(tmp_path / "usb-Gone_Modem-if00-port0")
    cfg = config(
        [
            ModemConfig(port=good[0].port, name="a"),
            ModemConfig(port=gone, name="gone"),
            ModemConfig(port=good[1].port, name="b"),
        ],
        [SimConfig(phone=phone(i), iccid=iccid(i)) for i in range(2)],
    )
    bank = banks(cfg)
    good[0].deliver(sms("to a"))
    good[1].deliver(sms("to b"))
    messages = await store.count(2)
    assert {m.text for m in messages} == {"to a", "to b"}
    await logs.wait("modem.port_unavailable", modem="gone")
    check = bank.health_check()
    assert check.level is Level.DEGRADED
    assert (check.details["up"], check.details["total"]) == (2, 3)
    broken = check.details["modems"]["gone"]
    assert broken["port_open"] is False and broken["problem"].startswith("port not open")
    assert check.details["modems"]["a"]["problem"] is None


async def test_health_names_a_modem_without_a_phone(fakes: FakeFactory, banks: BankFactory) -> None:
    known, unknown = simulated(fakes, 2)
    cfg = config(
        [ModemConfig(port=known.port, name="known"), ModemConfig(port=unknown.port, name="new")],
        [SimConfig(phone=phone(0), iccid=iccid(0))],
    )
    bank = banks(cfg)
    await asyncio.gather(ready(known), ready(unknown))
    check = bank.health_check()
    assert check.level is Level.DEGRADED
    details = check.details["modems"]["new"]
    assert details["phone"] is None and details["problem"] == NO_PHONE_PROBLEM
    assert details["iccid"] == iccid(1) and details["held_for_no_phone"] is True
    ok = check.details["modems"]["known"]
    assert ok["phone"] == phone(0) and ok["up"] and ok["problem"] is None
    for field in ("port", "sim_ready", "registered", "signal_dbm", "storage_used", "last_sms_at"):
        assert field in ok
    statuses = {s.name: s for s in bank.statuses()}
    assert statuses["known"].sim_state == "READY" and statuses["new"].phone is None


async def test_reload_with_a_sim_entry_releases_what_was_held(
    fakes: FakeFactory, banks: BankFactory, store: StoreWatch
) -> None:
    (fake,) = simulated(fakes, 1)
    modem = ModemConfig(port=fake.port, name="m")
    bank = banks(config([modem], []))
    await ready(fake)
    fake.deliver(sms())
    (held,) = await store.count(1)
    assert held.state is State.HELD
    await bank.reload(config([modem], [SimConfig(phone=PHONE, iccid=fake.iccid)]))
    message = await store.outbox.get_message(held.sms_id)
    assert message is not None and (message.state, message.phone) == (State.QUEUED, PHONE)
    assert bank.health_check().level is Level.OK


async def test_start_releases_what_was_held_before_a_restart(
    fakes: FakeFactory, banks: BankFactory, intake: Intake, store: StoreWatch
) -> None:
    (fake,) = simulated(fakes, 1)
    modem = ModemConfig(port=fake.port, name="m", phone=PHONE)
    (held,) = await intake.accept(
        [Incoming("modem:m", "", "Instagram", "code", time.time(), "ref-1", Hold.NO_PHONE)]
    )
    banks(config([modem], []))

    async def released() -> bool:
        message = await store.outbox.get_message(held.sms_id)
        return message is not None and message.state is State.QUEUED

    await store.until(released)


async def test_storage_nearly_full_is_warned(
    fakes: FakeFactory, banks: BankFactory, logs: LogWatch, store: StoreWatch
) -> None:
    fake = fakes(capacity=5)
    for i in range(4):
        fake.store_silently(sms(f"waiting {i}"))
    banks(config([ModemConfig(port=fake.port, name="full")], [SimConfig(PHONE, iccid=fake.iccid)]))
    warning = await logs.wait("modem.storage_nearly_full", modem="full")
    assert (warning["used"], warning["total"]) == (4, 5)
    await store.count(4)


async def test_incomplete_multipart_goes_out_after_the_timeout_with_the_gap_marked(
    fakes: FakeFactory, banks: BankFactory, store: StoreWatch, intake: Intake
) -> None:
    settings = ModemsConfig(multipart_timeout=0.5, command_timeout=0.5, reopen_max=0.2)
    assert flush_interval(settings.multipart_timeout) == 0.05
    keeper = Housekeeper(  # the flush is the housekeeper's, for every source
        store.outbox, intake, max_age=0, keep_finished=3600, multipart_timeout=0.5
    )
    await keeper.start()
    fake = fakes()
    cfg = config([ModemConfig(port=fake.port, name="m")], [SimConfig(PHONE, iccid=fake.iccid)])
    banks(config(list(cfg.modem), list(cfg.sim), settings))
    await ready(fake)
    first, _second = split_deliver("Bank", "z" * 200, ref=5)
    fake.deliver(first)
    (message,) = await store.count(1)
    await keeper.stop()
    assert message.partial and message.text == "z" * 153 + "[part 2/2 missing]"
