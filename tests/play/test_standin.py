"""The stand-in: its flaky mode (`fail_ratio` of the requests get a 500, from an injected rng), and
Onlinesim's side of the partner protocol played against the real partner API on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import signal
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from gateway.outbox import Outbox
from gateway.outbox.partner import FinishStatus, PartnerBook
from gateway.partner.api import ApiLimits, partner_app
from gateway.partner.desk import Desk, SimState, SimView
from gateway.play.standin import Answer, OrderState, PartnerError, PartnerPlay, StandIn


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


# --- Onlinesim's side: against the real partner API, desk and store on 127.0.0.1 -----------

PARTNER_KEY = "partner-key-for-tests"


def push(phone: str, sms_id: int) -> bytes:
    return json.dumps(
        {"smsId": sms_id, "phoneFrom": "VK", "phone": phone, "text": f"VK code {sms_id}",
         "action": "PUSH_SMS", "key": "k"}
    ).encode()  # fmt: skip


def inventory() -> list[SimView]:
    """Eight SIMs: six in russia over two operators, two in kazakhstan."""
    return [
        *(SimView(f"mts-{i}", f"7900100000{i}", "russia", "mts", SimState.READY, True)
          for i in range(4)),
        *(SimView(f"beeline-{i}", f"7900200000{i}", "russia", "beeline", SimState.READY, True)
          for i in range(2)),
        *(SimView(f"kcell-{i}", f"7700300000{i}", "kazakhstan", "kcell", SimState.READY, True)
          for i in range(2)),
    ]  # fmt: skip


@dataclass
class Partner:
    url: str
    desk: Desk
    book: PartnerBook


@pytest.fixture
async def partner(tmp_path: Path) -> AsyncIterator[Partner]:
    """The gateway's partner API (real app, desk and SQLite store) on a loopback port."""
    outbox = await Outbox.open(str(tmp_path / "outbox.sqlite3"))
    book = PartnerBook(outbox)
    await book.start()
    desk = Desk(store=book, services=("vk", "wa"), clock=time.time)
    desk.update_sims(inventory())
    app = partner_app(desk, key=PARTNER_KEY, limits=ApiLimits(rate=1000, burst=1000))
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    host, port = runner.addresses[0][:2]
    yield Partner(f"http://{host}:{port}", desk, book)
    await runner.cleanup()
    await outbox.close()


@contextlib.asynccontextmanager
async def onlinesim(partner: Partner, **settings: Any) -> AsyncIterator[StandIn]:
    play = PartnerPlay(partner.url, PARTNER_KEY, **{"services_interval": 0.0, **settings})
    standin = StandIn(partner=play)
    await standin.start()
    try:
        yield standin
    finally:
        await standin.stop()


async def post_push(
    session: aiohttp.ClientSession, standin: StandIn | StandInAt, body: bytes
) -> int:
    async with session.post(standin.url, data=body) as r:
        await r.read()
        return r.status


async def test_orders_a_number_takes_its_sms_and_finishes_it_sold(
    partner: Partner, session: aiohttp.ClientSession
) -> None:
    async with onlinesim(partner, service="vk") as standin:
        before = await standin.get_services()
        order = await standin.order()
        assert order is not None and order.country == "russia"  # where most vk numbers are
        [opened] = partner.desk.open_activations()
        assert (opened.activation_id, opened.phone) == (order.activation_id, order.phone)
        during = await standin.get_services()
        assert StandIn.count(during, "vk") == StandIn.count(before, "vk") - 1

        assert await post_push(session, standin, push(order.phone, 41)) == 200
        await standin.wait_for(lambda s: order.state is OrderState.FINISHED, timeout=10)
        assert order.status == 3 and order.sms_ids == [41]
        stored = await partner.book.activation(order.activation_id)
        assert stored is not None and stored.status is FinishStatus.SOLD
        after = await standin.get_services()
        # Sold: gone from vk for good; free again for wa.
        assert StandIn.count(after, "vk") == StandIn.count(before, "vk") - 1
        assert StandIn.count(after, "wa") == StandIn.count(before, "wa")
        # Finished: a second SMS on that number is no longer taken.
        assert await post_push(session, standin, push(order.phone, 42)) == 404


async def test_unordered_numbers_get_no_operation_as_phones_outside_active_do(
    partner: Partner, session: aiohttp.ClientSession
) -> None:
    async with onlinesim(partner, service="vk") as standin:
        async with session.post(standin.url, data=push("79001000003", 7)) as r:
            assert (r.status, await r.json()) == (404, {"response": "NO_OPERATION"})
        order = await standin.order(country="kazakhstan")
        assert order is not None and order.phone.startswith("77")
        assert await post_push(session, standin, push("79001000003", 8)) == 404
        assert await post_push(session, standin, push(order.phone, 9)) == 200
        assert [p.status for p in standin.pushes] == [404, 404, 200]


async def test_no_sms_within_the_activation_time_finishes_it_cancelled(
    partner: Partner,
) -> None:
    async with onlinesim(partner, service="wa", activation_time=0.3) as standin:
        before = StandIn.count(await standin.get_services(), "wa")
        order = await standin.order()
        assert order is not None
        await standin.wait_for(lambda s: order.state is OrderState.FINISHED, timeout=10)
        assert (order.status, order.sms_ids, order.finish_attempts) == (4, [], 1)
        stored = await partner.book.activation(order.activation_id)
        assert stored is not None and stored.status is FinishStatus.CANCELLED
        # Cancelled: offered for wa again.
        assert StandIn.count(await standin.get_services(), "wa") == before
        assert partner.desk.open_activations() == []


async def test_finish_after_an_sms_waits_finish_after_seconds(partner: Partner) -> None:
    async with onlinesim(partner, service="vk", finish_after=0.4) as standin, \
            aiohttp.ClientSession() as session:  # fmt: skip
        order = await standin.order()
        assert order is not None
        assert await post_push(session, standin, push(order.phone, 1)) == 200
        assert order.state.value == "closing"  # FINISH 3 decided, not sent yet
        # More SMS before the FINISH are still the client's.
        assert await post_push(session, standin, push(order.phone, 2)) == 200
        await standin.wait_for(lambda s: order.state is OrderState.FINISHED, timeout=10)
        assert order.sms_ids == [1, 2] and order.status == 3


async def test_orders_on_a_schedule_until_nothing_is_left(partner: Partner) -> None:
    async with onlinesim(
        partner, service="vk", country="kazakhstan", order_interval=0.05, services_interval=0.05
    ) as standin:
        await standin.wait_for(lambda s: s.no_numbers >= 1 and len(s.services_seen) >= 2)
        phones = {o.phone for o in standin.orders.values()}
        assert len(standin.orders) == len(phones) == 2  # both kazakh SIMs, each once
        assert standin.reused_numbers == 0


async def test_http_control_orders_finishes_and_shows_activations(
    partner: Partner, session: aiohttp.ClientSession
) -> None:
    async with onlinesim(partner, activation_time=600) as standin:
        base = standin.url.rsplit("/v1", 1)[0]
        async with session.post(f"{base}/order", json={"service": "wa"}) as r:
            assert r.status == 200
            ordered = await r.json()
        assert ordered["state"] == "open" and ordered["service"] == "wa"
        async with session.post(f"{base}/order", data=b"[1]") as r:
            assert r.status == 400
        async with session.post(f"{base}/order", json={"service": "telegram"}) as r:
            assert await r.json() == {"status": "NO_NUMBERS"}  # not offered at all
        async with session.post(
            f"{base}/activations/{ordered['activationId']}/finish", json={"status": 4}
        ) as r:
            assert r.status == 200
        await standin.wait_for(lambda s: not partner.desk.open_activations())
        async with session.get(f"{base}/activations") as r:
            view = await r.json()
        assert view["open"] == 0 and view["noNumbers"] == 1
        [shown] = view["activations"]
        assert (shown["activationId"], shown["state"], shown["finishStatus"]) == (
            ordered["activationId"], "finished", 4,
        )  # fmt: skip
        async with session.get(f"{base}/services") as r:
            assert (await r.json())["answer"]["status"] == "SUCCESS"


async def test_a_wrong_partner_key_is_reported_not_hidden(partner: Partner) -> None:
    play = PartnerPlay(partner.url, "not-the-key", services_interval=0)
    standin = StandIn(partner=play)
    await standin.start()
    try:
        with pytest.raises(PartnerError, match="ERROR_WRONG_KEY"):
            await standin.order("vk", "russia")
        assert "not-the-key" not in " ".join(standin.partner_errors)
    finally:
        await standin.stop()


def test_partner_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="order_interval needs a service"):
        PartnerPlay("http://127.0.0.1:1", "k", order_interval=1.0)
    with pytest.raises(ValueError, match="activation_time"):
        PartnerPlay("http://127.0.0.1:1", "k", activation_time=0)


async def test_without_a_partner_it_orders_nothing() -> None:
    standin = StandIn()
    await standin.start()
    try:
        with pytest.raises(PartnerError, match="no partner"):
            await standin.order("vk")
    finally:
        await standin.stop()


async def test_the_command_takes_the_partner_key_from_a_file_and_orders_on_post(
    partner: Partner, tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    key_file = tmp_path / "partner.key"
    key_file.write_text(PARTNER_KEY + "\n", encoding="utf-8")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", "stand-in", "--port", "0", "--rate", "0",
        "--partner-url", partner.url, "--partner-key-file", str(key_file), "--order", "wa",
        "--services-every", "0",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    assert proc.stdout is not None
    try:
        async with asyncio.timeout(20):
            line = (await proc.stdout.readline()).decode()
        base = line.split()[-1].rsplit("/v1", 1)[0]
        async with session.post(f"{base}/order") as r:
            ordered = await r.json()
        assert ordered["service"] == "wa" and ordered["state"] == "open"
        [opened] = partner.desk.open_activations()
        assert opened.activation_id == ordered["activationId"]
        assert await post_push(session, StandInAt(base), push(ordered["phone"], 5)) == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        output, _ = await asyncio.wait_for(proc.communicate(), 10)
    assert proc.returncode == 0
    assert PARTNER_KEY not in output.decode()


@dataclass
class StandInAt:
    """A stand-in in another process, as post_push needs it."""

    base: str

    @property
    def url(self) -> str:
        return f"{self.base}/v1/PUSH_SMS"


async def test_rent_pushes_with_their_service_field_are_taken_on_the_rent_path() -> None:
    stand = StandIn(key="k")
    await stand.start()
    try:
        body = {
            "smsId": 1, "phoneFrom": "X", "phone": "79001234567", "text": "t",
            "action": "PUSH_SMS", "service": "rent", "key": "k",
        }  # fmt: skip
        async with aiohttp.ClientSession() as s:
            async with s.post(f"http://127.0.0.1:{stand.port}/pushSmsRent", json=body) as r:
                assert r.status == 200
            async with s.post(f"http://127.0.0.1:{stand.port}/v1/PUSH_SMS", json=body) as r:
                assert r.status == 400  # the plain path takes the plain body only
    finally:
        await stand.stop()
