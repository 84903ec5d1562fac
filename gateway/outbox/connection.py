"""One SQLite connection and the one thread that uses it, so the event loop never waits on disk.

A whole unit of work (a transaction: BEGIN, every statement, COMMIT) is one call on the thread:
a round trip between threads costs about as much CPU as a small INSERT, so one per statement
would cost more than the statements. Plain `sqlite3` and a thread of our own replace aiosqlite,
whose only call for a whole function is private.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import queue
import sqlite3
import threading
from collections.abc import Callable
from typing import Any, TypeVar, cast

T = TypeVar("T")
_STOP = object()


class StoreConnection:
    """A sqlite3 connection living on its own thread; `call(fn)` runs `fn(conn)` there."""

    def __init__(self, path: str, name: str) -> None:
        self.path = path
        self._calls: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._conn: sqlite3.Connection | None = None
        # A daemon thread: a connection somebody forgot to close must never keep the process
        # alive after its work is done (a hook or `status` hanging forever on a bad store).
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._closed = False

    @classmethod
    async def open(
        cls,
        path: str,
        *,
        name: str,
        readonly: bool = False,
        setup: Callable[..., Any] | None = None,
    ) -> StoreConnection:
        """Connect on a new thread and run `setup(conn)` there; on any failure, nothing is left
        open (no connection, no thread)."""
        self = cls(path, name)
        self._thread.start()
        try:
            await self.call(lambda _: self._connect(readonly))
            if setup is not None:
                await self.call(setup)
        except BaseException:
            await self.close()
            raise
        return self

    def _connect(self, readonly: bool) -> None:
        if readonly:
            uri = "file:" + _uri_path(self.path) + "?mode=ro"
            self._conn = sqlite3.connect(
                uri, uri=True, isolation_level=None, check_same_thread=False
            )
        else:
            self._conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)

    async def call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn(conn)` on the connection's thread and return what it returns (or raise)."""
        if self._closed:
            raise sqlite3.ProgrammingError("the store connection is closed")
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        self._calls.put((fn, fut, loop))
        return cast(T, await fut)

    async def close(self) -> None:
        """Close the connection and end its thread (waits for calls already queued)."""
        if self._closed:
            return
        self._closed = True
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        self._calls.put((_STOP, fut, loop))
        await fut
        self._thread.join()  # it has nothing left to do but return

    def _serve(self) -> None:
        while True:
            fn, fut, loop = self._calls.get()
            if fn is _STOP:
                if self._conn is not None:
                    # Closing anyway: a commit is whole or absent in the file (WAL).
                    with contextlib.suppress(sqlite3.Error):
                        self._conn.close()
                    self._conn = None
                loop.call_soon_threadsafe(_settle, fut, None, None)
                return
            try:
                result = fn(cast(sqlite3.Connection, self._conn))
            except BaseException as e:  # handed to the caller, whatever it is
                loop.call_soon_threadsafe(_settle, fut, None, e)
            else:
                loop.call_soon_threadsafe(_settle, fut, result, None)


def _settle(fut: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if fut.done():  # the caller was cancelled meanwhile
        return
    if error is not None:
        fut.set_exception(error)
    else:
        fut.set_result(result)


def _uri_path(path: str) -> str:
    """A file path as a SQLite URI path (absolute, '?' and '#' escaped)."""
    absolute = os.path.abspath(path)
    return absolute.replace("%", "%25").replace("?", "%3f").replace("#", "%23")
