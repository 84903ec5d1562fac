"""Connection guard for the HTTP listener: `allow` and a connection cap at accept time, and a
deadline for each request's head and body, which aiohttp does not have.

aiohttp's server (`web.Server`) is an asyncio protocol factory; `ConnectionGuard` wraps it.
Each accepted connection first meets `_Guarded.connection_made`: a peer outside `allow`, or
one beyond the cap, is aborted there, before a byte is read. Otherwise a timer runs from the
first byte of a request; the app's middleware (`middleware`) stops it once the head has
arrived and the body has been read. A client that stops in the middle (half-open connections
held by the thousand) is cut off when its deadline passes. Idle kept-alive connections are
aiohttp's own `keepalive_timeout`; the deadline only backs it up.

Deadlines are times on each connection, checked by one sweep per listener (a few times per
`request_timeout`, only while connections are open), not a timer per request: arming and
cancelling two timers per request cost more than a small request's handler.
"""

from __future__ import annotations

import asyncio
import os
import resource
from collections.abc import Awaitable, Callable, Sequence
from typing import cast

import structlog
from aiohttp import web
from aiohttp.typedefs import Middleware

from gateway.auth import address_allowed, parse_networks
from gateway.logs import RateLimit

log = structlog.get_logger(__name__)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# Descriptors kept free for everything that is not an HTTP client: the store (database, WAL,
# shared memory, read connection, lock), sources, sd_notify, logs, Python's own. The upstream
# client's connections (`upstream.concurrency`) come on top.
FD_RESERVE = 64


def connection_cap(max_connections: int, *, reserve: int) -> tuple[int, int, int]:
    """(cap, open file limit, descriptors already open): `max_connections`, but never so many
    that the HTTP clients could take the descriptors the store and the upstream client need."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        open_now = len(os.listdir("/proc/self/fd"))
    except OSError:
        open_now = 16
    if soft == resource.RLIM_INFINITY:
        return max_connections, soft, open_now
    return max(1, min(max_connections, soft - open_now - reserve)), soft, open_now


class ConnectionGuard:
    """The protocol factory given to `loop.create_server`; counts and polices connections."""

    def __init__(
        self,
        *,
        allow: Sequence[str],
        max_connections: int,
        request_timeout: float,
        keepalive_timeout: float,
        max_body: int,
        table: str = "http",  # the config table whose keys these are (in log lines)
    ) -> None:
        self.table = table
        self.factory: Callable[[], asyncio.Protocol] | None = None  # aiohttp's, once set up
        self._allow = parse_networks(allow)  # the one allow rule: gateway.auth
        self.max_connections = max_connections
        self.max_body = max_body
        self.request_timeout = request_timeout
        self.idle_timeout = keepalive_timeout + request_timeout  # aiohttp's keep-alive closes first
        self._by_transport: dict[asyncio.BaseTransport, _Guarded] = {}
        self._limit = RateLimit()
        # The sweep's period: deadlines are met within it.
        self.sweep_every = min(1.0, request_timeout / 4, self.idle_timeout / 4)
        self._sweep: asyncio.TimerHandle | None = None

    @property
    def open(self) -> int:
        return len(self._by_transport)

    def __call__(self) -> asyncio.Protocol:
        return _Guarded(self)

    def middleware(self) -> Middleware:
        """Stops the request's timer once its head and body are in, and starts the idle one
        after the answer. Bodies are read here, under the deadline, before any handler runs."""

        @web.middleware
        async def deadline(request: web.Request, handler: Handler) -> web.StreamResponse:
            conn = self._by_transport.get(request.transport) if request.transport else None
            length = request.content_length
            if request.body_exists and (length is None or length <= self.max_body):
                # Over the limit: the handler answers 413 without reading.
                await request.read()  # cached: the handler's read() gets the same bytes
            if conn is not None:
                conn.request_read()
            try:
                return await handler(request)
            finally:
                if conn is not None:
                    conn.answered()

        return deadline

    # -- for _Guarded -----------------------------------------------------------------------

    def admit(self, conn: _Guarded, transport: asyncio.BaseTransport) -> bool:
        peer = transport.get_extra_info("peername")
        host = peer[0] if isinstance(peer, tuple) and peer else None
        if not address_allowed(self._allow, host):
            self._refused(f"not in {self.table}.allow", host)
            return False
        if len(self._by_transport) >= self.max_connections:
            self._refused("max_connections reached", host)
            return False
        self._by_transport[transport] = conn
        if self._sweep is None:
            loop = asyncio.get_running_loop()
            self._sweep = loop.call_later(self.sweep_every, self._check_deadlines)
        return True

    def gone(self, transport: asyncio.BaseTransport) -> None:
        self._by_transport.pop(transport, None)
        if not self._by_transport and self._sweep is not None:
            self._sweep.cancel()
            self._sweep = None

    def _check_deadlines(self) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        for conn in list(self._by_transport.values()):
            if conn.deadline is not None and now >= conn.deadline:
                conn.expire()
        self._sweep = (
            loop.call_later(self.sweep_every, self._check_deadlines) if self._by_transport else None
        )

    def _refused(self, reason: str, host: str | None) -> None:
        held = self._limit.take(("refused", reason))
        if held is not None:
            log.warning(
                "http.connection_refused",
                listener=self.table,
                reason=reason,
                peer=host,
                open=len(self._by_transport),
                max_connections=self.max_connections,
                not_logged_before=held,
            )

    def timed_out(self, host: str | None, idle: bool) -> None:
        held = self._limit.take(("timeout", idle))
        if held is not None:
            log.warning(
                "http.idle_connection_closed" if idle else "http.request_timeout",
                listener=self.table,
                peer=host,
                timeout=self.idle_timeout if idle else self.request_timeout,
                not_logged_before=held,
            )


class _Guarded(asyncio.Protocol):
    """One connection: aiohttp's protocol inside, a deadline around it."""

    def __init__(self, guard: ConnectionGuard) -> None:
        self._guard = guard
        self._inner: asyncio.Protocol | None = None
        self._transport: asyncio.Transport | None = None
        self.deadline: float | None = None  # loop time; the listener's sweep enforces it
        self._host: str | None = None
        self._idle = False  # between an answer and the next request's first byte

    def connection_made(self, base: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, base)  # a TCP server's transports are
        if not self._guard.admit(self, transport):
            transport.abort()  # before any read; connection_lost follows, inner never knew
            return
        self._transport = transport
        peer = transport.get_extra_info("peername")
        self._host = peer[0] if isinstance(peer, tuple) and peer else None
        assert self._guard.factory is not None, "ConnectionGuard.factory is set before listening"
        self._inner = self._guard.factory()
        self._arm(self._guard.request_timeout, idle=False)
        self._inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self._inner is None:
            return
        if self._idle:  # the first byte of the next request: its head and body have a deadline
            self._arm(self._guard.request_timeout, idle=False)
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received() if self._inner is not None else None

    def pause_writing(self) -> None:
        if self._inner is not None:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._inner is not None:
            self._inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel()
        if self._transport is not None:
            self._guard.gone(self._transport)
        if self._inner is not None:
            self._inner.connection_lost(exc)

    def request_read(self) -> None:
        """The head and the body are in: the handler's time is not the client's."""
        self._cancel()

    def answered(self) -> None:
        self._arm(self._guard.idle_timeout, idle=True)

    def _arm(self, after: float, *, idle: bool) -> None:
        self._idle = idle
        self.deadline = asyncio.get_running_loop().time() + after

    def _cancel(self) -> None:
        self.deadline = None
        self._idle = False

    def expire(self) -> None:
        """Past the deadline: cut the connection off."""
        idle = self._idle
        self.deadline = None
        self._guard.timed_out(self._host, idle)
        if self._transport is not None:
            self._transport.abort()
