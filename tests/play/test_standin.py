"""The stand-in's flaky mode: `fail_ratio` of the requests get a 500, drawn from an injected rng."""

from __future__ import annotations

import json
import random
from collections.abc import AsyncIterator

import aiohttp
import pytest

from gateway.play.standin import Answer, StandIn


def body(i: int) -> bytes:
    return json.dumps(
        {"smsId": i, "phoneFrom": "Bench", "phone": "79001234567", "text": f"code {i}",
         "action": "PUSH_SMS", "key": "k"}
    ).encode()  # fmt: skip


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


async def statuses(standin: StandIn, session: aiohttp.ClientSession, n: int) -> list[int]:
    out = []
    for i in range(1, n + 1):
        async with session.post(standin.url, data=body(i)) as r:
            await r.read()
            out.append(r.status)
    return out


async def run(session: aiohttp.ClientSession, n: int, fail_ratio: float, seed: int) -> list[int]:
    standin = StandIn(fail_ratio=fail_ratio, rng=random.Random(seed))
    await standin.start()
    try:
        return await statuses(standin, session, n)
    finally:
        await standin.stop()


async def test_fail_ratio_half_fails_about_half_with_500_and_answers_200_otherwise(
    session: aiohttp.ClientSession,
) -> None:
    got = await run(session, 200, 0.5, seed=7)
    assert set(got) == {200, 500}
    assert 70 <= got.count(500) <= 130


async def test_same_seed_fails_the_same_requests(session: aiohttp.ClientSession) -> None:
    first = await run(session, 40, 0.5, seed=3)
    again = await run(session, 40, 0.5, seed=3)
    assert first == again


async def test_fail_ratio_can_be_turned_off_while_running(session: aiohttp.ClientSession) -> None:
    standin = StandIn(fail_ratio=1.0)
    await standin.start()
    try:
        assert await statuses(standin, session, 5) == [500] * 5
        standin.fail_ratio = 0.0
        assert await statuses(standin, session, 5) == [200] * 5
        assert standin.delivered_count == 5
        assert [p.status for p in standin.pushes] == [500] * 5 + [200] * 5
    finally:
        await standin.stop()


async def test_scripted_answers_come_before_failures(session: aiohttp.ClientSession) -> None:
    standin = StandIn(fail_ratio=1.0)
    standin.script.append(Answer(200))
    await standin.start()
    try:
        assert await statuses(standin, session, 2) == [200, 500]
    finally:
        await standin.stop()


def test_fail_ratio_outside_0_to_1_is_refused() -> None:
    with pytest.raises(ValueError, match="fail_ratio"):
        StandIn(fail_ratio=1.5)
