"""The delivery worker in this process, on a real store, against real servers on 127.0.0.1."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from typing import Any

import pytest
from aiohttp import web
from hypothesis import given
from hypothesis import strategies as st

from gateway.config import MASK, UpstreamConfig
from gateway.delivery import DeliveryWorker
from gateway.delivery.client import UpstreamClient
from gateway.delivery.worker import KeyScrubber
from gateway.health import Health, Level
from gateway.metrics import Metrics
from gateway.outbox import Attempt, Incoming, Outbox, Outcome
from gateway.outbox.store import BODY_LIMIT
from gateway.play.standin import Answer, StandIn
from tests.delivery.conftest import LogWatch, until

KEY = "worker-test-key-0123456789"
WorkerFactory = Callable[..., DeliveryWorker]


def upstream(url: str, **kw: Any) -> UpstreamConfig:
    """Built directly: config refuses some of these URLs, the worker must cope all the same."""
    kw.setdefault("retry_interval", 0.2)
    kw.setdefault("timeout", 2.0)
    kw.setdefault("api_key", KEY)
    return UpstreamConfig(url=url, **kw)


@pytest.fixture
async def workers(outbox: Outbox) -> AsyncIterator[WorkerFactory]:
    started: list[DeliveryWorker] = []

    def make(cfg: UpstreamConfig, **kw: Any) -> DeliveryWorker:
        kw.setdefault("environ", {})  # no proxy from the environment of whoever runs the tests
        worker = DeliveryWorker(outbox, cfg, Metrics(), **kw)
        started.append(worker)
        return worker

    yield make
    for worker in started:
        await worker.stop(grace=1.0)


async def queue(outbox: Outbox, n: int) -> list[int]:
    now = time.time()
    items = [Incoming("test", "79001234567", "S", f"m{i}", now, f"ref-{i}") for i in range(n)]
    return [a.sms_id for a in await outbox.accept(items)]


async def attempts_of(
    outbox: Outbox, logs: LogWatch, sms_ids: list[int], at_least: int
) -> list[list[Attempt]]:
    """Each message's attempts, once every one of them has had `at_least` (a line is logged
    after each record commits)."""

    async def enough() -> list[list[Attempt]] | None:
        found = [await outbox.attempts_for(sms_id) for sms_id in sms_ids]
        return found if all(len(a) >= at_least for a in found) else None

    return await until(enough, logs.changed)


# -- a push that fails in a way nobody foresaw -----------------------------------------------


async def test_a_connect_that_raises_unicode_error_is_a_failed_attempt_and_frees_its_slot(
    outbox: Outbox, workers: WorkerFactory, logs: LogWatch
) -> None:
    """A host label over 63 characters makes the connect raise UnicodeError (the idna codec).
    With one slot, the other messages go out only if each failure frees it."""
    worker = workers(upstream(f"http://{'a' * 64}.example/v1/PUSH_SMS", concurrency=1))
    ids = await queue(outbox, 3)
    await worker.start()
    for attempts in await attempts_of(outbox, logs, ids, at_least=2):
        for a in attempts:
            assert a.outcome is Outcome.ERROR
            assert a.error is not None and a.error.startswith("UnicodeError: ")
            assert "too long" in a.error
    for sms_id in ids:
        line = await logs.wait("push.failed", sms_id=sms_id)
        assert line["error"] == "UnicodeError" and line["log_level"] == "error"
    assert worker.alive
    assert worker.status().consecutive_failures >= 6


async def test_any_exception_in_a_push_is_recorded_with_its_cause_and_retried(
    outbox: Outbox, workers: WorkerFactory, logs: LogWatch, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(self: UpstreamClient, body: bytes) -> Any:
        try:
            raise ValueError("inner detail")
        except ValueError as e:
            raise RuntimeError("outer failure") from e

    monkeypatch.setattr(UpstreamClient, "post", broken)
    worker = workers(upstream("http://127.0.0.1:9/v1/PUSH_SMS", concurrency=1))
    (sms_id,) = await queue(outbox, 1)
    await worker.start()
    (attempts,) = await attempts_of(outbox, logs, [sms_id], at_least=2)
    assert attempts[0].error == "RuntimeError: outer failure (from ValueError: inner detail)"
    assert attempts[1].started_at - (attempts[0].started_at + attempts[0].duration) >= 0.2 - 0.01
    line = await logs.wait("push.failed", sms_id=sms_id)
    assert line["reason"] == "outer failure (from ValueError: inner detail)"
    assert worker.status().in_flight <= 1


async def test_the_recorded_error_keeps_its_cause(
    outbox: Outbox, workers: WorkerFactory, logs: LogWatch
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    proxy = f"http://gw:pw@127.0.0.1:{port}"
    worker = workers(upstream("https://upstream.test/p"), environ={"HTTPS_PROXY": proxy})
    (sms_id,) = await queue(outbox, 1)
    await worker.start()
    ((attempt,),) = await attempts_of(outbox, logs, [sms_id], at_least=1)
    assert attempt.error is not None
    assert attempt.error.startswith(f"ConnectionRefused: proxy 127.0.0.1:{port} (from ")
    assert "ConnectionRefusedError: " in attempt.error and "pw@" not in attempt.error
    line = await logs.wait("push.failed", sms_id=sms_id)
    assert line["error"] == "ConnectionRefused" and line["log_level"] == "info"


# -- what the upstream sends back ------------------------------------------------------------


class EchoingUpstream:
    """An upstream that answers every request with the request itself (as some debug
    endpoints and misconfigured proxies do): the API key comes back in the body.

    With `cut_inside`, padding first puts that text across the size limit the client keeps.
    """

    def __init__(self, cut_inside: str | None = None) -> None:
        self.cut_inside = cut_inside
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def _handle(self, request: web.Request) -> web.Response:
        raw = await request.text()
        echoed = json.dumps({"you_sent": json.loads(raw), "raw": raw})
        if self.cut_inside is not None:
            # The client keeps BODY_LIMIT + 1 bytes: five characters of it arrive.
            echoed = "x" * (BODY_LIMIT + 1 - 5 - echoed.index(self.cut_inside)) + echoed
        return web.Response(status=500, text=echoed)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/PUSH_SMS", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}/v1/PUSH_SMS"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


ODD_KEY = 'k/ey"with-json-escapes-0123'  # JSON escapes it, PHP also its slash


@pytest.mark.parametrize("cut", [False, True], ids=["whole", "cut-inside-the-key"])
async def test_a_body_that_echoes_the_api_key_is_stored_without_it(
    outbox: Outbox, workers: WorkerFactory, logs: LogWatch, cut: bool
) -> None:
    server = EchoingUpstream(cut_inside=json.dumps(ODD_KEY)[1:-1] if cut else None)
    await server.start()
    try:
        worker = workers(upstream(server.url, api_key=ODD_KEY))
        (sms_id,) = await queue(outbox, 1)
        await worker.start()
        ((attempt,),) = await attempts_of(outbox, logs, [sms_id], at_least=1)
    finally:
        await server.stop()
    assert attempt.body is not None and attempt.http_status == 500
    for form in ("k/ey", "with-json-escapes"):
        assert form not in attempt.body
    if cut:  # the store keeps BODY_LIMIT bytes: the start of the mask, not of the key
        assert attempt.body.startswith("xxxx") and attempt.body.endswith('"key": "' + MASK[:4])
    else:
        assert attempt.body.count(MASK) == 2  # the request as data, and as a string


@given(
    st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=20),
    st.text(max_size=60),
    st.integers(0, 80),
)
def test_the_scrubbed_text_never_holds_the_key_nor_a_cut_start_of_it(
    key: str, around: str, cut_at: int
) -> None:
    scrub = KeyScrubber(key)
    text = around + key + around[::-1] + json.dumps(key)
    if key in MASK:  # the mask itself holds it: masking must still end
        assert scrub(text) == text.replace(key, MASK)
        return
    assert key not in scrub(text)
    cut = scrub(text[:cut_at], cut=True)
    assert key not in cut
    assert not any(cut.endswith(key[:n]) for n in range(1, len(key))) or cut.endswith(MASK)


async def test_a_redirect_is_logged_with_its_location_and_not_followed(
    outbox: Outbox, workers: WorkerFactory, logs: LogWatch, standin: StandIn
) -> None:
    standin.script.append(Answer(302, "found", {"Location": "https://elsewhere.example/v2"}))
    worker = workers(upstream(standin.url))
    (sms_id,) = await queue(outbox, 1)
    await worker.start()
    line = await logs.wait("push.retry_scheduled", sms_id=sms_id)
    assert line["http_status"] == 302
    assert line["location"] == "https://elsewhere.example/v2"
    await logs.wait("push.delivered", sms_id=sms_id)  # the retry, to the configured URL
    assert standin.received == 2


async def test_a_429_pause_makes_health_degraded_and_says_until_when(
    outbox: Outbox, workers: WorkerFactory, logs: LogWatch, standin: StandIn
) -> None:
    standin.script.append(Answer(429, '{"response":"TOO_MANY_ATTEMPTS"}', {"Retry-After": "600"}))
    worker = workers(upstream(standin.url))
    health = Health(outbox, worker, degraded_after=5)
    (sms_id,) = await queue(outbox, 1)
    before = time.time()
    await worker.start()
    await logs.wait("push.rate_limited", sms_id=sms_id)
    status = worker.status()
    assert status.paused_until is not None
    assert before + 600 <= status.paused_until <= time.time() + 600
    level, report = await health.report()
    assert level is Level.DEGRADED
    up = report["checks"]["upstream"]
    assert up["status"] == "degraded"
    until_ = datetime.fromisoformat(up["paused_until"])
    assert until_.tzinfo is not None
    assert abs(until_.timestamp() - status.paused_until) < 1.0
    assert 590 < up["paused_for"] <= 600
