"""Delivery follows activations: a rent activation's SMS goes to the rent URL with `service`,
every other to PUSH_SMS; two upstreams on different hosts, each with connections of its own."""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.config import UpstreamConfig
from gateway.delivery import DeliveryWorker
from gateway.delivery.worker import default_rent_url, push_body
from gateway.intake import Intake
from gateway.metrics import Metrics
from gateway.outbox import Message, Outbox, Outcome, State
from gateway.outbox.models import Incoming
from gateway.play.standin import Answer, StandIn
from tests.delivery.conftest import LogWatch
from tests.delivery.test_push_body import message, reference, upstream

KEY = "rent-test-key-0123456789"
PLAIN_PHONE, RENT_PHONE, NOBODY = "79001110001", "79002220002", "79003330003"


@dataclasses.dataclass(frozen=True)
class Open:
    activation_id: int
    service: str
    rent: bool
    opened_at: float = 0.0


ACTIVATIONS = {PLAIN_PHONE: Open(101, "vk", False), RENT_PHONE: Open(202, "rent", True)}


@pytest.fixture
async def plain() -> AsyncIterator[StandIn]:
    s = StandIn(key=KEY)
    await s.start("127.0.0.1")
    yield s
    await s.stop()


@pytest.fixture
async def rent() -> AsyncIterator[StandIn]:
    """Another host (127.0.0.2), the rent path; it takes the body with `service` as it comes."""
    s = StandIn(key=KEY, path="/pushSmsRent")
    s.default = Answer()
    await s.start("127.0.0.2")
    yield s
    await s.stop()


def rent_url(s: StandIn) -> str:
    return f"http://127.0.0.2:{s.port}/pushSmsRent"


@pytest.fixture
async def worker(outbox: Outbox, plain: StandIn, rent: StandIn) -> AsyncIterator[DeliveryWorker]:
    cfg = UpstreamConfig(url=plain.url, api_key=KEY, retry_interval=0.2, timeout=2.0)
    w = DeliveryWorker(outbox, cfg, Metrics(), environ={}, rent_url=rent_url(rent))
    yield w
    await w.stop(grace=1.0)


async def accept(outbox: Outbox, *phones: str) -> list[int]:
    intake = Intake(outbox, activation_for=ACTIVATIONS.get)
    now = time.time()
    items = [Incoming("modem", p, "VK", f"code {i}", now) for i, p in enumerate(phones)]
    return [a.sms_id for a in await intake.accept(items)]


def bodies(s: StandIn) -> list[dict[str, Any]]:
    return [p.body for p in s.pushes if p.body is not None]


async def test_rent_goes_to_the_rent_url_with_service_and_plain_to_push_sms(
    outbox: Outbox, worker: DeliveryWorker, plain: StandIn, rent: StandIn, logs: LogWatch
) -> None:
    plain_id, rent_id, held_id = await accept(outbox, PLAIN_PHONE, RENT_PHONE, NOBODY)
    await worker.start()
    await logs.wait("push.delivered", sms_id=plain_id, activation_id=101)
    await logs.wait("push.delivered", sms_id=rent_id, activation_id=202)
    (p,) = bodies(plain)
    (r,) = bodies(rent)
    assert p == {
        "smsId": plain_id,
        "phoneFrom": "VK",
        "phone": PLAIN_PHONE,
        "text": "code 0",
        "action": "PUSH_SMS",
        "key": KEY,
    }
    assert r == {
        "smsId": rent_id,
        "phoneFrom": "VK",
        "phone": RENT_PHONE,
        "text": "code 1",
        "action": "PUSH_SMS",
        "service": "rent",
        "key": KEY,
    }
    # Same headers on both: the key as Bearer too, the JSON content type.
    for s in (plain, rent):
        (push,) = s.pushes
        assert push.headers["Authorization"] == f"Bearer {KEY}"
        assert push.headers["Content-Type"] == "application/json; charset=utf-8"
    held = await outbox.get_message(held_id)
    assert held is not None and held.state is State.HELD and held.attempts == 0


async def test_a_rent_push_is_retried_with_the_same_body_and_no_operation_is_final(
    outbox: Outbox, worker: DeliveryWorker, plain: StandIn, rent: StandIn, logs: LogWatch
) -> None:
    rent.script.extend(
        [Answer(500, '{"response": "INTERNAL_ERROR"}'), Answer()]  # first rent SMS
    )
    (retried,) = await accept(outbox, RENT_PHONE)
    await worker.start()
    await logs.wait("push.delivered", sms_id=retried)
    first, second = rent.pushes
    assert first.raw == second.raw and b'"service":"rent"' in first.raw
    assert second.at - first.at >= 0.2 * 0.9  # retry_interval after the failed one

    rent.script.append(Answer(404, '{"response": "NO_OPERATION"}'))
    intake = Intake(outbox, activation_for=ACTIVATIONS.get)
    (late,) = await intake.accept([Incoming("modem", RENT_PHONE, "VK", "late", time.time())])
    dropped = late.sms_id
    line = await logs.wait("push.dropped", sms_id=dropped)
    assert line["code"] == "NO_OPERATION"
    m = await outbox.get_message(dropped)
    assert m is not None and (m.state, m.final_code) == (State.DROPPED, "NO_OPERATION")
    assert [a.outcome for a in await outbox.attempts_for(dropped)] == [Outcome.DROPPED]
    assert plain.received == 0


async def test_both_hosts_keep_their_own_kept_alive_connections(
    outbox: Outbox, worker: DeliveryWorker, plain: StandIn, rent: StandIn, logs: LogWatch
) -> None:
    await worker.start()
    for round_ in range(3):
        ids = await accept(outbox, PLAIN_PHONE, RENT_PHONE)
        for sms_id in ids:
            await logs.wait("push.delivered", sms_id=sms_id)
        assert (plain.delivered_count, rent.delivered_count) == (round_ + 1, round_ + 1)
    # One request at a time each: one connection per host, reused for every round.
    assert len(plain.peers) == 1 and len(rent.peers) == 1
    assert {p.headers["Host"] for p in plain.pushes} == {f"127.0.0.1:{plain.port}"}
    assert {p.headers["Host"] for p in rent.pushes} == {f"127.0.0.2:{rent.port}"}


async def test_a_rent_message_with_the_partner_side_off_goes_to_the_default_rent_url(
    outbox: Outbox, logs: LogWatch
) -> None:
    """Accepted for a rent while [partner] was on, pushed after it was turned off: the
    default rent URL on the upstream's host, not PUSH_SMS without its `service`."""
    s = StandIn(key=KEY, path="/pushSmsRent")
    s.default = Answer()
    await s.start("127.0.0.1")
    cfg = UpstreamConfig(
        url=f"http://127.0.0.1:{s.port}/v1/PUSH_SMS", api_key=KEY, retry_interval=0.2
    )
    w = DeliveryWorker(outbox, cfg, Metrics(), environ={})
    try:
        (sms_id,) = await accept(outbox, RENT_PHONE)
        await w.start()
        await logs.wait("push.delivered", sms_id=sms_id)
        (body,) = bodies(s)
        assert body["service"] == "rent"
    finally:
        await w.stop(grace=1.0)
        await s.stop()


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://onlinesim.io/v1/PUSH_SMS", "https://onlinesim.io/pushSmsRent"),
        ("http://127.0.0.1:8765/v1/PUSH_SMS", "http://127.0.0.1:8765/pushSmsRent"),
        ("https://h.example/a/b?x=1", "https://h.example/pushSmsRent?x=1"),
        ("https://[::1]:9/p", "https://[::1]:9/pushSmsRent"),
    ],
)
def test_the_default_rent_url_is_the_upstream_host_with_push_sms_rent(
    url: str, expected: str
) -> None:
    assert default_rent_url(url) == expected


def rent_reference(m: Message, cfg: UpstreamConfig) -> bytes:
    body = json.loads(reference(m, cfg))
    key = body.pop("key")
    body["service"] = m.rent_service
    body["key"] = key
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()


@given(
    st.integers(1, 2**53),
    st.text(max_size=40),
    st.text(max_size=200),
    st.text(max_size=40),
    st.sampled_from(["string", "integer"]),
)
def test_a_rent_body_is_json_dumps_with_service_before_key(
    sms_id: int, sender: str, text: str, service: str, phone_type: str
) -> None:
    cfg = upstream(phone_type, KEY)
    m = dataclasses.replace(message(sms_id, "79001234567", sender, text), rent_service=service)
    assert push_body(m, cfg) == rent_reference(m, cfg)
    assert json.loads(push_body(m, cfg))["service"] == service
    plain = dataclasses.replace(m, rent_service=None)
    assert "service" not in json.loads(push_body(plain, cfg))
