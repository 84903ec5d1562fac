"""The partner service with real parts: a SQLite store on disk, the listener on 127.0.0.1 behind
the connection guard, TLS from trustme certificates, Prometheus metrics and the health check."""

from __future__ import annotations

import asyncio
import gzip
import json
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, NamedTuple

import aiohttp
import pytest
import trustme

from gateway.config import PartnerConfig
from gateway.health import Level
from gateway.inventory.sims import Inventory, Sighting, SimState
from gateway.metrics import Metrics
from gateway.outbox import Outbox
from gateway.outbox.partner import ActivationState, SimRecord
from gateway.partner.service import PartnerService, local_address, sim_view

KEY = "partner-key-SECRET-0123"
ORDER = {"action": "GET_NUMBER", "country": "russia", "operator": "any", "service": "vk"}


class Live(NamedTuple):
    """Shaped as the inventory's `LiveSim`."""

    record: SimRecord
    live: bool


def records(n: int, *, operator: str = "mts", state: str = "ready") -> list[Live]:
    return [
        Live(
            SimRecord(
                sim_key=f"8970100{i:012d}",
                source="modem",
                location=f"m{i}",
                state=state,
                last_seen=0.0,
                country="russia",
                operator=operator,
                phone=f"7900{i:07d}",
            ),
            True,
        )
        for i in range(n)
    ]


Factory = Callable[..., Awaitable[PartnerService]]


@pytest.fixture
async def make(tmp_path: Path) -> AsyncIterator[Factory]:
    made: list[tuple[PartnerService, Outbox]] = []

    async def factory(
        sims: int = 50, metrics: Metrics | None = None, **overrides: Any
    ) -> PartnerService:
        outbox = await Outbox.open(str(tmp_path / "store.sqlite3"))
        cfg = PartnerConfig(
            listen="127.0.0.1:0",
            key=KEY,
            services=("vk", "wa"),
            rate=10_000.0,
            **overrides,
        )
        service = PartnerService(
            cfg,
            upstream_key="upstream-key",
            outbox=outbox,
            metrics=metrics or Metrics(),
            max_connections=1000,
        )
        service.on_inventory(records(sims))
        await service.start()
        made.append((service, outbox))
        return service

    yield factory
    for service, outbox in made:
        await service.stop()
        await outbox.close()


def url(service: PartnerService, path: str = "/", scheme: str = "http") -> str:
    return f"{scheme}://127.0.0.1:{service.bound_port}{path}"


async def post(target: str, body: Any, **kw: Any) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as s, s.post(target, json=body, **kw) as r:
        return r.status, await r.json(content_type=None)


async def raw_post(target: str, data: bytes, headers: dict[str, str] | None = None) -> Any:
    async with aiohttp.ClientSession() as s, s.post(target, data=data, headers=headers) as r:
        return r.status, await r.json(content_type=None)


async def open_in_store(service: PartnerService) -> int:
    return len(await service.book.activations(open_only=True))


async def test_500_concurrent_orders_through_the_guard_get_50_numbers_all_committed(
    make: Factory,
) -> None:
    service = await make(sims=50)
    conn = aiohttp.TCPConnector(limit=200)
    async with aiohttp.ClientSession(connector=conn) as s:

        async def one() -> dict[str, Any]:
            async with s.post(url(service, "/getNumber"), json={**ORDER, "key": KEY}) as r:
                assert r.status == 200
                return dict(await r.json())

        answers = await asyncio.gather(*(one() for _ in range(500)))
    won = [a for a in answers if a["status"] == "SUCCESS"]
    assert len(won) == 50 and len({a["number"] for a in won}) == 50
    assert sum(a["status"] == "NO_NUMBERS" for a in answers) == 450
    stored = {a.activation_id: a for a in await service.book.activations(open_only=True)}
    assert sorted(stored) == sorted(a["activationId"] for a in won)
    assert {int(a.phone) for a in stored.values()} == {a["number"] for a in won}
    _, services = await post(url(service, "/getServices"), {"key": KEY})
    assert services["countryList"] == []  # every SIM is in an open activation


async def test_a_finish_frees_the_sim_and_is_idempotent(make: Factory) -> None:
    metrics = Metrics()
    service = await make(sims=1, metrics=metrics)
    _, got = await post(url(service, "/getNumber"), {**ORDER, "key": KEY})
    finish = {"action": "FINISH_ACTIVATION", "activationId": got["activationId"], "status": 4}
    for _ in range(2):
        assert await post(url(service, "/finishActivation"), {**finish, "key": KEY}) == (
            200,
            {"status": "SUCCESS"},
        )
    ledger = await service.book.ledger()
    assert ledger[(records(1)[0].record.sim_key, "vk")].cancels == 1  # counted once
    body = metrics.exposition()[0].decode()
    assert 'sms_gateway_partner_activations_finished_total{status="4"} 1.0' in body
    assert (
        'sms_gateway_partner_calls_total{answer="SUCCESS",method="FINISH_ACTIVATION"} 2.0' in body
    )
    assert 'sms_gateway_partner_calls_total{answer="SUCCESS",method="GET_NUMBER"} 1.0' in body
    assert "sms_gateway_partner_call_seconds_bucket" in body
    assert "sms_gateway_partner_activations_open 0.0" in body
    assert 'sms_gateway_sims{country="russia",operator="mts",state="ready"} 1.0' in body
    assert "sms_gateway_partner_last_call_timestamp_seconds 0.0" not in body


BAD_CALLS: list[tuple[str, bytes, dict[str, str], int, str]] = [
    ("no key", b'{"action": "GET_NUMBER"}', {}, 401, "ERROR_NO_KEY"),
    ("wrong key", json.dumps({**ORDER, "key": "nope"}).encode(), {}, 401, "ERROR_WRONG_KEY"),
    ("bad JSON", b'{"action": "GET_NU', {}, 400, "body: not valid UTF-8 JSON"),
    (
        "wrong type",
        json.dumps({**ORDER, "country": 7, "key": KEY}).encode(),
        {},
        400,
        "country: must be a string",
    ),
    (
        "unknown action",
        json.dumps({"action": "DROP", "key": KEY}).encode(),
        {},
        400,
        "action: unknown action 'DROP'",
    ),
    ("oversize body", b'{"key": "' + b"x" * 70_000 + b'"}', {}, 413, "body over 65536 bytes"),
    (
        "gzip bomb",
        gzip.compress(b'{"key": "' + b"0" * 30_000_000 + b'"}'),
        {"Content-Encoding": "gzip"},
        413,
        "body over 65536 bytes",
    ),
    (
        "finish status 2",
        json.dumps(
            {"action": "FINISH_ACTIVATION", "activationId": 1, "status": 2, "key": KEY}
        ).encode(),
        {},
        400,
        "status: 2 is not 1, 3, 4 or 5",
    ),
]


@pytest.mark.parametrize(
    ("path", "data", "headers", "status", "error"),
    [("/", *c[1:]) for c in BAD_CALLS] + [("/getNumber", *c[1:]) for c in BAD_CALLS[:5]],
    ids=[c[0] for c in BAD_CALLS] + [f"{c[0]} on /getNumber" for c in BAD_CALLS[:5]],
)
async def test_bad_input_gets_the_documented_answer_and_changes_nothing(
    make: Factory, path: str, data: bytes, headers: dict[str, str], status: int, error: str
) -> None:
    service = await make(sims=2)
    assert await raw_post(url(service, path), data, headers) == (
        status,
        {"status": "ERROR", "error": error},
    )
    assert await open_in_store(service) == 0
    assert (await post(url(service, "/getNumber"), {**ORDER, "key": KEY}))[1]["status"] == (
        "SUCCESS"
    )


async def test_a_slow_client_is_cut_at_request_timeout_and_others_are_served(
    make: Factory,
) -> None:
    service = await make(sims=1, request_timeout=0.5)
    reader, writer = await asyncio.open_connection("127.0.0.1", service.bound_port)
    writer.write(b"POST /getNumber HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
    await writer.drain()
    _, answer = await post(url(service, "/getNumber"), {**ORDER, "key": KEY})
    assert answer["status"] == "SUCCESS"
    async with asyncio.timeout(3):
        assert await reader.read() == b""  # cut, nothing answered
    writer.close()


async def test_a_peer_outside_allow_is_refused_before_a_byte_is_read(make: Factory) -> None:
    service = await make(sims=1, allow=("10.0.0.0/8",))
    with pytest.raises(aiohttp.ClientError):
        await post(url(service, "/getNumber"), {**ORDER, "key": KEY})
    assert await open_in_store(service) == 0


async def test_tls_from_cert_and_key_files(make: Factory, tmp_path: Path) -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("partner.example", "127.0.0.1")
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.private_key_and_cert_chain_pem.write_to_path(str(cert_file))
    cert.private_key_pem.write_to_path(str(key_file))
    service = await make(sims=1, tls_cert=str(cert_file), tls_key=str(key_file))
    client = ssl.create_default_context()
    ca.configure_trust(client)
    status, answer = await post(url(service, "/getServices", "https"), {"key": KEY}, ssl=client)
    assert status == 200 and answer["countryList"][0]["operatorMap"]["any"] == {"vk": 1, "wa": 1}
    with pytest.raises(aiohttp.ClientError):  # plain HTTP on the TLS port gets nothing
        await post(url(service, "/getServices"), {"key": KEY})


async def test_stop_answers_the_calls_in_flight_and_every_answer_is_committed(
    make: Factory,
) -> None:
    service = await make(sims=30)

    async def one(s: aiohttp.ClientSession) -> dict[str, Any] | None:
        try:
            async with s.post(url(service, "/getNumber"), json={**ORDER, "key": KEY}) as r:
                return dict(await r.json())
        except aiohttp.ClientError:
            return None  # refused: the listener had stopped accepting

    async with aiohttp.ClientSession() as s:
        calls = [asyncio.create_task(one(s)) for _ in range(30)]
        await asyncio.sleep(0)
        await service.stop()
        answers = [a for a in await asyncio.gather(*calls) if a is not None]
    won = {a["activationId"] for a in answers if a["status"] == "SUCCESS"}
    stored = {a.activation_id for a in await service.book.activations(open_only=True)}
    assert won <= stored  # every number handed out is recorded
    assert not service.listening


async def test_the_desk_comes_back_from_the_store(make: Factory, tmp_path: Path) -> None:
    first = await make(sims=3)
    _, got = await post(url(first, "/getNumber"), {**ORDER, "key": KEY})
    await first.stop()
    second = await make(sims=3)
    assert second.desk.open_count == 1
    _, services = await post(url(second, "/getServices"), {"key": KEY})
    assert services["countryList"][0]["operatorMap"]["any"]["vk"] == 2
    assert (
        await post(
            url(second, "/finishActivation"),
            {
                "action": "FINISH_ACTIVATION",
                "activationId": got["activationId"],
                "status": 3,
                "key": KEY,
            },
        )
    )[1] == {"status": "SUCCESS"}


async def test_health_turns_degraded_when_onlinesim_is_quiet(make: Factory) -> None:
    service = await make(sims=2)
    check = service.health_check()
    assert check.level is Level.OK and check.details["last_call_age"] is None
    assert check.details["sims_usable"] == 2 and check.details["listening"] is True
    await post(url(service, "/getNumber"), {**ORDER, "key": KEY})
    check = service.health_check()
    assert check.details["open_activations"] == 1 and check.details["last_method"] == "GET_NUMBER"
    service.stats.last_call_at = (service.stats.last_call_at or 0) - 601
    assert service.health_check().level is Level.DEGRADED
    await service.stop()
    assert service.health_check().level is Level.FAILING


async def test_the_sweep_marks_stale_activations_and_frees_their_sims(make: Factory) -> None:
    service = await make(sims=1, activation_time=60.0, stale_after=0.0)
    _, got = await post(url(service, "/getNumber"), {**ORDER, "key": KEY})
    # The desk's clock runs 61 s ahead: past the end, stale_after 0.
    service.desk.clock = lambda: time.time() + 61
    closed = asyncio.Event()
    counted = service.desk.on_closed
    assert counted is not None

    def on_closed(how: str) -> None:
        counted(how)
        closed.set()

    service.desk.on_closed = on_closed
    await asyncio.wait_for(closed.wait(), 10)  # the sweep runs every 2 s
    assert service.desk.open_count == 0
    a = await service.book.activation(got["activationId"])
    assert a is not None and a.state is ActivationState.STALE
    assert service.health_check().details["stale_activations"] == 1


def test_inventory_records_become_sim_views() -> None:
    live = records(1)[0]
    view = sim_view(live)
    assert (view.key, view.phone, view.country, view.operator, view.live) == (
        "8970100000000000000",
        "79000000000",
        "russia",
        "mts",
        True,
    )
    assert sim_view(Live(replace(live.record, state="weird"), True)).state.value == "sim_error"


def test_a_wildcard_listen_is_reached_on_loopback() -> None:
    assert local_address("0.0.0.0:8443") == ("127.0.0.1", 8443)
    assert local_address("[::]:8443") == ("::1", 8443)
    assert local_address("10.1.2.3:9") == ("10.1.2.3", 9)


async def test_the_real_inventory_feeds_the_desk_and_a_lost_port_leaves_the_count(
    make: Factory,
) -> None:
    service = await make(sims=0)
    inventory = Inventory(names={"250": "russia", "250-01": "mts"})
    inventory.on_change(service.on_inventory)
    for i in range(3):
        inventory.report(
            Sighting(
                source=f"modem:m{i}",
                location=f"m{i}",
                state=SimState.READY,
                iccid=f"897010000000000000{i}",
                imsi=f"25001000000000{i}",
                phone=f"7900000000{i}",
            )
        )
    _, services = await post(url(service, "/getServices"), {"key": KEY})
    assert services["countryList"] == [
        {"country": "russia", "operatorMap": {"any": {"vk": 3, "wa": 3}, "mts": {"vk": 3, "wa": 3}}}
    ]
    inventory.gone("modem:m0", "m0")  # the port is lost: its SIM is no longer offered
    _, services = await post(url(service, "/getServices"), {"key": KEY})
    assert services["countryList"][0]["operatorMap"]["any"] == {"vk": 2, "wa": 2}
    _, got = await post(url(service, "/getNumber"), {**ORDER, "key": KEY})
    assert got["status"] == "SUCCESS" and got["number"] != 79000000000
