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
    assert store._conn is not None
    await store._conn.call(lambda conn: conn.set_trace_callback(seen.append))
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


async def test_a_bad_message_fails_alone_and_the_rest_of_its_batch_is_stored(
    store: Outbox,
) -> None:
    bad = Incoming("http", "7900\ud800", "Instagram", "lone surrogate in the phone", T0)
    results = await asyncio.gather(
        *(store.accept([sms(f"good {i}")]) for i in range(10)),
        store.accept([bad]),
        *(store.accept([sms(f"good {i}")]) for i in range(10, 20)),
        return_exceptions=True,
    )
    assert isinstance(results[10], UnicodeEncodeError), results[10]
    good = results[:10] + results[11:]
    assert [r[0].sms_id for r in good] == list(range(1, 21))  # type: ignore[index]
    stored = await store.list_messages(limit=100)
    assert sorted(m.text for m in stored) == sorted(f"good {i}" for i in range(20))
    assert store.last_write_error is None  # the store itself is fine


async def test_a_failed_statement_fails_only_its_caller_and_the_writer_goes_on(
    store: Outbox,
) -> None:
    def broken(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO no_such_table VALUES (1)")

    results = await asyncio.gather(
        store.accept([sms("in the same transaction")]),
        store._write.submit(broken),
        return_exceptions=True,
    )
    assert [a.sms_id for a in results[0]] == [1]  # type: ignore[union-attr]
    assert isinstance(results[1], sqlite3.OperationalError)
    assert [m.text for m in await store.list_messages()] == ["in the same transaction"]
    assert (await store.accept([sms("next")]))[0].sms_id == 2


async def test_a_bug_in_one_operation_reaches_only_its_caller(store: Outbox) -> None:
    def buggy(conn: sqlite3.Connection) -> None:
        conn.execute("UPDATE id_sequence SET last_seq = last_seq + 1000")  # undone with it
        raise ValueError("a bug")

    results = await asyncio.gather(
        store.accept([sms("in the same transaction")]),
        store._write.submit(buggy),
        return_exceptions=True,
    )
    assert [type(r) for r in results] == [list, ValueError]
    assert [m.sms_id for m in await store.list_messages()] == [1]
    assert (await store.accept([sms("next")]))[0].sms_id == 2


async def test_a_store_fault_still_fails_the_whole_batch(tmp_path: Path) -> None:
    path = str(tmp_path / "outbox.sqlite3")
    outbox = await Outbox.open(path, clock=lambda: T0, busy_timeout_ms=50)
    other = sqlite3.connect(path, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")  # another writer holds the lock past the busy timeout
        results = await asyncio.gather(
            *(outbox.accept([sms(f"m{i}")]) for i in range(5)), return_exceptions=True
        )
        assert all(isinstance(r, StoreUnavailable) for r in results), results
        assert outbox.last_write_error is not None
        assert "locked" in outbox.last_write_error
        other.execute("ROLLBACK")
        assert (await outbox.accept([sms("next")]))[0].sms_id == 1  # no id was used up
        assert outbox.last_write_error is None
    finally:
        other.close()
        await outbox.close()


async def test_closing_finishes_what_is_queued(tmp_path: Path) -> None:
    outbox = await Outbox.open(str(tmp_path / "outbox.sqlite3"), clock=lambda: T0)
    pending = [asyncio.create_task(outbox.accept([sms(f"m{i}")])) for i in range(5)]
    await asyncio.sleep(0)
    await outbox.close()
    assert [(await t)[0].sms_id for t in pending] == [1, 2, 3, 4, 5]
    with pytest.raises(StoreUnavailable):
        await outbox.accept([sms("after close")])
