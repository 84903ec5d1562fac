"""Group commit: every write waiting at the same moment goes into one SQLite transaction.

With synchronous=FULL each commit costs an fsync; batching the writers that arrive while the
previous transaction is being committed keeps that cost per batch, not per message. A batch
runs as one call on the connection's own thread (BEGIN, every operation, COMMIT): a round trip
between threads costs about as much CPU as a small INSERT, and one per statement would cost
more than the statements. One bad operation fails alone: if it raises and the store is not at
fault, the batch runs again with every caller in a savepoint of its own.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import structlog

from gateway.errors import StoreUnavailable
from gateway.outbox.connection import StoreConnection

T = TypeVar("T")
ItemT = TypeVar("ItemT")
R = TypeVar("R")
Op = Callable[[sqlite3.Connection], Any]
"""An operation: runs on the store's thread, inside the transaction, with the plain connection."""
log = structlog.get_logger(__name__)
# Primary SQLite result codes that mean the store, not one operation, is at fault.
_FAULT_CODES = frozenset(
    {
        sqlite3.SQLITE_PERM,
        sqlite3.SQLITE_ABORT,
        sqlite3.SQLITE_BUSY,
        sqlite3.SQLITE_LOCKED,
        sqlite3.SQLITE_NOMEM,
        sqlite3.SQLITE_READONLY,
        sqlite3.SQLITE_INTERRUPT,
        sqlite3.SQLITE_IOERR,
        sqlite3.SQLITE_CORRUPT,
        sqlite3.SQLITE_FULL,
        sqlite3.SQLITE_CANTOPEN,
        sqlite3.SQLITE_PROTOCOL,
        sqlite3.SQLITE_NOTADB,
    }
)


@dataclass(slots=True)
class _Pending:
    op: Callable[..., Any] | None  # (conn) or, with items, (conn, items); None: the stop marker
    items: Sequence[Any] | None
    fut: asyncio.Future[Any]


class GroupWriter:
    """The one writer of the store: runs queued operations, many per transaction."""

    def __init__(self, conn: StoreConnection, *, max_batch: int = 512) -> None:
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
        try:
            outcomes = await self._conn.call(lambda conn: _run_batch(conn, batch))
        except (sqlite3.Error, OSError) as e:
            # A fault of the store itself (disk full, I/O error, locked, damaged): nothing of
            # the batch was stored, and every caller may send again later.
            self.last_error = f"{e.__class__.__name__}: {e}"
            log.error("store.commit_failed", error=self.last_error, batch=len(batch))
            for p in batch:
                if not p.fut.done():
                    p.fut.set_exception(StoreUnavailable(f"the store cannot commit: {e}"))
            return
        except BaseException as e:
            for p in batch:
                if not p.fut.done():
                    p.fut.set_exception(e)
            raise
        self.last_error = None
        for p, (ok, value) in zip(batch, outcomes, strict=True):
            if p.fut.done():
                continue
            if ok:
                p.fut.set_result(value)
            else:
                p.fut.set_exception(value)


def is_store_fault(e: BaseException) -> bool:
    """A fault of the store or its disk (every write would fail), not of one operation."""
    if isinstance(e, OSError):
        return True
    if not isinstance(e, sqlite3.Error):
        return False
    code = getattr(e, "sqlite_errorcode", None)
    return code is None or code & 0xFF in _FAULT_CODES


def _run_batch(conn: sqlite3.Connection, batch: list[_Pending]) -> list[tuple[bool, Any]]:
    """One transaction for the batch; each caller's result or exception. On the store's thread.

    The fast path runs the batch as planned (item lists merged). If one operation fails and the
    store is not at fault, the batch runs again, every caller alone in a savepoint, so the
    failing one fails alone and the others are committed (still one commit, one fsync).
    """
    try:
        steps, routes = _plan(batch)
        results = _transaction(conn, steps)
    except Exception as e:
        if is_store_fault(e):
            raise
        return _transaction_isolated(conn, batch)
    return [
        (True, results[index] if part is None else results[index][part]) for index, part in routes
    ]


def _plan(batch: list[_Pending]) -> tuple[list[Op], list[tuple[int, slice | None]]]:
    """Merge the item lists of each `process` into one call, at the place of its first caller;
    remember which results go to whom."""
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
    return steps, routes


def _with_items(process: Callable[[sqlite3.Connection, list[Any]], Any], items: list[Any]) -> Op:
    return lambda conn: process(conn, items)


def _transaction(conn: sqlite3.Connection, steps: list[Op]) -> list[Any]:
    """BEGIN, every step, COMMIT; on any failure roll back and raise. On the store's thread."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        results = [step(conn) for step in steps]
        conn.commit()
    except BaseException:
        _rollback(conn)
        raise
    return results


def _transaction_isolated(
    conn: sqlite3.Connection, batch: list[_Pending]
) -> list[tuple[bool, Any]]:
    """Every caller in a savepoint of its own: a failing one is rolled back alone."""
    outcomes: list[tuple[bool, Any]] = []
    conn.execute("BEGIN IMMEDIATE")
    try:
        for p in batch:
            assert p.op is not None
            op = p.op if p.items is None else _with_items(p.op, list(p.items))
            conn.execute("SAVEPOINT member")
            try:
                outcomes.append((True, op(conn)))
            except Exception as e:
                if is_store_fault(e):
                    raise
                conn.execute("ROLLBACK TO member")
                outcomes.append((False, e))
                log.warning("store.write_refused", error=f"{e.__class__.__name__}: {e}")
            conn.execute("RELEASE member")
        conn.commit()
    except BaseException:
        _rollback(conn)
        raise
    return outcomes


def _rollback(conn: sqlite3.Connection) -> None:
    try:
        if conn.in_transaction:
            conn.rollback()
    except sqlite3.Error as e:
        log.error("store.rollback_failed", error=str(e))
