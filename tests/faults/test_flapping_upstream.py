"""An upstream that flaps (500, timeouts, resets, 429) for 5 s, then heals."""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from aiohttp import web

from gateway.play.standin import StandIn
from tests.fakes.daemon import DaemonProcess

RETRY_INTERVAL = 0.5
TIMEOUT = 1.0
CONCURRENCY = 4
FLAP_SECONDS = 5.0
EPSILON = 0.05


class FlappingStandIn(StandIn):
    """Answers a random failure until `healthy_at`, then 200.

    Counts requests in flight itself: a request the client gave up on (its timeout) stops
    counting when the client closes the connection, not when our delay would have ended.
    """

    def __init__(self) -> None:
        super().__init__()
        self.rng = random.Random(4242)
        self.healthy_at = float("inf")
        self.live = 0
        self.max_live = 0
        self.kinds: list[str] = []

    async def _push(self, request: web.Request) -> web.StreamResponse:
        arrived = time.time()
        raw = await request.read()
        body = json.loads(raw)
        self.live += 1
        self.max_live = max(self.max_live, self.live)
        try:
            kind = (
                "ok"
                if arrived >= self.healthy_at
                else self.rng.choice(["500", "timeout", "reset", "429"])
            )
            self.kinds.append(kind)
            if kind == "timeout":
                give_up = time.monotonic() + TIMEOUT + 2.0
                while time.monotonic() < give_up:
                    if request.transport is None or request.transport.is_closing():
                        break
                    await asyncio.sleep(0.01)
                self._record(raw, request, arrived, 0, body)
                return web.Response(status=499)
            if kind == "reset":
                assert request.transport is not None
                request.transport.abort()
                self._record(raw, request, arrived, 0, body)
                return web.Response(status=499)
            status, text, headers = {
                "500": (500, "Internal Server Error", {}),
                "429": (429, '{"response": "TOO_MANY_ATTEMPTS"}', {"Retry-After": "1"}),
                "ok": (200, '{"response": 1}', {}),
            }[kind]
            self._record(raw, request, arrived, status, body)
            return web.Response(status=status, text=text, headers=headers)
        finally:
            self.live -= 1


@pytest.fixture
async def standin() -> AsyncIterator[FlappingStandIn]:
    server = FlappingStandIn()
    await server.start()
    yield server
    await server.stop()


async def test_flapping_upstream_delivers_everything_within_concurrency_and_spacing(
    daemon_factory: Callable[..., Any], standin: FlappingStandIn
) -> None:
    daemon: DaemonProcess = await daemon_factory(
        upstream={"retry_interval": RETRY_INTERVAL, "timeout": TIMEOUT, "concurrency": CONCURRENCY}
    )
    standin.healthy_at = time.time() + FLAP_SECONDS
    status, answers = await daemon.post_sms(
        [{"phone": "79001234567", "phoneFrom": "S", "text": f"flap {i}"} for i in range(40)]
    )
    assert status == 201
    ids = {a["smsId"] for a in answers}
    await standin.wait_for(lambda s: s.delivered_ids() >= ids, timeout=40)

    failures_seen = {k for k in standin.kinds if k != "ok"}
    assert failures_seen == {"500", "timeout", "reset", "429"}  # the flap really happened
    assert standin.max_live <= CONCURRENCY
    for sms_id in ids:
        times = sorted(p.at for p in standin.pushes if p.sms_id == sms_id)
        gaps = [b - a for a, b in zip(times, times[1:])]
        assert all(g >= RETRY_INTERVAL - EPSILON for g in gaps), (sms_id, gaps)
    # Delivered once each: a 200 is never sent again.
    delivered = [p.sms_id for p in standin.pushes if p.status == 200]
    assert sorted(delivered) == sorted(ids)
    assert await daemon.stop() == 0
