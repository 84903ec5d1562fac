"""The PUSH_SMS HTTP/1.1 client: kept-alive connections to the one upstream, TLS verified.

The worker only ever POSTs to one URL, so this is all it needs: a pool of persistent
connections, a request written in one piece, and the answer parsed by httptools (llhttp, the
parser of Node.js). It replaced aiohttp's ClientSession here because that cost about 60 µs of
CPU per request against 20 µs for this one, and at full drain the request was half the
daemon's CPU (see README, "Dependencies and why"). Redirects are not followed: the contract
counts any status but 200 as a failed attempt.

An HTTP proxy named by the environment (`https_proxy`/`HTTPS_PROXY` for an https URL,
`http_proxy`/`HTTP_PROXY` for http, unless `no_proxy`/`NO_PROXY` exempts the host) is used as
curl uses it: a CONNECT tunnel with TLS to the origin inside (the origin's certificate checked as
without a proxy), or for plain http the request in absolute form to the proxy. Credentials in
the proxy URL go out as Proxy-Authorization and nowhere else.
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import re
import socket
import ssl
import time
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field

import httptools

from gateway.errors import ConfigError

# Seconds a kept-alive connection may sit unused and still be reused: below the keep-alive
# timeouts of common servers (Apache 5 s, nginx 75 s), so the server seldom closes it just as
# a request goes out. If it does, that attempt fails and is retried after retry_interval like
# any other: an immediate resend could break the retry spacing (the server may have read it).
IDLE_TIMEOUT = 4.0
DEFAULT_PORTS = {"http": 80, "https": 443}
# RFC 8305's recommended delay: an address that does not answer (a broken IPv6 route) gets
# this long before the next one is tried beside it.
HAPPY_EYEBALLS_DELAY = 0.25
PROXY_HEAD_LIMIT = 16 * 1024  # a proxy's answer to CONNECT longer than this is not one


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
    location: str | None = None  # where a redirect points (it is never followed)


@dataclass(frozen=True)
class Proxy:
    """An HTTP proxy the environment names for the upstream URL."""

    host: str
    port: int
    variable: str  # the environment variable it came from, for logs and errors
    authorization: str | None = field(default=None, repr=False)  # Proxy-Authorization value

    @property
    def address(self) -> str:
        """host:port, never the credentials: what logs and errors may show."""
        return f"{_bracketed(self.host)}:{self.port}"


def proxy_from_environment(url: str, environ: Mapping[str, str]) -> Proxy | None:
    """The proxy to reach `url` through, as curl would pick it; None for a direct connection.

    Lower-case names win over upper-case ones; an empty value counts as unset. Raises
    ConfigError naming the variable (never its value: it may hold a password) when the proxy
    cannot be used.
    """
    parts = urllib.parse.urlsplit(url)
    scheme, host = parts.scheme, parts.hostname or ""
    port = parts.port if parts.port is not None else DEFAULT_PORTS.get(scheme, 0)
    found = _first_set(environ, f"{scheme}_proxy", f"{scheme.upper()}_PROXY")
    if found is None:
        return None
    bypass = _first_set(environ, "no_proxy", "NO_PROXY")
    if bypass is not None and no_proxy_matches(bypass[1], host, port):
        return None
    return parse_proxy(*found)


def _first_set(environ: Mapping[str, str], *names: str) -> tuple[str, str] | None:
    for name in names:
        value = environ.get(name, "").strip()
        if value:
            return name, value
    return None


def parse_proxy(variable: str, value: str) -> Proxy:
    """`http://[user:password@]host[:port]` (the scheme may be left out)."""
    if "://" not in value:
        value = "http://" + value
    try:
        parts = urllib.parse.urlsplit(value)
        port = parts.port
    except ValueError:
        raise ConfigError(f"{variable}: not a proxy URL (want http://host:port)") from None
    if parts.scheme.lower() != "http":
        raise ConfigError(
            f"{variable}: {parts.scheme}:// proxies are not supported; give an http:// proxy "
            "(https upstreams go through it in a CONNECT tunnel, TLS to the upstream itself)"
        )
    host = parts.hostname
    if not host or not _printable(host):
        raise ConfigError(f"{variable}: not a proxy URL (want http://host:port)")
    authorization = None
    if parts.username is not None or parts.password is not None:
        user = urllib.parse.unquote(parts.username or "")
        password = urllib.parse.unquote(parts.password or "")
        token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
        authorization = f"Basic {token}"
    return Proxy(host, port if port is not None else 80, variable, authorization)


def _printable(text: str) -> bool:
    return text.isascii() and text.isprintable() and " " not in text


def no_proxy_matches(no_proxy: str, host: str, port: int) -> bool:
    """Whether a NO_PROXY list exempts host:port: `*`; a name, which covers its subdomains
    (`example.com`, `.example.com` and `*.example.com` alike); an IP address or network
    (`10.0.0.0/8`); any of them with `:port` to exempt that port only."""
    host = host.lower().rstrip(".")
    try:
        ip: ipaddress.IPv4Address | ipaddress.IPv6Address | None = ipaddress.ip_address(host)
    except ValueError:
        ip = None
    for entry in re.split(r"[,\s]+", no_proxy.lower()):
        if entry == "*":
            return True
        name, entry_port = _split_port(entry)
        if not name or (entry_port is not None and entry_port != port):
            continue
        if ip is not None:
            try:
                if ip in ipaddress.ip_network(name, strict=False):
                    return True
            except ValueError:
                pass
            continue
        name = name.lstrip("*").strip(".")
        if name and (host == name or host.endswith("." + name)):
            return True
    return False


def _split_port(entry: str) -> tuple[str, int | None]:
    """`name`, `name:port`, `[v6]`, `[v6]:port` or a bare IPv6 address; ("", None) if garbled."""
    if entry.startswith("["):
        name, _, rest = entry[1:].partition("]")
        if not rest:
            return name, None
        digits = rest.removeprefix(":")
        return (name, int(digits)) if rest.startswith(":") and _digits(digits) else ("", None)
    if entry.count(":") == 1:
        name, _, digits = entry.partition(":")
        return (name, int(digits)) if _digits(digits) else ("", None)
    return entry, None


def _digits(text: str) -> bool:
    return text.isascii() and text.isdigit() and len(text) <= 5


def _bracketed(host: str) -> str:
    return f"[{host}]" if ":" in host else host


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
        self._location: str | None = None

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
        name = name.lower()
        if name == b"retry-after":
            self._retry_after = value.decode("latin-1").strip()
        elif name == b"location":
            self._location = value.decode("latin-1").strip()

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
        waiter = self._waiter
        reply = Reply(self._status, bytes(self._body), self._retry_after, self._location)
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
    """POST bodies to one URL over a pool of kept-alive connections (through `proxy` if given)."""

    def __init__(
        self,
        url: str,
        headers: Mapping[str, str],
        *,
        timeout: float,
        body_limit: int,
        ssl_context: ssl.SSLContext | None = None,
        idle_timeout: float = IDLE_TIMEOUT,
        proxy: Proxy | None = None,
    ) -> None:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in DEFAULT_PORTS or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {parts.scheme}://{parts.hostname}")
        self._host = parts.hostname
        self._port = parts.port if parts.port is not None else DEFAULT_PORTS[parts.scheme]
        self._ssl: ssl.SSLContext | None = None
        if parts.scheme == "https":
            self._ssl = ssl_context or ssl.create_default_context()
        self._proxy = proxy
        netloc = parts.netloc.rpartition("@")[2]
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        lines = [f"POST {target} HTTP/1.1", f"Host: {netloc}"]
        if proxy is not None and self._ssl is None:
            # Plain http through a proxy: the request names the whole URL (absolute form).
            lines[0] = f"POST {parts.scheme}://{netloc}{target} HTTP/1.1"
            if proxy.authorization:
                lines.append(f"Proxy-Authorization: {proxy.authorization}")
        lines += [f"{k}: {v}" for k, v in headers.items()]
        self._head = ("\r\n".join(lines) + "\r\nContent-Length: ").encode("latin-1")
        self._connect_request = b""
        if proxy is not None and self._ssl is not None:
            authority = f"{_bracketed(self._host)}:{self._port}"
            tunnel = [f"CONNECT {authority} HTTP/1.1", f"Host: {authority}"]
            if proxy.authorization:
                tunnel.append(f"Proxy-Authorization: {proxy.authorization}")
            self._connect_request = ("\r\n".join(tunnel) + "\r\n\r\n").encode("latin-1")
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
        # Errors before the origin answers TLS happen at the proxy: say so (never its password).
        via = f"proxy {self._proxy.address}: " if self._proxy is not None else ""
        try:
            async with asyncio.timeout_at(deadline):
                if self._proxy is None:
                    conn = await self._open(self._host, self._port, self._ssl)
                elif self._ssl is None:
                    conn = await self._open(self._proxy.host, self._proxy.port, None)
                else:
                    conn = await self._tunnel(self._proxy, self._ssl)
        except TimeoutError as e:
            raise UpstreamError("Timeout", via.rstrip(": ")) from e
        except socket.gaierror as e:
            raise UpstreamError("DNSError", via + str(e)) from e
        except ssl.SSLCertVerificationError as e:
            raise UpstreamError("CertificateError", e.verify_message or str(e)) from e
        except ssl.SSLError as e:
            raise UpstreamError("TLSError", str(e)) from e
        except ConnectionRefusedError as e:
            raise UpstreamError("ConnectionRefused", via.rstrip(": ")) from e
        except OSError as e:
            raise UpstreamError("ConnectError", via + (e.strerror or str(e))) from e
        if self._closed:  # closed while connecting
            conn.close()
            raise UpstreamError("Disconnected", "the client is closed")
        self._all.add(conn)
        return conn

    async def _open(self, host: str, port: int, tls: ssl.SSLContext | None) -> _Connection:
        loop = asyncio.get_running_loop()
        _, conn = await loop.create_connection(
            lambda: _Connection(self._limit),
            host,
            port,
            ssl=tls,
            server_hostname=self._host if tls else None,
            happy_eyeballs_delay=HAPPY_EYEBALLS_DELAY,
        )
        return conn

    async def _tunnel(self, proxy: Proxy, tls: ssl.SSLContext) -> _Connection:
        """CONNECT through the proxy, then TLS with the origin inside the tunnel."""
        loop = asyncio.get_running_loop()
        transport, tunnel = await loop.create_connection(
            _Tunnel, proxy.host, proxy.port, happy_eyeballs_delay=HAPPY_EYEBALLS_DELAY
        )
        try:
            transport.write(self._connect_request)
            await tunnel.established(proxy)
            conn = _Connection(self._limit)
            secured = await loop.start_tls(transport, conn, tls, server_hostname=self._host)
        except BaseException:
            transport.close()
            raise
        assert secured is not None
        conn.connection_made(secured)
        return conn


class _Tunnel(asyncio.Protocol):
    """A connection to the proxy until it answers CONNECT; then the origin's TLS takes it."""

    def __init__(self) -> None:
        self._head = bytearray()
        self._answer: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    def data_received(self, data: bytes) -> None:
        if self._answer.done():
            return
        self._head += data
        end = self._head.find(b"\r\n\r\n")
        if end >= 0:
            self._answer.set_result(bytes(self._head[: end + 4]))
            del self._head[: end + 4]
        elif len(self._head) > PROXY_HEAD_LIMIT:
            self._answer.set_exception(UpstreamError("ProxyError", "no HTTP answer to CONNECT"))

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._answer.done():
            self._answer.set_exception(
                UpstreamError("ProxyError", "the proxy closed the connection without answering")
            )

    async def established(self, proxy: Proxy) -> None:
        """Wait for the proxy's answer to CONNECT; UpstreamError("ProxyError") unless a 2xx."""
        head = await self._answer
        line = head.split(b"\r\n", 1)[0].decode("latin-1")
        version, _, rest = line.partition(" ")
        status, _, reason = rest.partition(" ")
        where = f"proxy {proxy.address} ({proxy.variable})"
        if not version.startswith("HTTP/1.") or not _digits(status) or len(status) != 3:
            raise UpstreamError("ProxyError", f"{where}: not an HTTP answer to CONNECT")
        if not 200 <= int(status) < 300:
            hint = " (check the credentials in the proxy URL)" if status == "407" else ""
            raise UpstreamError(
                "ProxyError", f"{where} answered CONNECT with {status} {reason.strip()}{hint}"
            )
        if self._head:
            # The origin speaks only after our ClientHello: bytes now are the proxy's mistake.
            raise UpstreamError("ProxyError", f"{where}: unexpected bytes after its answer")
