"""Group commit: every write waiting at the same moment goes into one SQLite transaction.

With synchronous=FULL each commit costs an fsync; batching the writers that arrive while the
previous transaction is being committed keeps that cost per batch, not per message.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Generic, TypeVar

import aiosqlite
import structlog

from gateway.errors import StoreUnavailable

T = TypeVar("T")
ItemT = TypeVar("ItemT")
R = TypeVar("R")
Op = Callable[[aiosqlite.Connection], Awaitable[Any]]
log = structlog.get_logger(__name__)


class GroupWriter:
    """The one writer of the store: runs queued operations, many per transaction."""

    def __init__(self, conn: aiosqlite.Connection, *, max_batch: int = 512) -> None:
        self._conn = conn
        self._max_batch = max_batch
        self._pending: list[tuple[Op, asyncio.Future[Any]]] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.last_error: str | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="outbox-writer")

    async def stop(self) -> None:
        """Finish what is queued, then stop."""
        if self._task is None:
            return
        self._pending.append((_STOP, asyncio.get_running_loop().create_future()))
        self._wake.set()
        await self._task
        self._task = None

    async def submit(self, op: Callable[[aiosqlite.Connection], Awaitable[T]]) -> T:
        """Run `op` inside the next transaction; returns once that transaction is committed."""
        if self._task is None or self._task.done():
            raise StoreUnavailable("the store writer is not running")
        fut: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._pending.append((op, fut))
        self._wake.set()
        return await asyncio.shield(fut)

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                batch = self._pending[: self._max_batch]
                del self._pending[: self._max_batch]
                stop = any(op is _STOP for op, _ in batch)
                batch = [(op, f) for op, f in batch if op is not _STOP]
                if batch:
                    await self._commit(batch)
                if stop:
                    for _op, fut in self._pending:
                        fut.set_exception(StoreUnavailable("the store is closing"))
                    return

    async def _commit(self, batch: list[tuple[Op, asyncio.Future[Any]]]) -> None:
        results: list[Any] = []
        try:
            await self._conn.execute("BEGIN IMMEDIATE")
            for op, _ in batch:
                results.append(await op(self._conn))
            await self._conn.commit()
        except (sqlite3.Error, OSError) as e:
            await self._rollback()
            self.last_error = f"{e.__class__.__name__}: {e}"
            log.error("store.commit_failed", error=self.last_error, batch=len(batch))
            for _, fut in batch:
                if not fut.done():
                    fut.set_exception(StoreUnavailable(f"the store cannot commit: {e}"))
            return
        except BaseException as e:
            # A bug in one operation: nothing of the batch was committed; every caller hears why.
            await self._rollback()
            for _, fut in batch:
                if not fut.done():
                    fut.set_exception(e)
            if not isinstance(e, Exception):
                raise
            return
        self.last_error = None
        for (_, fut), result in zip(batch, results, strict=True):
            if not fut.done():
                fut.set_result(result)

    async def _rollback(self) -> None:
        try:
            if self._conn.in_transaction:
                await self._conn.rollback()
        except sqlite3.Error as e:
            log.error("store.rollback_failed", error=str(e))


class Coalescer(Generic[ItemT, R]):
    """Callers that arrive while a transaction is pending share one operation over all items.

    `process(conn, items)` returns one result per item, in order; each caller gets its slice.
    One statement for a thousand callers instead of a thousand statements.
    """

    def __init__(
        self,
        writer: GroupWriter,
        process: Callable[[aiosqlite.Connection, list[ItemT]], Awaitable[list[R]]],
        name: str,
    ) -> None:
        self._writer = writer
        self._process = process
        self._name = name
        self._waiting: list[tuple[Sequence[ItemT], asyncio.Future[list[R]]]] = []
        self._flush: asyncio.Task[None] | None = None

    async def submit(self, items: Sequence[ItemT]) -> list[R]:
        fut: asyncio.Future[list[R]] = asyncio.get_running_loop().create_future()
        self._waiting.append((items, fut))
        if self._flush is None or self._flush.done():
            self._flush = asyncio.create_task(self._run(), name=self._name)
        return await asyncio.shield(fut)

    async def _run(self) -> None:
        taken: list[tuple[Sequence[ItemT], asyncio.Future[list[R]]]] = []

        async def op(conn: aiosqlite.Connection) -> list[R]:
            # Everything waiting when the transaction starts joins it; later callers start
            # the next flush.
            taken.extend(self._waiting)
            self._waiting.clear()
            self._flush = None
            return await self._process(conn, [item for items, _ in taken for item in items])

        try:
            results = await self._writer.submit(op)
        except Exception as e:
            waiting = taken or self._waiting
            for _, fut in waiting:
                if not fut.done():
                    fut.set_exception(e)
            if not taken:
                self._waiting.clear()
            return
        start = 0
        for items, fut in taken:
            if not fut.done():
                fut.set_result(results[start : start + len(items)])
            start += len(items)


async def _stop_marker(conn: aiosqlite.Connection) -> None:  # pragma: no cover - never run
    return None


_STOP: Op = _stop_marker
