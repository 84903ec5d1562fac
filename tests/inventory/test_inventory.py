"""The live SIM inventory fed by a bank of simulated modems on real ptys, kept in a real store."""

from __future__ import annotations

import asyncio
import time

from gateway.config import Config, ModemConfig, SimConfig
from gateway.intake import Intake
from gateway.inventory.networks import Names, identify
from gateway.inventory.sims import Inventory, LiveSim, Sighting, SimState
from gateway.metrics import Metrics
from gateway.outbox import Outbox
from gateway.outbox.partner import PartnerBook
from gateway.play.modem import sim_identity
from gateway.sources.modem.bank import ModemBank
from tests.inventory.conftest import InventoryWatch
from tests.sources.modem.conftest import FAST, FakeFactory
from tests.sources.modem.test_bank import UPSTREAM

N = 50


def phone(i: int) -> str:
    return f"7900{i:07d}"


async def test_fifty_sims_over_six_networks_appear_with_country_operator_state_and_phone(
    fakes: FakeFactory,
    intake: Intake,
    metrics: Metrics,
    outbox: Outbox,
    inventory: InventoryWatch,
) -> None:
    sims: list[SimConfig] = []
    modems: list[ModemConfig] = []
    fakes_made = []
    for i in range(N):
        ident = sim_identity(i)
        kw: dict[str, object] = {}
        if i == 0:
            kw["registration"] = 0  # searching: not registered
        if i == 1:
            kw["rssi"] = 99  # registered, no signal measured
        if i % 3 == 2:
            kw["number"] = "+" + phone(i)  # the SIM says its number (AT+CNUM)
        fake = fakes(**ident, **kw)
        fakes_made.append(fake)
        if i % 3 == 0:
            sims.append(SimConfig(phone=phone(i), iccid=fake.iccid))
            modems.append(ModemConfig(port=fake.port, name=f"m{i}"))
        elif i % 3 == 1:
            modems.append(ModemConfig(port=fake.port, name=f"m{i}", phone=phone(i)))
        else:
            modems.append(ModemConfig(port=fake.port, name=f"m{i}"))
    cfg = Config(upstream=UPSTREAM, modems=FAST, modem=tuple(modems), sim=tuple(sims))
    bank = ModemBank(intake, cfg, metrics, inventory=inventory.inventory)
    bank.start()
    try:
        await inventory.until(lambda: inventory.inventory.live_count() == N, timeout=30)
        names = Names({"250-01": "mts"})
        seen = inventory.by_key()
        for i, fake in enumerate(fakes_made):
            record, live = seen[fake.iccid]
            net = identify(fake.imsi)
            assert net is not None and live
            assert (record.mcc, record.mnc) == (net.mcc, net.mnc)
            assert record.country == names.country(net) and record.operator == names.operator(net)
            assert record.phone == phone(i)
            assert record.phone_origin == ("sim", "config", "cnum")[i % 3]
            assert record.source == f"modem:m{i}" and record.location == f"m{i}"
            expected = {0: "not_registered", 1: "no_signal"}.get(i, "ready")
            assert record.state == expected, (i, record)
            assert record.imsi == fake.imsi
        assert seen[fakes_made[0].iccid].record.operator == "mts"  # [partner.names] applied
        assert len({(s.record.mcc, s.record.mnc) for s in seen.values()}) == 6

        # A modem unplugged: its SIM is absent and not live at once (the port reports EIO).
        started = time.monotonic()
        fakes_made[7].unplug()
        key = fakes_made[7].iccid
        await inventory.until(lambda: not inventory.by_key()[key].live, timeout=5)
        assert time.monotonic() - started < 5
        assert inventory.by_key()[key].record.state == "absent"
        assert inventory.inventory.live_count() == N - 1

        # Plugged back in: live again.
        fakes_made[7].replug()
        await inventory.until(lambda: inventory.by_key()[key].live, timeout=10)
    finally:
        await bank.stop()
    # Every SIM is absent once the bank stops, and every record reaches the store.
    assert inventory.inventory.live_count() == 0
    await inventory.inventory.flush()
    stored = {r.sim_key: r for r in await PartnerBook(outbox).sims()}
    assert set(stored) == {f.iccid for f in fakes_made}
    assert stored[fakes_made[3].iccid].phone == phone(3)


async def test_records_from_the_store_are_shown_but_not_live_until_seen(outbox: Outbox) -> None:
    book = PartnerBook(outbox)
    first = Inventory(book, save_delay=0.01)
    await first.start()
    first.report(
        Sighting("goip:box", "3", SimState.READY, port="3", phone="79001112233",
                 phone_origin="sim")
    )  # fmt: skip
    await first.stop()

    second = Inventory(book)
    await second.start()
    try:
        ((record, live),) = second.records()
        assert record.sim_key == "goip:box:3" and record.phone == "79001112233" and not live
        second.report(Sighting("goip:box", "3", SimState.READY, port="3"))
        assert second.records()[0].live
    finally:
        await second.stop()


async def test_a_new_sim_in_the_same_place_makes_the_old_one_absent() -> None:
    inv = Inventory()
    batches: list[list[LiveSim]] = []
    inv.on_change(batches.append)
    inv.report(Sighting("modem:m1", "m1", SimState.READY, iccid="8970100000000000001"))
    inv.report(Sighting("modem:m1", "m1", SimState.READY, iccid="8970100000000000002"))
    by_key = {s.record.sim_key: s for s in inv.records()}
    assert not by_key["8970100000000000001"].live
    assert by_key["8970100000000000001"].record.state == "absent"
    assert by_key["8970100000000000002"].live
    assert batches[0] == []  # the snapshot at registration: nothing yet
    assert [s.record.sim_key for s in batches[-1]] == [
        "8970100000000000001",
        "8970100000000000002",
    ]


async def test_saves_are_batched_not_one_write_per_report() -> None:
    class CountingStore:
        def __init__(self) -> None:
            self.writes: list[int] = []
            self.wrote = asyncio.Event()

        async def save_sims(self, sims: object) -> None:
            self.writes.append(len(sims))  # type: ignore[arg-type]
            self.wrote.set()

        async def sims(self) -> list[object]:
            return []

    store = CountingStore()
    inv = Inventory(store, save_delay=0.2)  # type: ignore[arg-type]
    await inv.start()
    try:
        for i in range(200):
            inv.report(Sighting(f"goip:b{i % 4}", str(i), SimState.READY, port=str(i)))
        async with asyncio.timeout(5):
            await store.wrote.wait()
        assert sum(store.writes) == 200 and len(store.writes) == 1
    finally:
        await inv.stop()
