"""kill -9 at random moments under load, 20 times: nothing accepted is lost or renumbered."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Callable
from typing import Any

import aiohttp

from gateway.play.standin import Answer, StandIn
from tests.fakes.daemon import INGEST_TOKEN, DaemonProcess

KILLS = 20


class Producer:
    """Posts one message at a time, each with its own `id`, retrying until it is taken."""

    def __init__(self, daemon: DaemonProcess) -> None:
        self.daemon = daemon
        self.accepted: dict[str, int] = {}  # text -> smsId the daemon answered with
        self.refused: list[tuple[int, Any]] = []  # any answer other than 200/201
        self.stopping = False
        self.failed_posts = 0  # POSTs that got no answer: the daemon was down or died mid-way

    async def post_until_taken(self, session: aiohttp.ClientSession, n: int) -> None:
        text = f"load message {n:05d}"
        payload = {"id": f"ref-{n}", "phone": "79001234567", "phoneFrom": "Load", "text": text}
        headers = {"Authorization": f"Bearer {INGEST_TOKEN}"}
        while True:
            try:
                async with session.post(
                    self.daemon.base + "/v1/sms", json=payload, headers=headers
                ) as resp:
                    body = await resp.json(content_type=None)
                    if resp.status in (200, 201):
                        self.accepted[text] = body["smsId"]
                        return
                    self.refused.append((resp.status, body))
            except (aiohttp.ClientError, TimeoutError, ValueError):
                self.failed_posts += 1  # down, or died mid-answer: the same id again
            await asyncio.sleep(0.05)

    async def run(self) -> None:
        timeout = aiohttp.ClientTimeout(total=3)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            n = 0
            while not self.stopping:
                await self.post_until_taken(session, n)
                n += 1


async def test_twenty_kill_9s_under_load_lose_nothing_and_never_renumber(
    daemon_factory: Callable[..., Any], standin: StandIn
) -> None:
    rng = random.Random(20261127)
    standin.script.extend(Answer(delay=rng.uniform(0.0, 0.08)) for _ in range(100_000))
    daemon: DaemonProcess = await daemon_factory(upstream={"retry_interval": 0.2, "timeout": 1.0})
    producer = Producer(daemon)
    task = asyncio.create_task(producer.run())
    try:
        for _ in range(KILLS):
            await asyncio.sleep(rng.uniform(0.05, 0.6))  # the random moment of the crash
            daemon.kill()
            await daemon.start()
        producer.stopping = True
        async with asyncio.timeout(15):
            await task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    daemon.kill()
    await daemon.start()

    accepted_ids = set(producer.accepted.values())
    assert len(accepted_ids) >= 50, f"too little load to mean anything: {len(accepted_ids)}"
    assert len(accepted_ids) == len(producer.accepted)  # distinct texts got distinct smsIds
    assert producer.refused == []
    assert producer.failed_posts >= KILLS  # every kill hit a producer that kept posting
    await standin.wait_for(lambda s: s.delivered_ids() >= accepted_ids, timeout=30)

    ids_by_text: dict[str, set[int]] = {}
    for push in standin.pushes:
        if push.body is not None and push.sms_id is not None:
            ids_by_text.setdefault(push.body["text"], set()).add(push.sms_id)
    renumbered = {text: ids for text, ids in ids_by_text.items() if len(ids) > 1}
    assert renumbered == {}, "the same message went upstream under two smsIds"
    for text, sms_id in producer.accepted.items():
        assert ids_by_text[text] == {sms_id}
    assert await daemon.stop() == 0
