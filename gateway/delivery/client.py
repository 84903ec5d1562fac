"""The PUSH_SMS HTTP/1.1 client: kept-alive connections to the one upstream, TLS verified.

The worker only ever POSTs to one URL, so this is all it needs: a pool of persistent
connections, a request written in one piece, and the answer parsed by httptools (llhttp, the
parser of Node.js). It replaced aiohttp's ClientSession here because that cost about 60 µs of
CPU per request against 20 µs for this one, and at full drain the request was half the
daemon's CPU (see README, "Dependencies and why"). Redirects are not followed: the contract
counts any status but 200 as a failed attempt.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass

import httptools

# Seconds a kept-alive connection may sit unused and still be reused: below the keep-alive
# timeouts of common servers (Apache 5 s, nginx 75 s), so the server seldom closes it just as
# a request goes out. If it does, that attempt fails and is retried after retry_interval like
# any other: an immediate resend could break the retry spacing (the server may have read it).
IDLE_TIMEOUT = 4.0
DEFAULT_PORTS = {"http": 80, "https": 443}


class UpstreamError(Exception):
    """No usable HTTP answer. `kind` is the short class recorded with the attempt."""

    def __init__(self, kind: str, detail: str = "") -> None:
        super().__init__(f"{kind}: {detail}" if detail else kind)
        self.kind = kind
        self.detail = detail


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    body: bytes  # at most body_limit + 1 bytes: one more than kept tells "it was cut"
    retry_after: str | None


class _Connection(asyncio.Protocol):
    """One connection; one request at a time, answered in order."""

    def __init__(self, body_limit: int) -> None:
        self._limit = body_limit + 1
        self._parser = httptools.HttpResponseParser(self)
        self._transport: asyncio.Transport | None = None
        self._waiter: asyncio.Future[Reply] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._got_bytes = False  # anything at all came back for the request out now
        self._reset()
        self.closed = False
        self.idle_since = time.monotonic()

    def _reset(self) -> None:
        self._status = 0
        self._body = bytearray()
        self._retry_after: str | None = None

    # -- asyncio.Protocol --------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        if self._waiter is None:
            # Bytes nobody asked for: the parser's state can no longer be trusted.
            self.close()
            return
        self._got_bytes = True
        try:
            self._parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as e:
            self._status = 0  # nothing usable came
            reason = e.__context__ if isinstance(e, httptools.HttpParserCallbackError) else e
            self._fail(UpstreamError("BadResponse", str(reason) or e.__class__.__name__))
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._status:
            # An answer whose body runs to the end of the connection (or was cut short):
            # the status line is what counts.
            self._complete()
        else:
            self._fail(UpstreamError("Disconnected" if not self._got_bytes else "BadResponse"))

    # -- httptools callbacks -------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() == b"retry-after":
            self._retry_after = value.decode("latin-1").strip()

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        if status < 100:
            raise ValueError(f"status {status:03d} is not an HTTP status")
        self._status = status

    def on_body(self, body: bytes) -> None:
        room = self._limit - len(self._body)
        if room > 0:
            self._body += body[:room]

    def on_message_complete(self) -> None:
        if 100 <= self._status < 200:  # 100 Continue and friends: the answer is still to come
            self._reset()
            return
        keep = self._parser.should_keep_alive()
        self._complete()
        if not keep:
            self.close()

    # -- use ------------------------------------------------------------------------------

    def _complete(self) -> None:
        waiter, reply = self._waiter, Reply(self._status, bytes(self._body), self._retry_after)
        self._waiter = None
        self._stop_timer()
        self._reset()
        if waiter is None:
            self.close()  # an answer nobody asked for: the connection is out of step
        elif not waiter.done():
            waiter.set_result(reply)

    def _fail(self, error: UpstreamError) -> None:
        waiter, self._waiter = self._waiter, None
        self._stop_timer()
        self._reset()
        if waiter is not None and not waiter.done():
            waiter.set_exception(error)

    @property
    def busy(self) -> bool:
        """A request is out and unanswered (after a timeout or cancel: never reuse it)."""
        return self._waiter is not None

    async def exchange(self, request: bytes, deadline: float) -> Reply:
        """Send one request; its answer, or UpstreamError("Timeout") at `deadline` (loop time)."""
        assert self._transport is not None
        assert self._waiter is None
        if self.closed or self._transport.is_closing():
            raise UpstreamError("Disconnected")
        loop = asyncio.get_running_loop()
        self._waiter = loop.create_future()
        self._got_bytes = False
        self._timer = loop.call_at(deadline, self._timed_out)
        self._transport.write(request)
        return await self._waiter

    def _timed_out(self) -> None:
        self._timer = None
        self._fail(UpstreamError("Timeout"))
        self.close()  # an answer may still come: this connection can never be reused

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def close(self) -> None:
        self.closed = True
        if self._transport is not None:
            self._transport.close()


class UpstreamClient:
    """POST bodies to one URL over a pool of kept-alive connections."""

    def __init__(
        self,
        url: str,
        headers: Mapping[str, str],
        *,
        timeout: float,
        body_limit: int,
        ssl_context: ssl.SSLContext | None = None,
        idle_timeout: float = IDLE_TIMEOUT,
    ) -> None:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in DEFAULT_PORTS or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {parts.scheme}://{parts.hostname}")
        self._host = parts.hostname
        self._port = parts.port if parts.port is not None else DEFAULT_PORTS[parts.scheme]
        self._ssl: ssl.SSLContext | None = None
        if parts.scheme == "https":
            self._ssl = ssl_context or ssl.create_default_context()
        netloc = parts.netloc.rpartition("@")[2]
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        lines = [f"POST {target} HTTP/1.1", f"Host: {netloc}"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        self._head = ("\r\n".join(lines) + "\r\nContent-Length: ").encode("latin-1")
        self._timeout = timeout
        self._limit = body_limit
        self._idle_timeout = idle_timeout
        self._idle: list[_Connection] = []
        self._all: set[_Connection] = set()
        self._closed = False

    async def post(self, body: bytes) -> Reply:
        """One attempt. Raises UpstreamError when there is no HTTP answer to record."""
        request = b"%b%d\r\n\r\n%b" % (self._head, len(body), body)
        deadline = asyncio.get_running_loop().time() + self._timeout
        conn: _Connection | None = None
        try:
            conn = await self._acquire(deadline)
            return await conn.exchange(request, deadline)
        finally:
            # Anything but a clean answer (timeout, cancel, error) leaves the connection closed.
            if conn is not None:
                self._release(conn)

    async def close(self) -> None:
        self._closed = True
        for conn in list(self._all):
            conn.close()
        self._all.clear()
        self._idle.clear()
        await asyncio.sleep(0)  # let the transports finish closing

    # -- the pool ---------------------------------------------------------------------------

    async def _acquire(self, deadline: float) -> _Connection:
        now = time.monotonic()
        while self._idle:
            conn = self._idle.pop()
            if not conn.closed and now - conn.idle_since < self._idle_timeout:
                return conn
            self._drop(conn)
        return await self._connect(deadline)

    def _release(self, conn: _Connection) -> None:
        if conn.closed or conn.busy:
            self._drop(conn)
            return
        conn.idle_since = time.monotonic()
        self._idle.append(conn)

    def _drop(self, conn: _Connection) -> None:
        conn.close()
        self._all.discard(conn)

    async def _connect(self, deadline: float) -> _Connection:
        if self._closed:
            raise UpstreamError("Disconnected", "the client is closed")
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout_at(deadline):
                _, conn = await loop.create_connection(
                    lambda: _Connection(self._limit),
                    self._host,
                    self._port,
                    ssl=self._ssl,
                    server_hostname=self._host if self._ssl else None,
                )
        except TimeoutError:
            raise UpstreamError("Timeout") from None
        except socket.gaierror as e:
            raise UpstreamError("DNSError", str(e)) from None
        except ssl.SSLCertVerificationError as e:
            raise UpstreamError("CertificateError", e.verify_message or str(e)) from None
        except ssl.SSLError as e:
            raise UpstreamError("TLSError", str(e)) from None
        except ConnectionRefusedError:
            raise UpstreamError("ConnectionRefused") from None
        except OSError as e:
            raise UpstreamError("ConnectError", e.strerror or str(e)) from None
        if self._closed:  # closed while connecting
            conn.close()
            raise UpstreamError("Disconnected", "the client is closed")
        self._all.add(conn)
        return conn
