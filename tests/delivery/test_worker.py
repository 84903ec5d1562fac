"""The delivery worker in this process, on a real store, against real servers on 127.0.0.1."""

from __future__ import annotations

import socket
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from gateway.config import UpstreamConfig
from gateway.delivery import DeliveryWorker
from gateway.delivery.client import UpstreamClient
from gateway.metrics import Metrics
from gateway.outbox import Attempt, Incoming, Outbox, Outcome
from tests.delivery.conftest import LogWatch, until

KEY = "worker-test-key-0123456789"
WorkerFactory = Callable[..., DeliveryWorker]


def upstream(url: str, **kw: Any) -> UpstreamConfig:
    """Built directly: config refuses some of these URLs, the worker must cope all the same."""
    kw.setdefault("retry_interval", 0.2)
    kw.setdefault("timeout", 2.0)
    return UpstreamConfig(url=url, api_key=KEY, **kw)


@pytest.fixture
async def workers(outbox: Outbox) -> AsyncIterator[WorkerFactory]:
    started: list[DeliveryWorker] = []

    def make(cfg: UpstreamConfig, **kw: Any) -> DeliveryWorker:
        kw.setdefault("environ", {})  # no proxy from the environment of whoever runs the tests
        worker = DeliveryWorker(outbox, cfg, Metrics(), keep_finished=3600, **kw)
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
