"""The partner tables in a real SQLite store: activations, the ledger, the inventory, ids."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.outbox import Outbox
from gateway.outbox.partner import (
    Activation,
    ActivationState,
    FinishStatus,
    LedgerEntry,
    PartnerBook,
    SimRecord,
)

T0 = 1_900_000_000.0


@pytest.fixture
def db(tmp_path: Path) -> str:
    return str(tmp_path / "outbox.sqlite3")


@pytest.fixture
async def book(db: str) -> AsyncIterator[PartnerBook]:
    outbox = await Outbox.open(db, node=1, nodes=3)
    book = PartnerBook(outbox)
    await book.start()
    yield book
    await outbox.close()


async def test_activation_ids_follow_the_ids_settings_and_survive_reopening(db: str) -> None:
    outbox = await Outbox.open(db, node=1, nodes=3)
    book = PartnerBook(outbox)
    await book.start()
    first = await book.open_activation("sim-a", "79000000001", "vk", False, T0, T0 + 900)
    second = await book.open_activation("sim-b", "79000000002", "vk", False, T0, T0 + 900)
    await outbox.close()
    assert (first, second) == (4, 7)  # seq * nodes + node
    outbox = await Outbox.open(db, node=1, nodes=3)
    again = PartnerBook(outbox)
    await again.start()
    third = await again.open_activation("sim-c", "79000000003", "vk", False, T0, T0 + 900)
    opened = await again.activations(open_only=True)
    await outbox.close()
    assert third == 10
    assert [a.activation_id for a in opened] == [10, 7, 4]


async def test_a_lost_store_never_hands_out_an_activation_id_again(db: str) -> None:
    outbox = await Outbox.open(db)
    book = PartnerBook(outbox)
    await book.start()
    used = await book.open_activation("sim-a", "79000000001", "vk", False, T0, T0 + 900)
    await outbox.close()
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(db + suffix):
            os.remove(db + suffix)
    outbox = await Outbox.open(db, new_store=True)
    book = PartnerBook(outbox)
    await book.start()
    fresh = await book.open_activation("sim-a", "79000000001", "vk", False, T0, T0 + 900)
    await outbox.close()
    assert fresh > used


async def test_never_two_open_activations_on_one_sim(book: PartnerBook) -> None:
    await book.open_activation("sim-a", "79000000001", "vk", False, T0, T0 + 900)
    with pytest.raises(sqlite3.IntegrityError):
        await book.open_activation("sim-a", "79000000001", "wa", False, T0, T0 + 900)
    assert len(await book.activations(open_only=True)) == 1


async def test_finish_writes_the_activation_and_the_ledger_in_one_go(book: PartnerBook) -> None:
    aid = await book.open_activation("sim-a", "79000000001", "vk", False, T0, T0 + 900)
    opened = await book.activation(aid)
    assert opened == Activation(aid, "sim-a", "79000000001", "vk", False, T0, T0 + 900)
    finished = Activation(
        aid, "sim-a", "79000000001", "vk", False, T0, T0 + 900,
        ActivationState.FINISHED, FinishStatus.CANCELLED, T0 + 60,
    )  # fmt: skip
    await book.finish_activation(finished, LedgerEntry(cancels=1))
    assert await book.activation(aid) == finished
    assert await book.ledger() == {("sim-a", "vk"): LedgerEntry(cancels=1)}
    await book.finish_activation(finished, LedgerEntry(cancels=2, refunds=1))
    assert await book.ledger() == {("sim-a", "vk"): LedgerEntry(cancels=2, refunds=1)}
    # A SIM whose activation finished may be ordered again.
    await book.open_activation("sim-a", "79000000001", "wa", False, T0, T0 + 900)


async def test_the_inventory_is_upserted_and_keeps_the_last_sms_time(book: PartnerBook) -> None:
    sim = SimRecord(
        sim_key="8970199000000000001", source="modem", location="bank1-slot1", state="ready",
        last_seen=T0, iccid="8970199000000000001", imsi="250011234567890", mcc="250", mnc="01",
        country="russia", operator="mts", phone="79000000001", phone_origin="config", signal=20,
        last_sms=T0 - 5,
    )  # fmt: skip
    await book.save_sims([sim])
    moved = SimRecord(
        sim_key=sim.sim_key, source="modem", location="bank1-slot2", state="no_signal",
        last_seen=T0 + 10, iccid=sim.iccid, signal=0,
    )  # fmt: skip
    await book.save_sims([moved])
    (row,) = await book.sims()
    assert (row.location, row.state, row.signal, row.last_sms) == (
        "bank1-slot2",
        "no_signal",
        0,
        T0 - 5,
    )
