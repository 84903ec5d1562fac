"""PeerSources: the configured peers built, started and stopped together; phones by [[sim]]."""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client import generate_latest

from gateway import config
from gateway.config import SimConfig
from gateway.errors import ConfigError, GatewayError
from gateway.fields import device_time
from gateway.health import Level
from gateway.intake import Intake
from gateway.metrics import Metrics
from gateway.outbox import Incoming, Outbox, State
from gateway.outbox.models import Hold
from gateway.peers import PeerSources
from gateway.sources.sim_match import phone_for
from tests.fakes.peers import serving
from tests.fakes.yeastar import FakeYeastar

SIMS = (
    SimConfig(phone="79000000001", source="box-1", port="1"),
    SimConfig(phone="79000000002", source="dinstar:box-1", port="2"),
    SimConfig(phone="79000000003", source="box-1"),
    SimConfig(phone="79000000004", imsi="250990000000004"),
)


@pytest.mark.parametrize(
    ("source", "port", "imsi", "phone"),
    [
        ("dinstar:box-1", "1", None, "79000000001"),  # bare name with port
        ("dinstar:box-1", "2", None, "79000000002"),  # full source name with port
        ("dinstar:box-1", "9", None, "79000000003"),  # the entry without a port: any port
        ("dinstar:box-1", None, None, "79000000003"),
        ("ejoin:box-2", "1", "250990000000004", "79000000004"),  # by IMSI
        ("ejoin:box-2", "1", None, None),
    ],
)
def test_phone_for_first_matching_entry(
    source: str, port: str | None, imsi: str | None, phone: str | None
) -> None:
    assert phone_for(SIMS, source=source, port=port, imsi=imsi) == phone


def test_a_portless_lookup_only_finds_portless_entries() -> None:
    sims = (SimConfig(phone="79000000001", source="box-1", port="1"),)
    assert phone_for(sims, source="goip:box-1") is None


def test_device_time_is_used_only_when_plausible() -> None:
    now = 1_700_000_000.0
    assert device_time(now - 30, now) == now - 30
    assert device_time(str(int(now) - 30), now) == now - 30
    assert device_time(now + 3600, now) == now  # clock ahead
    assert device_time("2016-07-12 15:46:18", now) == now  # years behind
    assert device_time("garbage", now) == now


# -- PeerSources ---------------------------------------------------------------------------


def make_config(tmp_path: Path, **tables: Any) -> config.Config:
    return config.parse(
        {
            "upstream": {"url": "http://127.0.0.1:9/push", "api_key": "k"},
            "store": {"path": str(tmp_path / "outbox.sqlite3")},
            **tables,
        }
    )


@pytest.fixture
async def outbox(tmp_path: Path) -> AsyncIterator[Outbox]:
    ob = await Outbox.open(str(tmp_path / "outbox.sqlite3"))
    yield ob
    await ob.close()


def test_a_malformed_allow_entry_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"dinstar\[0\]\.allow: '10.0.0.300'"):
        make_config(tmp_path, dinstar=[{"name": "b", "token": "t", "allow": ["10.0.0.300"]}])


async def test_routes_checks_and_metrics_for_every_configured_peer(
    tmp_path: Path, outbox: Outbox
) -> None:
    tg = FakeYeastar()
    await tg.start()
    cfg = make_config(
        tmp_path,
        dinstar=[{"name": "box-1", "token": "tok-dinstar-1"}],
        ejoin=[{"name": "sky-1", "token": "tok-ejoin-1"}],
        goip=[{"name": "goip-1", "id": "goip01", "password": "pw", "listen": "127.0.0.1:0"}],
        yeastar=[
            {
                "name": "tg-1",
                "host": "127.0.0.1",
                "port": tg.port,
                "username": "apiuser",
                "password": "secret-pw",
            }
        ],
    )
    metrics = Metrics()
    peers = PeerSources(cfg, Intake(outbox, metrics), metrics)
    assert sorted(r.path for r in peers.routes()) == [
        "/v1/inbound/dinstar/box-1",
        "/v1/inbound/ejoin/sky-1",
    ]
    await peers.start()
    try:
        await tg.wait_until(lambda: tg.logins == 1)
        checks = peers.health_checks()
        assert set(checks) == {"dinstar:box-1", "ejoin:sky-1", "goip:goip-1", "yeastar:tg-1"}
        assert checks["dinstar:box-1"].level is Level.OK
        exposition = generate_latest(metrics.registry).decode()
        for source in checks:
            assert f'sms_gateway_messages_received_total{{source="{source}"}} 0.0' in exposition
        assert "tok-dinstar-1" not in json.dumps({n: c.details for n, c in checks.items()})
    finally:
        await peers.stop()
        await tg.stop()
    assert not peers.yeastar[0].connected


async def test_a_push_through_the_app_counts_in_metrics(tmp_path: Path, outbox: Outbox) -> None:
    cfg = make_config(tmp_path, dinstar=[{"name": "box-1", "token": "tok-dinstar-1"}])
    metrics = Metrics()
    peers = PeerSources(cfg, Intake(outbox, metrics), metrics)
    body = {"sn": "s", "sms": [{"incoming_sms_id": 3, "port": 0, "number": "1", "text": "x"}]}
    async with serving(peers) as base, aiohttp.ClientSession() as s:
        for token in ("tok-dinstar-1", "bad"):
            url = f"{base}/v1/inbound/dinstar/box-1"
            async with s.post(url, params={"token": token}, json=body):
                pass
    exposition = generate_latest(metrics.registry).decode()
    assert 'sms_gateway_messages_received_total{source="dinstar:box-1"} 1.0' in exposition
    assert 'sms_gateway_source_rejected_total{source="dinstar:box-1"} 1.0' in exposition


async def test_held_messages_go_out_once_the_config_names_the_phone(
    tmp_path: Path, outbox: Outbox
) -> None:
    intake = Intake(outbox)
    held = Incoming("goip:goip-1", "", "+7900", "waited", 1.0, "r1", hold=Hold.NO_PHONE)
    (accepted,) = await intake.accept([held])
    cfg = make_config(
        tmp_path,
        goip=[{"name": "goip-1", "id": "goip01", "password": "pw", "listen": "127.0.0.1:0"}],
        sim=[{"source": "goip-1", "port": "goip01", "phone": "79001230001"}],
    )
    peers = PeerSources(cfg, intake, Metrics())
    await peers.start()
    await peers.stop()
    m = await outbox.get_message(accepted.sms_id)
    assert m is not None and (m.state, m.phone) == (State.QUEUED, "79001230001")


async def test_a_goip_port_in_use_fails_start_with_a_clear_error(
    tmp_path: Path, outbox: Outbox
) -> None:
    taken = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    taken.bind(("127.0.0.1", 0))
    port = taken.getsockname()[1]
    cfg = make_config(
        tmp_path,
        goip=[{"name": "goip-1", "id": "goip01", "password": "pw", "listen": f"127.0.0.1:{port}"}],
    )
    peers = PeerSources(cfg, Intake(outbox), Metrics())
    try:
        with pytest.raises(GatewayError, match=f"cannot listen on 127.0.0.1:{port}"):
            await peers.start()
    finally:
        taken.close()
