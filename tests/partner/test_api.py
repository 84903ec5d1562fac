"""The partner API over real loopback HTTP: documented answers; hostile input costs nothing."""

from __future__ import annotations

import asyncio
import gzip
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from gateway.partner.api import ApiLimits, CallStats, partner_app
from gateway.partner.desk import Desk
from tests.partner.test_desk import Clock, MemoryStore, sims

KEY = "s3cret-partner-key"


@pytest.fixture
async def served() -> AsyncIterator[tuple[str, Desk, MemoryStore, CallStats]]:
    store = MemoryStore(delay=0.001)
    desk = Desk(store=store, services=("vk", "wa"), clock=Clock())
    desk.update_sims(sims(50))
    stats = CallStats()
    app = partner_app(
        desk, key=KEY, stats=stats, limits=ApiLimits(max_body=8192, rate=1000, burst=1000)
    )
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    yield f"http://{host}:{port}", desk, store, stats
    await runner.cleanup()


async def post(url: str, body: Any, **kw: Any) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as s, s.post(url, json=body, **kw) as r:
        return r.status, await r.json(content_type=None)


async def test_get_number_then_finish_over_http(
    served: tuple[str, Desk, MemoryStore, CallStats],
) -> None:
    url, _, _, stats = served
    status, answer = await post(
        f"{url}/getNumber",
        {
            "action": "GET_NUMBER",
            "country": "russia",
            "operator": "any",
            "service": "vk",
            "key": KEY,
        },
    )
    assert status == 200 and answer["status"] == "SUCCESS"
    assert isinstance(answer["number"], int) and isinstance(answer["activationId"], int)
    status, answer = await post(
        f"{url}/finishActivation",
        {
            "action": "FINISH_ACTIVATION",
            "activationId": answer["activationId"],
            "status": 3,
            "key": KEY,
        },
    )
    assert (status, answer) == (200, {"status": "SUCCESS"})
    assert stats.last_call_at is not None and stats.last_action == "FINISH_ACTIVATION"


async def test_one_url_by_the_bodys_action_and_the_key_as_bearer_or_query(
    served: tuple[str, Desk, MemoryStore, CallStats],
) -> None:
    url, *_ = served
    status, answer = await post(
        f"{url}/", {"action": "GET_SERVICES"}, headers={"Authorization": f"Bearer {KEY}"}
    )
    assert status == 200 and answer["status"] == "SUCCESS"
    any_ = answer["countryList"][0]["operatorMap"]["any"]
    assert any_ == {"vk": 50, "wa": 50}
    status, answer = await post(f"{url}/getServices?apikey={KEY}", {})
    assert status == 200 and answer["status"] == "SUCCESS"


@pytest.mark.parametrize(
    ("body", "headers", "expected"),
    [
        ({"action": "GET_SERVICES"}, {}, (401, "ERROR_NO_KEY")),
        ({"action": "GET_SERVICES", "key": "nope"}, {}, (401, "ERROR_WRONG_KEY")),
        ({"action": "GET_SERVICES", "key": 5}, {}, (401, "ERROR_WRONG_KEY")),
        (
            {"action": "GET_SERVICES", "key": KEY},
            {"Authorization": "Bearer nope"},
            (401, "ERROR_WRONG_KEY"),
        ),
        ({"action": "DROP_TABLES", "key": KEY}, {}, (400, "action: unknown action 'DROP_TABLES'")),
        (
            {"action": "GET_NUMBER", "key": KEY, "country": 7, "service": "vk"},
            {},
            (400, "country: must be a string"),
        ),
    ],
)
async def test_bad_calls_get_the_documented_answer(
    served: tuple[str, Desk, MemoryStore, CallStats],
    body: Any,
    headers: dict[str, str],
    expected: tuple[int, str],
) -> None:
    url, _, store, _ = served
    status, answer = await post(f"{url}/", body, headers=headers)
    assert (status, answer["error"]) == expected and answer["status"] == "ERROR"
    assert store.activations == {}


async def raw_post(url: str, data: bytes, headers: dict[str, str]) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as s, s.post(url, data=data, headers=headers) as r:
        return r.status, await r.json(content_type=None)


async def test_bad_json_oversize_and_gzip_bomb_are_refused(
    served: tuple[str, Desk, MemoryStore, CallStats],
) -> None:
    url, *_ = served
    assert (await raw_post(f"{url}/", b"{nope", {}))[0] == 400
    assert (await raw_post(f"{url}/", b'{"key": "' + b"x" * 10_000 + b'"}', {}))[0] == 413
    bomb = gzip.compress(b'{"key": "' + b"0" * 50_000_000 + b'"}')
    assert len(bomb) < 100_000
    assert (await raw_post(f"{url}/", bomb, {"Content-Encoding": "gzip"}))[0] == 413
    assert (await raw_post(f"{url}/", b"[" * 1500 + b"]" * 1500, {}))[0] in (400, 401)
    huge_int = b'{"key": "k", "activationId": 1' + b"1" * 4400 + b"}"
    assert (await raw_post(f"{url}/", huge_int, {}))[0] == 400


async def test_gzip_in_and_gzip_out(served: tuple[str, Desk, MemoryStore, CallStats]) -> None:
    url, *_ = served
    data = gzip.compress(json.dumps({"action": "GET_SERVICES", "key": KEY}).encode())
    async with (
        aiohttp.ClientSession(auto_decompress=False) as s,
        s.post(
            f"{url}/", data=data, headers={"Content-Encoding": "gzip", "Accept-Encoding": "gzip"}
        ) as r,
    ):
        assert r.status == 200 and r.headers["Content-Encoding"] == "gzip"
        assert json.loads(gzip.decompress(await r.read()))["status"] == "SUCCESS"


async def test_get_is_refused(served: tuple[str, Desk, MemoryStore, CallStats]) -> None:
    url, *_ = served
    async with aiohttp.ClientSession() as s, s.get(f"{url}/getNumber") as r:
        assert r.status == 405


async def test_500_concurrent_orders_over_http_get_50_numbers(
    served: tuple[str, Desk, MemoryStore, CallStats],
) -> None:
    url, *_ = served
    body = {
        "action": "GET_NUMBER",
        "country": "russia",
        "operator": "any",
        "service": "vk",
        "key": KEY,
    }
    conn = aiohttp.TCPConnector(limit=100)
    async with aiohttp.ClientSession(connector=conn) as s:

        async def one() -> dict[str, Any]:
            async with s.post(f"{url}/getNumber", json=body) as r:
                return dict(await r.json())

        answers = await asyncio.gather(*(one() for _ in range(500)))
    numbers = [a["number"] for a in answers if a["status"] == "SUCCESS"]
    assert len(numbers) == 50 and len(set(numbers)) == 50
    assert sum(a["status"] == "NO_NUMBERS" for a in answers) == 450


async def test_a_flooding_address_is_rate_limited() -> None:
    clock_value = [0.0]
    clock: Callable[[], float] = lambda: clock_value[0]  # noqa: E731
    desk = Desk(store=MemoryStore(), services=("vk",), clock=Clock())
    app = partner_app(desk, key=KEY, limits=ApiLimits(rate=1, burst=3), clock=clock)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        codes = [
            (await post(f"http://{host}:{port}/", {"action": "GET_SERVICES", "key": KEY}))[0]
            for _ in range(5)
        ]
        assert codes == [200, 200, 200, 429, 429]
        clock_value[0] += 1.0
        assert (await post(f"http://{host}:{port}/", {"action": "GET_SERVICES", "key": KEY}))[
            0
        ] == 200
    finally:
        await runner.cleanup()
