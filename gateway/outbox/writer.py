"""Group commit: every write waiting at the same moment goes into one SQLite transaction.

With synchronous=FULL each commit costs an fsync; batching the writers that arrive while the
previous transaction is being committed keeps that cost per batch, not per message. A batch
runs as one call on the connection's own thread (BEGIN, every operation, COMMIT): a round trip
between threads costs about as much CPU as a small INSERT, and one per statement would cost
more than the statements.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import aiosqlite
import structlog

from gateway.errors import StoreUnavailable

T = TypeVar("T")
ItemT = TypeVar("ItemT")
R = TypeVar("R")
Op = Callable[[sqlite3.Connection], Any]
"""An operation: runs on the store's thread, inside the transaction, with the plain connection."""
log = structlog.get_logger(__name__)


@dataclass(slots=True)
class _Pending:
    op: Callable[..., Any] | None  # (conn) or, with items, (conn, items); None: the stop marker
    items: Sequence[Any] | None
    fut: asyncio.Future[Any]


class GroupWriter:
    """The one writer of the store: runs queued operations, many per transaction."""

    def __init__(self, conn: aiosqlite.Connection, *, max_batch: int = 512) -> None:
        self._conn = conn
        self._max_batch = max_batch
        self._pending: list[_Pending] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.last_error: str | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="outbox-writer")

    async def stop(self) -> None:
        """Finish what is queued, then stop."""
        if self._task is None:
            return
        self._pending.append(_Pending(None, None, asyncio.get_running_loop().create_future()))
        self._wake.set()
        await self._task
        self._task = None

    async def submit(self, op: Callable[[sqlite3.Connection], T]) -> T:
        """Run `op` inside the next transaction; returns once that transaction is committed."""
        return cast(T, await self._enqueue(op, None))

    async def submit_items(
        self, process: Callable[[sqlite3.Connection, list[ItemT]], list[R]], items: Sequence[ItemT]
    ) -> list[R]:
        """Like submit, but callers of the same `process` in one transaction share one call.

        `process(conn, items)` returns one result per item, in order; each caller gets the
        results of its own items. One statement for a thousand callers, not a thousand.
        """
        return cast(list[R], await self._enqueue(process, items))

    async def _enqueue(self, op: Callable[..., Any], items: Sequence[Any] | None) -> Any:
        if self._task is None or self._task.done():
            raise StoreUnavailable("the store writer is not running")
        # The caller's own future: a caller cancelled while waiting (its client went away)
        # cancels only that future; the batch goes on and every other caller hears of it.
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending.append(_Pending(op, items, fut))
        self._wake.set()
        return await fut

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                # One turn of the event loop first: requests that arrived in the same read
                # as the one that woke us are parsed and join this batch (a few microseconds)
                # instead of paying an fsync of their own in the next.
                await asyncio.sleep(0)
                batch = self._pending[: self._max_batch]
                del self._pending[: self._max_batch]
                stop = any(p.op is None for p in batch)
                batch = [p for p in batch if p.op is not None]
                if batch:
                    await self._commit(batch)
                if stop:
                    for p in self._pending:
                        if not p.fut.done():  # (a caller that gave up cancelled its own)
                            p.fut.set_exception(StoreUnavailable("the store is closing"))
                    return

    async def _commit(self, batch: list[_Pending]) -> None:
        # Plan on the event loop: merge the item lists of each `process` into one call, at the
        # place of its first caller; remember which results go to whom.
        steps: list[Op] = []
        merged: dict[Callable[..., Any], tuple[int, list[Any]]] = {}
        routes: list[tuple[int, slice | None]] = []
        for p in batch:
            assert p.op is not None
            if p.items is None:
                routes.append((len(steps), None))
                steps.append(p.op)
                continue
            slot = merged.get(p.op)
            if slot is None:
                slot = merged[p.op] = (len(steps), [])
                steps.append(_with_items(p.op, slot[1]))
            index, items = slot
            routes.append((index, slice(len(items), len(items) + len(p.items))))
            items.extend(p.items)
        try:
            results = await _in_thread(self._conn, lambda conn: _transaction(conn, steps))
        except (sqlite3.Error, OSError) as e:
            self.last_error = f"{e.__class__.__name__}: {e}"
            log.error("store.commit_failed", error=self.last_error, batch=len(batch))
            for p in batch:
                if not p.fut.done():
                    p.fut.set_exception(StoreUnavailable(f"the store cannot commit: {e}"))
            return
        except BaseException as e:
            # A bug in one operation: nothing of the batch was committed; every caller hears why.
            for p in batch:
                if not p.fut.done():
                    p.fut.set_exception(e)
            if not isinstance(e, Exception):
                raise
            return
        self.last_error = None
        for p, (index, part) in zip(batch, routes, strict=True):
            if not p.fut.done():
                p.fut.set_result(results[index] if part is None else results[index][part])


def _with_items(process: Callable[[sqlite3.Connection, list[Any]], Any], items: list[Any]) -> Op:
    return lambda conn: process(conn, items)


def _transaction(conn: sqlite3.Connection, steps: list[Op]) -> list[Any]:
    """BEGIN, every step, COMMIT; on any failure roll back and raise. On the store's thread."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        results = [step(conn) for step in steps]
        conn.commit()
    except BaseException:
        try:
            if conn.in_transaction:
                conn.rollback()
        except sqlite3.Error as e:
            log.error("store.rollback_failed", error=str(e))
        raise
    return results


async def _in_thread(conn: aiosqlite.Connection, fn: Callable[[sqlite3.Connection], T]) -> T:
    """Run `fn` on aiosqlite's thread with its sqlite3 connection, in one round trip.

    aiosqlite has no public call for a whole function; `_execute` (queue a callable on the
    connection's thread) and `_conn` have been there unchanged since 0.17. The tests of the
    outbox run every operation through here.
    """
    proxy: Any = conn
    return cast(T, await proxy._execute(lambda: fn(proxy._conn)))
