"""Hostile HTTP clients against the real daemon: half-open requests, too many connections,
addresses outside `http.allow`. Delivery, /health and the log must not suffer."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway.play.standin import Answer, StandIn
from tests.fakes.daemon import DaemonProcess, write_config

GOOD = {"phone": "79001234567", "phoneFrom": "Instagram", "text": "code 1234"}
SLOW_HEAD = b"POST /v1/sms HTTP/1.1\r\nHost: x\r\nX-a: "  # and then nothing more


async def open_slow(port: int, count: int) -> list[tuple[asyncio.StreamReader, Any]]:
    """`count` connections that each send the start of a request head and stop there."""

    async def one() -> tuple[asyncio.StreamReader, Any] | None:
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 10)
            writer.write(SLOW_HEAD)
            await writer.drain()
        except (OSError, TimeoutError):
            return None  # refused or reset at once: what a capped server may do
        return reader, writer

    opened: list[tuple[asyncio.StreamReader, Any]] = []
    for start in range(0, count, 100):
        batch = await asyncio.gather(*(one() for _ in range(min(100, count - start))))
        opened += [c for c in batch if c is not None]
    return opened


async def closed_by_server(reader: asyncio.StreamReader, timeout: float) -> bool:
    try:
        data = await asyncio.wait_for(reader.read(1024), timeout)
    except TimeoutError:
        return False
    except OSError:
        return True  # reset
    return data == b"" or data.startswith(b"HTTP/1.1 4")


def close_all(conns: list[tuple[asyncio.StreamReader, Any]]) -> None:
    for _, writer in conns:
        with contextlib.suppress(Exception):
            writer.transport.abort()


async def until_answered(daemon: DaemonProcess, within: float) -> tuple[int, Any]:
    """GET /health as anyone, again until it answers (new clients wait for a free slot)."""
    deadline = time.monotonic() + within
    while True:
        try:
            return await asyncio.wait_for(daemon.health(token=None), 2)
        except (aiohttp.ClientError, TimeoutError):
            if time.monotonic() > deadline:
                raise
        await asyncio.sleep(0.1)


@pytest.mark.skipif(shutil.which("prlimit") is None, reason="needs prlimit (util-linux)")
@pytest.mark.timeout(120)
async def test_half_open_connections_under_1024_descriptors_do_not_stop_delivery(
    tmp_path: Path, standin: StandIn
) -> None:
    timeout = 3.0
    config = write_config(tmp_path, standin.url, http={"request_timeout": timeout})
    daemon = DaemonProcess(config, prefix=["prlimit", "--nofile=1024", "--"])
    await daemon.start()
    try:
        standin.default = Answer(503, "down for now")  # queued when the attack starts
        status, body = await daemon.post_sms([{**GOOD, "text": f"before {i}"} for i in range(5)])
        assert status == 201, body
        queued = {b["smsId"] for b in body}
        log_before = daemon.stderr_path.stat().st_size
        attack = await open_slow(daemon.port or 0, 1100)
        started = time.monotonic()
        try:
            standin.default = None
            # Delivery goes on while the slow clients hold every connection they could get.
            await standin.wait_for(lambda s: queued <= s.delivered_ids(), timeout=10)
            # New clients are served again once the half-open requests are overdue.
            status, body = await until_answered(daemon, timeout + 3)
            assert status == 200, body
            status, body = await daemon.post_sms({**GOOD, "text": "during the attack"})
            assert status == 201, body
            await standin.wait_for(lambda s: body["smsId"] in s.delivered_ids(), timeout=10)
            # Every half-open request was closed once its head was overdue.
            left = timeout + 3.0 - (time.monotonic() - started)
            results = await asyncio.gather(
                *(closed_by_server(r, max(left, 0.5)) for r, _ in attack)
            )
            assert all(results), f"{results.count(False)} half-open connections still open"
        finally:
            close_all(attack)
        status, body = await daemon.health(token=None)
        assert status == 200 and body["status"] == "ok", body
        grown = daemon.stderr_path.stat().st_size - log_before
        assert grown < 64 * 1024, f"the log grew by {grown} bytes during the attack"
        events = [e.get("event") for e in daemon.logs()]
        assert "http.connection_cap" in events
    finally:
        assert await daemon.stop() == 0


async def test_connections_beyond_max_connections_are_closed_at_once(
    daemon_factory: Callable[..., Any],
) -> None:
    daemon: DaemonProcess = await daemon_factory(http={"max_connections": 5})
    held = await open_slow(daemon.port or 0, 5)
    try:
        assert len(held) == 5
        extra = await open_slow(daemon.port or 0, 3)
        try:
            # The sixth and later are closed before anything is read from them.
            assert all([await closed_by_server(r, 2.0) for r, _ in extra])
        finally:
            close_all(extra)
        # The held ones are still open (their head deadline, 10 s, is not over).
        assert not any([await closed_by_server(r, 0.2) for r, _ in held])
    finally:
        close_all(held)

    # Once they are gone, new connections are served again.
    async def served() -> bool:
        with contextlib.suppress(Exception):
            status, _ = await daemon.health(token=None)
            return status == 200
        return False

    for _ in range(100):  # 5 s at most
        if await served():
            break
        await asyncio.sleep(0.05)
    else:
        raise AssertionError("new connections are not served once the held ones are gone")


async def test_an_idle_kept_alive_connection_is_closed_after_keepalive_timeout(
    daemon_factory: Callable[..., Any],
) -> None:
    daemon: DaemonProcess = await daemon_factory(http={"keepalive_timeout": 1.0})
    reader, writer = await asyncio.open_connection("127.0.0.1", daemon.port)
    try:
        writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 200")
        length = next(
            int(line.split(b":")[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length")
        )
        await reader.readexactly(length)
        before = time.monotonic()
        assert await asyncio.wait_for(reader.read(), 5) == b""
        assert 0.5 <= time.monotonic() - before <= 4.0
    finally:
        writer.transport.abort()


async def test_a_body_that_stops_arriving_is_cut_at_request_timeout(
    daemon_factory: Callable[..., Any],
) -> None:
    daemon: DaemonProcess = await daemon_factory(http={"request_timeout": 1.0})
    reader, writer = await asyncio.open_connection("127.0.0.1", daemon.port)
    try:
        writer.write(
            b"POST /v1/sms HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b'Content-Length: 100\r\n\r\n{"phone": '
        )
        await writer.drain()
        before = time.monotonic()
        assert await closed_by_server(reader, 5)
        assert time.monotonic() - before <= 3.0
    finally:
        writer.transport.abort()


async def test_a_client_outside_allow_is_closed_before_anything_is_read(
    daemon_factory: Callable[..., Any],
) -> None:
    daemon: DaemonProcess = await daemon_factory(http={"allow": ["192.0.2.0/24"]})
    reader, writer = await asyncio.open_connection("127.0.0.1", daemon.port)
    try:
        writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        with contextlib.suppress(OSError):
            await writer.drain()
        assert await closed_by_server(reader, 2.0)
    finally:
        writer.transport.abort()
    refused = [e for e in daemon.logs() if e.get("event") == "http.connection_refused"]
    assert refused and refused[0]["reason"] == "not in http.allow"


async def test_allow_lets_a_listed_address_use_every_route(
    daemon_factory: Callable[..., Any],
) -> None:
    daemon: DaemonProcess = await daemon_factory(http={"allow": ["127.0.0.0/8", "::1"]})
    status, _ = await daemon.health(token=None)
    assert status == 200
    status, _ = await daemon.request("GET", "/metrics", token=None)
    assert status == 200
    status, body = await daemon.post_sms(GOOD)
    assert status == 201, body
