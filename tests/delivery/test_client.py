"""The PUSH_SMS HTTP/1.1 client against real servers on 127.0.0.1.

aiohttp servers (the stand-in upstream and a recording one) check what a well-behaved upstream
sees; raw asyncio servers write scripted bytes to check how the client takes what a badly
behaved one sends. Connections are counted on the server side.
"""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest
import trustme
from aiohttp import web
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.delivery.client import Reply, UpstreamClient, UpstreamError
from gateway.play.standin import Answer, StandIn

HEADERS = {
    "Content-Type": "application/json; charset=utf-8",
    "User-Agent": "partner-sms-gateway/test",
    "Authorization": "Bearer key-123",
}
BODY = json.dumps(
    {
        "smsId": 1,
        "phoneFrom": "Сбер",
        "phone": "79001234567",
        "text": "Код 4417 🙂",
        "action": "PUSH_SMS",
        "key": "key-123",
    },
    ensure_ascii=False,
    separators=(",", ":"),
).encode()
LIMIT = 4096


def push(n: int) -> bytes:
    """A valid PUSH_SMS body with smsId n (the stand-in answers only those)."""
    return BODY.replace(b'"smsId":1,', b'"smsId":%d,' % n)


# -- servers -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Seen:
    method: str
    target: str  # path and query exactly as sent
    headers: list[tuple[bytes, bytes]]  # as sent, in order
    body: bytes
    peer: tuple[str, int]  # the client's end: one per TCP connection


Handler = Callable[[bytes], Awaitable[web.StreamResponse]]


async def echo(body: bytes) -> web.StreamResponse:
    return web.json_response({"response": 1, "echo": body.decode()})


def fixed(status: int, body: bytes) -> Handler:
    async def handler(_: bytes) -> web.StreamResponse:
        return web.Response(status=status, body=body)

    return handler


class RecordingUpstream:
    """A real aiohttp server that records each request byte for byte; `answer` is replaceable."""

    def __init__(self, ssl_context: ssl.SSLContext | None = None) -> None:
        self.seen: list[Seen] = []
        self.answer: Handler = echo
        self._ssl = ssl_context
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def peers(self) -> set[tuple[str, int]]:
        return {s.peer for s in self.seen}

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        assert request.transport is not None
        peer = request.transport.get_extra_info("peername")
        self.seen.append(
            Seen(request.method, request.raw_path, list(request.raw_headers), body, peer[:2])
        )
        return await self.answer(body)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=self._ssl)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


class RawConnection:
    """One accepted connection of a RawUpstream, for a script to read requests and write bytes."""

    def __init__(
        self, server: RawUpstream, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.server = server
        self.reader = reader
        self.writer = writer
        self.index = len(server.connections)  # 0 for the first connection the client opened

    async def request(self) -> bytes | None:
        """The body of the next request on this connection; None when the client closed it."""
        try:
            head = await self.reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            return None
        length = 0
        for line in head.split(b"\r\n"):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        body = await self.reader.readexactly(length)
        self.server.bodies.append(body)
        self.server.arrived.set()
        return body

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def client_closed(self) -> bool:
        """True when the client closes its end within a second (it must not be left open)."""
        try:
            async with asyncio.timeout(1.0):
                return await self.reader.read() == b""
        except (TimeoutError, ConnectionError):
            return False


Script = Callable[[RawConnection], Awaitable[None]]


class RawUpstream:
    """asyncio.start_server on 127.0.0.1; every connection runs `script`, then is closed."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.connections: list[RawConnection] = []
        self.bodies: list[bytes] = []  # every request body, in arrival order
        self.arrived = asyncio.Event()
        self.done: list[asyncio.Task[None]] = []
        self._server: asyncio.Server | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1/PUSH_SMS"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = RawConnection(self, reader, writer)
        self.connections.append(conn)
        task = asyncio.current_task()
        assert task is not None
        self.done.append(task)
        try:
            await self.script(conn)
        except (ConnectionError, asyncio.CancelledError):
            pass  # the client reset it, or stop() ended a script still waiting
        finally:
            writer.close()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for task in self.done:
                task.cancel()
            await asyncio.gather(*self.done, return_exceptions=True)
            await self._server.wait_closed()


def answer(body: bytes = b'{"response":1}', status: str = "200 OK", extra: str = "") -> bytes:
    head = f"HTTP/1.1 {status}\r\nContent-Length: {len(body)}\r\n{extra}\r\n"
    return head.encode() + body


async def keep_answering(conn: RawConnection) -> None:
    """A well-behaved kept-alive connection: every request gets a 200 that echoes its body."""
    while (body := await conn.request()) is not None:
        await conn.send(answer(body))


# -- fixtures ------------------------------------------------------------------------------------


@pytest.fixture
async def upstream() -> AsyncIterator[RecordingUpstream]:
    server = RecordingUpstream()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def raw_upstream() -> AsyncIterator[Callable[[Script], Awaitable[RawUpstream]]]:
    started: list[RawUpstream] = []

    async def make(script: Script) -> RawUpstream:
        server = RawUpstream(script)
        await server.start()
        started.append(server)
        return server

    yield make
    for server in started:
        await server.stop()


@pytest.fixture
async def make_client() -> AsyncIterator[Callable[..., UpstreamClient]]:
    clients: list[UpstreamClient] = []

    def make(url: str, **kwargs: Any) -> UpstreamClient:
        kwargs.setdefault("timeout", 2.0)
        kwargs.setdefault("body_limit", LIMIT)
        client = UpstreamClient(url, kwargs.pop("headers", HEADERS), **kwargs)
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.close()


async def fails(awaitable: Awaitable[Any]) -> str:
    """The kind of the UpstreamError the awaitable raises."""
    with pytest.raises(UpstreamError) as info:
        await awaitable
    return info.value.kind


# -- a well-behaved upstream ---------------------------------------------------------------------


async def test_a_200_gives_status_and_body_and_no_retry_after(
    upstream: RecordingUpstream, make_client: Callable[..., UpstreamClient]
) -> None:
    upstream.answer = fixed(200, b'{"status": "SUCCESS"}')
    client = make_client(f"http://127.0.0.1:{upstream.port}/v1/PUSH_SMS")
    reply = await client.post(BODY)
    assert reply == Reply(200, b'{"status": "SUCCESS"}', None)


@pytest.mark.parametrize(
    ("path", "target"),
    [
        ("/v1/PUSH_SMS?key=a%20b&x=1", "/v1/PUSH_SMS?key=a%20b&x=1"),
        ("/v1/PUSH_SMS#fragment", "/v1/PUSH_SMS"),
        ("", "/"),
        ("?x=1", "/?x=1"),
    ],
)
async def test_the_upstream_sees_exactly_the_request_meant(
    upstream: RecordingUpstream,
    make_client: Callable[..., UpstreamClient],
    path: str,
    target: str,
) -> None:
    client = make_client(f"http://127.0.0.1:{upstream.port}{path}")
    await client.post(BODY)
    (seen,) = upstream.seen
    assert seen.method == "POST"
    assert seen.target == target
    assert seen.body == BODY
    assert seen.headers == [
        (b"Host", f"127.0.0.1:{upstream.port}".encode()),
        (b"Content-Type", b"application/json; charset=utf-8"),
        (b"User-Agent", b"partner-sms-gateway/test"),
        (b"Authorization", b"Bearer key-123"),
        (b"Content-Length", str(len(BODY)).encode()),
    ]


async def test_user_info_in_the_url_stays_out_of_the_host_header(
    upstream: RecordingUpstream, make_client: Callable[..., UpstreamClient]
) -> None:
    client = make_client(f"http://user:secret@127.0.0.1:{upstream.port}/p")
    assert (await client.post(b"{}")).status == 200
    (seen,) = upstream.seen
    assert dict(seen.headers)[b"Host"] == f"127.0.0.1:{upstream.port}".encode()
    assert b"secret" not in b"".join(v for _, v in seen.headers)


async def test_an_empty_body_is_sent_with_content_length_zero(
    upstream: RecordingUpstream, make_client: Callable[..., UpstreamClient]
) -> None:
    client = make_client(f"http://127.0.0.1:{upstream.port}/p")
    assert await client.post(b"") == Reply(200, b'{"response": 1, "echo": ""}', None)
    assert dict(upstream.seen[0].headers)[b"Content-Length"] == b"0"


async def test_sequential_posts_share_one_connection(
    standin: StandIn, make_client: Callable[..., UpstreamClient]
) -> None:
    client = make_client(standin.url)
    for n in range(1, 21):
        assert (await client.post(push(n))).status == 200
    assert standin.delivered_ids() == set(range(1, 21))
    assert len(standin.peers) == 1


async def test_concurrent_posts_each_get_their_own_answer(
    upstream: RecordingUpstream, make_client: Callable[..., UpstreamClient]
) -> None:
    rounds = [asyncio.Event() for _ in range(3)]
    arrived = 0

    async def echo_once_all_eight_are_in(body: bytes) -> web.StreamResponse:
        # No answer until the whole round has arrived: the eight posts really overlap.
        nonlocal arrived
        arrived += 1
        this_round = rounds[(arrived - 1) // 8]
        if arrived % 8 == 0:
            this_round.set()
        async with asyncio.timeout(5):
            await this_round.wait()
        return await echo(body)

    upstream.answer = echo_once_all_eight_are_in
    client = make_client(f"http://127.0.0.1:{upstream.port}/p")
    for _ in range(3):  # the second and third rounds reuse the first round's connections
        bodies = [f"request-{i}".encode() for i in range(8)]
        replies = await asyncio.gather(*(client.post(b) for b in bodies))
        assert [json.loads(r.body)["echo"].encode() for r in replies] == bodies
        assert all(r.status == 200 for r in replies)
    assert len(upstream.seen) == 24
    assert len(upstream.peers) <= 8


async def test_retry_after_is_captured(
    standin: StandIn, make_client: Callable[..., UpstreamClient]
) -> None:
    standin.script.append(Answer(429, '{"response":"TOO_MANY_ATTEMPTS"}', {"Retry-After": "7"}))
    client = make_client(standin.url)
    reply = await client.post(push(1))
    assert reply == Reply(429, b'{"response":"TOO_MANY_ATTEMPTS"}', "7")
    # Not carried over to the next answer on the same connection.
    assert (await client.post(push(2))).retry_after is None
    assert len(standin.peers) == 1


@pytest.mark.parametrize(
    "answer_",
    [
        Answer(500, "oops"),
        Answer(404, "<html>Not Found</html>"),
        Answer(301, "moved", {"Location": "/v1/elsewhere"}),
        Answer(302, "found", {"Location": "http://127.0.0.1:1/"}),
        Answer(307, "again", {"Location": "/v1/PUSH_SMS"}),  # the same URL: still not followed
    ],
    ids=lambda a: str(a.status),
)
async def test_a_non_200_is_returned_as_it_came_and_never_followed(
    standin: StandIn, make_client: Callable[..., UpstreamClient], answer_: Answer
) -> None:
    standin.script.append(answer_)
    client = make_client(standin.url)
    reply = await client.post(push(1))
    location = answer_.headers.get("Location")
    assert reply == Reply(answer_.status, answer_.body.encode(), None, location)
    assert standin.received == 1


async def test_a_long_body_is_cut_to_the_limit_plus_one_and_the_connection_stays_usable(
    upstream: RecordingUpstream, make_client: Callable[..., UpstreamClient]
) -> None:
    long_body = bytes(range(256)) * 40  # 10 KiB
    upstream.answer = fixed(500, long_body)
    client = make_client(f"http://127.0.0.1:{upstream.port}/p", body_limit=100)
    reply = await client.post(b"1")
    assert reply.status == 500
    assert reply.body == long_body[:101]
    upstream.answer = fixed(200, b"x" * 100)
    assert await client.post(b"2") == Reply(200, b"x" * 100, None)  # exactly the limit: kept
    assert len(upstream.peers) == 1


# -- scripted bytes ------------------------------------------------------------------------------


async def test_a_chunked_answer_is_read_whole_and_the_connection_reused(
    raw_upstream: Callable[[Script], Awaitable[RawUpstream]],
    make_client: Callable[..., UpstreamClient],
) -> None:
    async def chunked(conn: RawConnection) -> None:
        while await conn.request() is not None:
            await conn.send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            await conn.send(b"5\r\nhello\r\n")
            await conn.send(b"6;ext=1\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n")

    server = await raw_upstream(chunked)
    client = make_client(server.url)
    assert await client.post(b"1") == Reply(200, b"hello world", None)
    assert await client.post(b"2") == Reply(200, b"hello world", None)
    assert len(server.connections) == 1


async def test_an_answer_ended_by_close_is_complete_and_its_connection_not_reused(
    raw_upstream: Callable[[Script], Awaitable[RawUpstream]],
    make_client: Callable[..., UpstreamClient],
) -> None:
    async def until_close(conn: RawConnection) -> None:
        await conn.request()
        await conn.send(b"HTTP/1.1 503 Busy\r\nRetry-After: 3\r\n\r\nfirst part, ")
        await conn.send(b"second part")

    server = await raw_upstream(until_close)
    client = make_client(server.url)
    assert await client.post(b"1") == Reply(503, b"first part, second part", "3")
    assert await client.post(b"2") == Reply(503, b"first part, second part", "3")
    assert len(server.connections) == 2


async def test_connection_close_makes_the_client_close_it_and_open_a_new_one(
    raw_upstream: Callable[[Script], Awaitable[RawUpstream]],
    make_client: Callable[..., UpstreamClient],
) -> None:
    closed_by_client: list[bool] = []

    async def then_close(conn: RawConnection) -> None:
        body = await conn.request()
        assert body is not None
        await conn.send(answer(body, extra="Connection: close\r\n"))
        closed_by_client.append(await conn.client_closed())  # the server leaves it open

    server = await raw_upstream(then_close)
    client = make_client(server.url)
    assert await client.post(b"1") == Reply(200, b"1", None)
    assert await client.post(b"2") == Reply(200, b"2", None)
    assert len(server.connections) == 2
    await asyncio.gather(*server.done[:1])
    assert closed_by_client[0] is True


async def test_an_answer_arriving_one_byte_at_a_time_is_read_whole(
    raw_upstream: Callable[[Script], Awaitable[RawUpstream]],
    make_client: Callable[..., UpstreamClient],
) -> None:
    async def trickle(conn: RawConnection) -> None:
        while await conn.request() is not None:
            data = (
                b"HTTP/1.1 100 Continue\r\n\r\n"
                b"HTTP/1.1 429 Too Many\r\nRetry-After: 120\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
            )
            for i in range(len(data)):
                await conn.send(data[i : i + 1])

    server = await raw_upstream(trickle)
    client = make_client(server.url)
    assert await client.post(b"1") == Reply(429, b"abcde", "120")
    assert await client.post(b"2") == Reply(429, b"abcde", "120")
    assert len(server.connections) == 1


async def test_an_http_1_0_answer_is_not_kept_alive(
    raw_upstream: Callable[[Script], Awaitable[RawUpstream]],
    make_client: Callable[..., UpstreamClient],
) -> None:
    async def old(conn: RawConnection) -> None:
        while await conn.request() is not None:
            await conn.send(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok")

    server = await raw_upstream(old)
    client = make_client(server.url)
    assert (await client.post(b"1")).body == b"ok"
    assert (await client.post(b"2")).body == b"ok"
    assert len(server.connections) == 2


async def test_100_continue_before_the_answer_is_skipped(
    raw_upstream: Callable[[Script], Awaitable[RawUpstream]],
    make_client: Callable[..., UpstreamClient],
) -> None:
    async def continue_first(conn: RawConnection) -> None:
        while (body := await conn.request()) is not None:
            await conn.send(b"HTTP/1.1 100 Continue\r\n\r\n")
            await conn.send(b"HTTP/1.1 102 Processing\r\n\r\n" + answer(body))

    server = await raw_upstream(continue_first)
    client = make_client(server.url)
    assert await client.post(b"1") == Reply(200, b"1", None)
    assert await client.post(b"2") == Reply(200, b"2", None)
    assert len(server.connections) == 1


@pytest.mark.parametrize("then_close", [False, True], ids=["kept-open", "then-closed"])
async def test_garbage_is_a_bad_response(
    raw_upstream: Callable[[Script], Awaitable[RawUpstream]],
    make_client: Callable[..., UpstreamClient],
    then_close: bool,
) -> None:
    async def garbage(conn: RawConnection) -> None:
        await conn.request()
        await conn.send(b"SSH-2.0-OpenSSH_9.6\r\n\r\n")
        if not then_close:
            await conn.client_closed()

    server = await raw_upstream(garbage)
    client = make_client(server.url)
    assert await fails(client.post(b"1")) == "BadResponse"
    assert server.bodies == [b"1"]  # not sent again


async def test_a_fresh_connection_closed_without_an_answer_is_disconnected_and_not_retried(
    raw_upstream: Callable[[Script], Awaitable[RawUpstream]],
    make_client: Callable[..., UpstreamClient],
) -> None:
    async def hang_up(conn: RawConnection) -> None:
        await conn.request()

    server = await raw_upstream(hang_up)
    client = make_client(server.url)
    assert await fails(client.post(b"1")) == "Disconnected"
    assert server.bodies == [b"1"]
    assert len(server.connections) == 1


async def test_an_idle_connection_the_server_closed_is_replaced(
    raw_upstream: Callable[[Script], Awaitable[RawUpstream]],
    make_client: Callable[..., UpstreamClient],
) -> None:
    async def answer_once(conn: RawConnection) -> None:
        body = await conn.request()
        assert body is not None
        await conn.send(answer(body))  # kept alive by the headers, then closed at once

    server = await raw_upstream(answer_once)
    client = make_client(server.url)
    assert await client.post(b"1") == Reply(200, b"1", None)
    await asyncio.sleep(0.05)  # idle: the server's close reaches the client
    assert await client.post(b"2") == Reply(200, b"2", None)
    assert server.bodies == [b"1", b"2"]
    assert len(server.connections) == 2


async def test_a_kept_alive_connection_closed_unanswered_is_not_resent(
    raw_upstream: Callable[[Script], Awaitable[RawUpstream]],
    make_client: Callable[..., UpstreamClient],
) -> None:
    """The server may have acted on it (read, then reset): a resend now would break the
    retry spacing. The attempt fails; the worker retries after retry_interval."""

    async def close_on_second(conn: RawConnection) -> None:
        body = await conn.request()
        assert body is not None
        await conn.send(answer(body))
        if conn.index == 0:
            await conn.request()  # the client sent on it: hang up without answering

    server = await raw_upstream(close_on_second)
    client = make_client(server.url)
    assert await client.post(b"1") == Reply(200, b"1", None)
    assert await fails(client.post(b"2")) == "Disconnected"
    assert server.bodies == [b"1", b"2"]
    assert await client.post(b"3") == Reply(200, b"3", None)  # on a new connection
    assert server.bodies == [b"1", b"2", b"3"]
    assert len(server.connections) == 2


async def test_a_partial_answer_on_a_reused_connection_is_not_retried(
    raw_upstream: Callable[[Script], Awaitable[RawUpstream]],
    make_client: Callable[..., UpstreamClient],
) -> None:
    async def partial(conn: RawConnection) -> None:
        body = await conn.request()
        assert body is not None
        await conn.send(answer(body))
        await conn.request()
        await conn.send(b"HTTP/1.1 2")  # the server started answering: it got the request

    server = await raw_upstream(partial)
    client = make_client(server.url)
    assert (await client.post(b"1")).status == 200
    assert await fails(client.post(b"2")) == "BadResponse"
    assert server.bodies == [b"1", b"2"]


async def test_no_answer_times_out_in_time_and_the_connection_is_dropped(
    raw_upstream: Callable[[Script], Awaitable[RawUpstream]],
    make_client: Callable[..., UpstreamClient],
) -> None:
    dropped: list[bool] = []

    async def silent_first(conn: RawConnection) -> None:
        if conn.index == 0:
            await conn.request()
            dropped.append(await conn.client_closed())
            return
        await keep_answering(conn)

    server = await raw_upstream(silent_first)
    client = make_client(server.url, timeout=0.3)
    started = time.monotonic()
    assert await fails(client.post(b"1")) == "Timeout"
    assert 0.25 <= time.monotonic() - started < 1.5
    assert await client.post(b"2") == Reply(200, b"2", None)
    assert len(server.connections) == 2
    await asyncio.gather(*server.done[:1])
    assert dropped == [True]


async def test_a_timeout_on_a_reused_connection_is_not_retried(
    raw_upstream: Callable[[Script], Awaitable[RawUpstream]],
    make_client: Callable[..., UpstreamClient],
) -> None:
    async def silent_second(conn: RawConnection) -> None:
        body = await conn.request()
        assert body is not None
        await conn.send(answer(body))
        await conn.request()
        await conn.client_closed()

    server = await raw_upstream(silent_second)
    client = make_client(server.url, timeout=0.3)
    assert (await client.post(b"1")).status == 200
    started = time.monotonic()
    assert await fails(client.post(b"2")) == "Timeout"
    assert time.monotonic() - started < 1.5
    assert server.bodies == [b"1", b"2"]


async def test_a_closed_port_is_connection_refused() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = UpstreamClient(f"http://127.0.0.1:{port}/", HEADERS, timeout=1.0, body_limit=LIMIT)
    try:
        assert await fails(client.post(b"1")) == "ConnectionRefused"
    finally:
        await client.close()


async def test_an_unknown_host_is_a_dns_error() -> None:
    client = UpstreamClient("http://no-such-host.invalid/", HEADERS, timeout=2.0, body_limit=LIMIT)
    try:
        assert await fails(client.post(b"1")) == "DNSError"
    finally:
        await client.close()


async def test_a_connection_idle_past_idle_timeout_is_not_reused(
    raw_upstream: Callable[[Script], Awaitable[RawUpstream]],
    make_client: Callable[..., UpstreamClient],
) -> None:
    server = await raw_upstream(keep_answering)
    client = make_client(server.url, idle_timeout=0.05)
    assert (await client.post(b"1")).status == 200
    assert (await client.post(b"2")).status == 200  # at once: reused
    assert len(server.connections) == 1
    await asyncio.sleep(0.1)  # the idle time itself is what is tested
    assert (await client.post(b"3")).status == 200
    assert len(server.connections) == 2


async def test_a_cancelled_post_leaves_no_stale_answer_for_the_next(
    raw_upstream: Callable[[Script], Awaitable[RawUpstream]],
    make_client: Callable[..., UpstreamClient],
) -> None:
    async def late_for_first(conn: RawConnection) -> None:
        while (body := await conn.request()) is not None:
            if body == b"first":
                await asyncio.sleep(0.3)
                await conn.send(answer(b"answer to first"))
            else:
                await conn.send(answer(b"answer to " + body))

    server = await raw_upstream(late_for_first)
    client = make_client(server.url)
    assert await client.post(b"warm-up") == Reply(200, b"answer to warm-up", None)
    task = asyncio.create_task(client.post(b"first"))
    async with asyncio.timeout(2):
        while b"first" not in server.bodies:
            server.arrived.clear()
            await server.arrived.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await client.post(b"second") == Reply(200, b"answer to second", None)
    await asyncio.sleep(0.4)  # past the late answer: it must not turn up anywhere
    assert await client.post(b"third") == Reply(200, b"answer to third", None)
    assert len(server.connections) == 2


async def test_close_closes_every_connection(
    raw_upstream: Callable[[Script], Awaitable[RawUpstream]],
) -> None:
    closed: list[bool] = []

    async def answer_then_watch(conn: RawConnection) -> None:
        body = await conn.request()
        assert body is not None
        await conn.send(answer(body))
        closed.append(await conn.client_closed())

    server = await raw_upstream(answer_then_watch)
    client = UpstreamClient(server.url, HEADERS, timeout=1.0, body_limit=LIMIT)
    await asyncio.gather(*(client.post(b"%d" % i) for i in range(3)))
    await client.close()
    await asyncio.gather(*server.done)
    assert closed == [True] * len(server.connections)


async def test_close_during_a_post_does_not_resend_it_on_a_new_connection(
    raw_upstream: Callable[[Script], Awaitable[RawUpstream]],
) -> None:
    async def slow_second(conn: RawConnection) -> None:
        body = await conn.request()
        assert body is not None
        await conn.send(answer(body))
        await conn.request()
        await conn.client_closed()  # no answer to the second request

    server = await raw_upstream(slow_second)
    client = UpstreamClient(server.url, HEADERS, timeout=1.0, body_limit=LIMIT)
    assert (await client.post(b"1")).status == 200
    task = asyncio.create_task(client.post(b"2"))
    async with asyncio.timeout(2):
        while b"2" not in server.bodies:
            server.arrived.clear()
            await server.arrived.wait()
    await client.close()
    with pytest.raises(UpstreamError):
        await task
    # Closed means closed: no new connection opened, nothing sent again after close().
    assert server.bodies == [b"1", b"2"]
    assert len(server.connections) == 1


# -- TLS -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
async def tls_upstream(ca: trustme.CA) -> AsyncIterator[RecordingUpstream]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(context)
    server = RecordingUpstream(ssl_context=context)
    await server.start()
    yield server
    await server.stop()


def trusting(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


async def test_tls_to_a_trusted_certificate_works_and_keeps_alive(
    tls_upstream: RecordingUpstream, ca: trustme.CA, make_client: Callable[..., UpstreamClient]
) -> None:
    client = make_client(
        f"https://localhost:{tls_upstream.port}/v1/PUSH_SMS", ssl_context=trusting(ca)
    )
    assert (await client.post(BODY)).status == 200
    assert (await client.post(BODY)).status == 200
    assert [s.body for s in tls_upstream.seen] == [BODY, BODY]
    assert dict(tls_upstream.seen[0].headers)[b"Host"] == f"localhost:{tls_upstream.port}".encode()
    assert len(tls_upstream.peers) == 1


async def test_tls_with_the_system_trust_store_rejects_an_unknown_ca(
    tls_upstream: RecordingUpstream, make_client: Callable[..., UpstreamClient]
) -> None:
    client = make_client(f"https://localhost:{tls_upstream.port}/v1/PUSH_SMS")
    assert await fails(client.post(BODY)) == "CertificateError"
    assert tls_upstream.seen == []


async def test_tls_checks_the_host_name(
    tls_upstream: RecordingUpstream, ca: trustme.CA, make_client: Callable[..., UpstreamClient]
) -> None:
    # The certificate names "localhost", not 127.0.0.1.
    client = make_client(f"https://127.0.0.1:{tls_upstream.port}/", ssl_context=trusting(ca))
    assert await fails(client.post(BODY)) == "CertificateError"
    assert tls_upstream.seen == []


async def test_https_to_a_plain_http_server_is_an_upstream_error(
    upstream: RecordingUpstream, ca: trustme.CA, make_client: Callable[..., UpstreamClient]
) -> None:
    client = make_client(f"https://localhost:{upstream.port}/", ssl_context=trusting(ca))
    # Seen: TLSError ("wrong version number": aiohttp answers the ClientHello with a plain 400).
    assert await fails(client.post(BODY)) in {"TLSError", "BadResponse", "Disconnected"}
    assert upstream.seen == []


# -- whatever the server sends -------------------------------------------------------------------

status_line_then_garbage = st.builds(
    lambda version, code, rest: b"HTTP/" + version + b" " + code + rest,
    st.sampled_from([b"1.1", b"1.0", b"2", b"0.9"]),
    # 000 and 099 are left to test_a_status_below_100_is_not_a_reply.
    st.sampled_from([b"200", b"100", b"101", b"103", b"204", b"304", b"404", b"999", b"20"]),
    st.binary(max_size=200),
)
well_formed_head_then_garbage = st.builds(
    lambda code, headers, rest: b"HTTP/1.1 %d X\r\n" % code + b"".join(headers) + b"\r\n" + rest,
    st.integers(100, 999),
    st.lists(
        st.sampled_from(
            [
                b"Content-Length: 5\r\n",
                b"Content-Length: 0\r\n",
                b"Content-Length: -1\r\n",
                b"Transfer-Encoding: chunked\r\n",
                b"Connection: close\r\n",
                b"Connection: upgrade\r\nUpgrade: h2c\r\n",
                b"Retry-After: \xff\xfe\r\n",
                b"Bad Header\r\n",
            ]
        ),
        max_size=4,
    ),
    st.binary(max_size=100),
)


async def _answer_with(data: bytes) -> None:
    async def script(conn: RawConnection) -> None:
        await conn.request()
        await conn.send(data)

    server = RawUpstream(script)
    await server.start()
    client = UpstreamClient(server.url, HEADERS, timeout=0.5, body_limit=64)
    try:
        async with asyncio.timeout(3):  # post() itself must end within its timeout
            outcome: Reply | str
            try:
                outcome = await client.post(b"{}")
            except UpstreamError as e:
                outcome = e.kind
        if isinstance(outcome, Reply):
            assert 100 <= outcome.status <= 999, outcome
            assert len(outcome.body) <= 65
        else:
            assert outcome in {"BadResponse", "Disconnected"}  # not Timeout: the server closed
        await client.close()
    finally:
        await server.stop()


@settings(max_examples=50, deadline=None)
@given(st.one_of(st.binary(max_size=300), status_line_then_garbage, well_formed_head_then_garbage))
def test_any_bytes_give_a_reply_or_an_upstream_error(data: bytes) -> None:
    asyncio.run(_answer_with(data))


@pytest.mark.parametrize("status", [b"000", b"099"])
async def test_a_status_below_100_is_not_a_reply(status: bytes) -> None:
    await _answer_with(b"HTTP/1.1 " + status + b" Odd\r\nContent-Length: 0\r\n\r\n")


# -- construction --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url", ["ftp://h/x", "127.0.0.1:8080/x", "http://", "https:///path", "unix:///run/x.sock", ""]
)
def test_a_url_that_is_not_http_is_refused(url: str) -> None:
    with pytest.raises(ValueError, match="not an http"):
        UpstreamClient(url, HEADERS, timeout=1.0, body_limit=LIMIT)
