"""Group commit (gateway/outbox/writer.py), seen through a real Outbox on a real file."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.errors import StoreUnavailable
from gateway.outbox import Incoming, Outbox

T0 = 1_800_000_000.0


def sms(text: str, ref: str | None = None) -> Incoming:
    return Incoming("http", "79001234567", "Instagram", text, T0, source_ref=ref)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Outbox]:
    outbox = await Outbox.open(str(tmp_path / "outbox.sqlite3"), clock=lambda: T0)
    yield outbox
    await outbox.close()


async def statements_of(store: Outbox) -> list[str]:
    """Every SQL statement the store's writing connection runs from now on."""
    seen: list[str] = []
    await store._conn.set_trace_callback(seen.append)
    return seen


async def test_callers_arriving_together_share_one_transaction_and_one_id_allocation(
    store: Outbox,
) -> None:
    seen = await statements_of(store)
    results = await asyncio.gather(*(store.accept([sms(f"m{i}")]) for i in range(50)))
    assert [r[0].sms_id for r in results] == list(range(1, 51))
    assert seen.count("BEGIN IMMEDIATE") == 1
    assert seen.count("COMMIT") == 1
    assert sum(s.startswith("UPDATE id_sequence") for s in seen) == 1
    # 50 rows in multi-row INSERTs of 32, 16 and 2
    assert sum(s.startswith("INSERT INTO messages") for s in seen) == 3


@pytest.mark.parametrize("count", [1, 2, 63, 64, 65, 127, 200, 1000])
async def test_any_number_of_messages_is_stored_whole_and_in_order(
    store: Outbox, count: int
) -> None:
    accepted = await store.accept([sms(f"m{i}") for i in range(count)])
    assert [a.sms_id for a in accepted] == list(range(1, count + 1))
    stored = await store.list_messages(limit=count + 1)
    assert {m.sms_id: m.text for m in stored} == {i + 1: f"m{i}" for i in range(count)}


async def test_each_caller_gets_the_results_of_its_own_items(store: Outbox) -> None:
    first, second, third = await asyncio.gather(
        store.accept([sms("a", "ra"), sms("b")]),
        store.accept([sms("c"), sms("a again", "ra"), sms("d")]),
        store.accept([sms("e", "ra")]),
    )
    assert [(a.sms_id, a.duplicate) for a in first] == [(1, False), (2, False)]
    assert [(a.sms_id, a.duplicate) for a in second] == [(3, False), (1, True), (4, False)]
    assert [(a.sms_id, a.duplicate) for a in third] == [(1, True)]


async def test_a_caller_that_gives_up_leaves_the_others_and_the_writer_working(
    store: Outbox,
) -> None:
    tasks = [asyncio.create_task(store.accept([sms(f"m{i}")])) for i in range(3)]
    await asyncio.sleep(0)  # all three are queued for the same transaction
    tasks[1].cancel()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert isinstance(results[1], asyncio.CancelledError)
    assert [r[0].sms_id for r in (results[0], results[2])] == [1, 3]  # type: ignore[index]
    assert (await store.accept([sms("later")]))[0].sms_id == 4


async def test_a_failed_statement_fails_its_whole_batch_and_the_writer_goes_on(
    store: Outbox,
) -> None:
    def broken(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO no_such_table VALUES (1)")

    results = await asyncio.gather(
        store.accept([sms("in the same transaction")]),
        store._writer.submit(broken),
        return_exceptions=True,
    )
    assert all(isinstance(r, StoreUnavailable) for r in results), results
    assert await store.list_messages() == []  # nothing of the batch was committed
    assert store.last_write_error is not None
    assert (await store.accept([sms("next")]))[0].sms_id == 1  # the id was not used up
    assert store.last_write_error is None


async def test_a_bug_in_one_operation_reaches_every_caller_of_its_batch(store: Outbox) -> None:
    def buggy(conn: sqlite3.Connection) -> None:
        raise ValueError("a bug")

    results = await asyncio.gather(
        store.accept([sms("in the same transaction")]),
        store._writer.submit(buggy),
        return_exceptions=True,
    )
    assert [type(r) for r in results] == [ValueError, ValueError]
    assert await store.list_messages() == []
    assert (await store.accept([sms("next")]))[0].sms_id == 1


async def test_closing_finishes_what_is_queued(tmp_path: Path) -> None:
    outbox = await Outbox.open(str(tmp_path / "outbox.sqlite3"), clock=lambda: T0)
    pending = [asyncio.create_task(outbox.accept([sms(f"m{i}")])) for i in range(5)]
    await asyncio.sleep(0)
    await outbox.close()
    assert [(await t)[0].sms_id for t in pending] == [1, 2, 3, 4, 5]
    with pytest.raises(StoreUnavailable):
        await outbox.accept([sms("after close")])
