"""The gateway boxes feed the SIM inventory, over their real transports: a GoIP line over UDP on
loopback, a Yeastar TG through the fake TG's TCP API, Dinstar and Ejoin pushes over real HTTP
into PeerSources' routes. What each box reports appears with its state, liveness and last SMS;
a silent or disconnected box goes not live within a bound; a GoIP or Yeastar SIM with a
``[[sim]]`` phone becomes countable by the partner desk (fed through ``on_change``), while a
push-only port is listed and never counted."""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway import config
from gateway.intake import Intake
from gateway.inventory.sims import Inventory, LiveSim, SimState
from gateway.metrics import Metrics
from gateway.outbox import Outbox
from gateway.outbox.partner import PartnerBook
from gateway.partner.desk import Desk
from gateway.partner.requests import GetServices
from gateway.partner.service import sim_view
from gateway.peers import PeerSources
from gateway.sources import dinstar, ejoin
from gateway.sources.goip import GoipServer
from gateway.sources.yeastar import YeastarClient, span_state
from tests.fakes.daemon import DaemonProcess
from tests.fakes.peers import serving
from tests.fakes.yeastar import FakeYeastar
from tests.inventory.conftest import InventoryWatch
from tests.sources.test_goip import Line

PASSWORD = "goip-secret-pw"
PARTNER_KEY = "partner-key-SECRET-0123"
ICCID = "8970199123456789012"
IMSI_MTS = "250011234567890"  # MCC 250 (Russia), MNC 01: "mts" by the fixture's names
UP = "Power on, Provisioned, Up, Active,Standard"
DOWN = "Power on, Provisioned, Down, Active,Standard"
NO_SIM = "Power on, Provisioned, Undetected SIM Card, Active,Standard"


def keepalive(seq: int = 12, *, gsm: str = "LOGIN", signal: str = "25", iccid: str = ICCID) -> str:
    """A keepalive as GoIP firmware sends it (fields in its order)."""
    return (
        f"req:{seq};id:goip01;pass:{PASSWORD};num:;signal:{signal};gsm_status:{gsm};"
        "voip_status:LOGOUT;voip_state:IDLE;remain_time:-1;imei:865123456789012;"
        f"imsi:{IMSI_MTS};iccid:{iccid};pro:MTS RUS;idle:10;disable_status:0;SMS_LOGIN:N"
    )


def make_config(tmp_path: Path, **tables: Any) -> config.Config:
    return config.parse(
        {
            "upstream": {"url": "http://127.0.0.1:9/push", "api_key": "k"},
            "store": {"path": str(tmp_path / "outbox.sqlite3")},
            **tables,
        }
    )


class Countable:
    """A partner desk fed by the inventory's on_change, as the daemon wires it."""

    def __init__(self, inventory: Inventory, outbox: Outbox) -> None:
        self.desk = Desk(store=PartnerBook(outbox), services=("vk",), clock=time.time)
        self.history: list[LiveSim] = []
        inventory.on_change(self._changed)

    def _changed(self, batch: list[LiveSim]) -> None:
        self.history.extend(batch)
        self.desk.update_sims(sim_view(s) for s in batch)

    def count(self, country: str = "russia", operator: str = "any") -> int:
        for c in self.desk.get_services(GetServices(rent=False))["countryList"]:
            if c["country"] == country:
                return int(c["operatorMap"].get(operator, {}).get("vk", 0))
        return 0


# -- GoIP ----------------------------------------------------------------------------------


@pytest.fixture
async def goip(
    tmp_path: Path, outbox: Outbox, inventory: InventoryWatch
) -> AsyncIterator[tuple[GoipServer, Line]]:
    cfg = make_config(
        tmp_path,
        goip=[{"name": "goip-1", "id": "goip01", "password": PASSWORD, "listen": "127.0.0.1:0",
               "quiet_period": 0.2}],
        sim=[{"source": "goip-1", "port": "goip01", "phone": "79001230001"}],
    )  # fmt: skip
    peers = PeerSources(cfg, _intake(outbox), Metrics(), inventory=inventory.inventory)
    server = peers.goip[0]
    server.keepalive_stale = 0.6
    await peers.start()
    line = Line()
    await line.open(server.address)
    yield server, line
    line.close()
    await peers.stop()


def _intake(outbox: Outbox) -> Intake:
    return Intake(outbox, Metrics())


async def test_goip_line_is_a_live_ready_sim_while_it_keeps_alive_and_countable(
    goip: tuple[GoipServer, Line], inventory: InventoryWatch, outbox: Outbox
) -> None:
    _, line = goip
    desk = Countable(inventory.inventory, outbox)
    line.send(keepalive())
    assert await line.answer() == "reg:12;status:200;"
    await inventory.until(lambda: ICCID in inventory.by_key())
    sim = inventory.by_key()[ICCID]
    r = sim.record
    assert sim.live and r.state == "ready"
    assert (r.source, r.location, r.imsi, r.mcc, r.mnc) == (
        "goip:goip-1", "goip01", IMSI_MTS, "250", "01",
    )  # fmt: skip
    assert (r.phone, r.phone_origin, r.signal) == ("79001230001", "sim", -63)  # CSQ 25
    assert (r.country, r.operator, r.last_sms) == ("russia", "mts", None)
    assert desk.count() == 1 and desk.count(operator="mts") == 1

    before = time.time()
    line.send(f"RECEIVE:77;id:goip01;password:{PASSWORD};srcnum:+79005556677;msg:code 1234")
    assert await line.answer() == "RECEIVE 77 OK"
    await inventory.until(lambda: (inventory.by_key()[ICCID].record.last_sms or 0) >= before)

    # silence: keepalive_stale (0.6 s here) after the last keepalive the SIM is absent
    silent_at = time.monotonic()
    await inventory.until(lambda: not inventory.by_key()[ICCID].live, timeout=3.0)
    assert time.monotonic() - silent_at < 2.0
    assert inventory.by_key()[ICCID].record.state == "absent"
    assert desk.count() == 0

    line.send(keepalive(13))
    assert await line.answer() == "reg:13;status:200;"
    await inventory.until(lambda: inventory.by_key()[ICCID].live)
    assert desk.count() == 1


async def test_goip_states_follow_gsm_status_and_signal_and_the_key_falls_back_to_the_port(
    goip: tuple[GoipServer, Line], inventory: InventoryWatch
) -> None:
    _, line = goip
    line.send(keepalive(1, iccid=""))  # firmware that reports no ICCID
    await line.answer()
    key = "goip:goip-1:goip01"
    await inventory.until(lambda: key in inventory.by_key())
    assert inventory.by_key()[key].record.state == "ready"
    line.send(keepalive(2, iccid="", gsm="LOGOUT"))
    await line.answer()
    await inventory.until(lambda: inventory.by_key()[key].record.state == "not_registered")
    assert inventory.by_key()[key].live  # in a working module, not registered: not counted
    line.send(keepalive(3, iccid="", signal="99"))
    await line.answer()
    await inventory.until(lambda: inventory.by_key()[key].record.state == "no_signal")
    assert inventory.by_key()[key].record.signal is None


async def test_goip_line_is_absent_once_the_server_stops(
    tmp_path: Path, outbox: Outbox, inventory: InventoryWatch
) -> None:
    cfg = make_config(
        tmp_path,
        goip=[{"name": "goip-1", "id": "goip01", "password": PASSWORD, "listen": "127.0.0.1:0"}],
    )
    server = GoipServer(cfg.goip[0], _intake(outbox), inventory=inventory.inventory)
    await server.start()
    line = Line()
    await line.open(server.address)
    line.send(keepalive())
    await line.answer()
    await inventory.until(lambda: ICCID in inventory.by_key() and inventory.by_key()[ICCID].live)
    assert inventory.by_key()[ICCID].record.phone == ""  # no [[sim]], no num: unknown
    await server.stop()
    line.close()
    assert not inventory.by_key()[ICCID].live


async def test_a_forged_keepalive_tells_the_inventory_nothing(
    goip: tuple[GoipServer, Line], inventory: InventoryWatch
) -> None:
    _, line = goip
    line.send(keepalive().replace(PASSWORD, "wrong"))
    with pytest.raises(TimeoutError):
        await line.answer(timeout=0.3)
    assert inventory.by_key() == {}


# -- Yeastar -------------------------------------------------------------------------------


@pytest.fixture
async def tg() -> AsyncIterator[FakeYeastar]:
    fake = FakeYeastar()
    fake.spans = {2: UP, 3: DOWN, 4: NO_SIM}
    fake.span_info = {
        2: {"Network Name": "MTS RUS", "Network Status": "Registered (Home network)",
            "Signal Quality (0,31)": "23", "SIM IMSI": IMSI_MTS, "State": "READY"},
        3: {"Signal Quality (0,31)": "99", "SIM IMSI": "250019999999999"},
    }  # fmt: skip
    await fake.start()
    yield fake
    await fake.stop()


def yeastar_client(
    tmp_path: Path, tg: FakeYeastar, outbox: Outbox, inventory: Inventory, **kw: Any
) -> YeastarClient:
    cfg = make_config(
        tmp_path,
        yeastar=[{"name": "tg-1", "host": "127.0.0.1", "port": tg.port, "username": "apiuser",
                  "password": "secret-pw", "reconnect_max": 0.5}],
        sim=[{"source": "tg-1", "port": "2", "phone": "79001230002"}],
    )  # fmt: skip
    return YeastarClient(cfg.yeastar[0], _intake(outbox), cfg.sim, inventory=inventory, **kw)


async def test_yeastar_spans_are_live_while_the_session_is_up_and_the_span_is_up(
    tmp_path: Path, tg: FakeYeastar, outbox: Outbox, inventory: InventoryWatch
) -> None:
    desk = Countable(inventory.inventory, outbox)
    client = yeastar_client(tmp_path, tg, outbox, inventory.inventory, ping_interval=0.2)
    await client.start()
    try:
        up, down = "yeastar:tg-1:2", "yeastar:tg-1:3"
        await inventory.until(
            lambda: up in inventory.by_key() and inventory.by_key()[up].record.imsi is not None
        )
        sim = inventory.by_key()[up]
        r = sim.record
        assert sim.live and r.state == "ready"
        assert (r.location, r.imsi, r.operator, r.signal) == ("2", IMSI_MTS, "mts", -67)
        assert (r.phone, r.phone_origin) == ("79001230002", "sim")
        assert inventory.by_key()[down].record.state == "not_registered"
        assert "yeastar:tg-1:4" not in inventory.by_key()  # no SIM in it: nothing to list
        assert desk.count(operator="mts") == 1  # the Down span is not counted

        before = time.time()
        await tg.send_sms(2, "+79005556677", "code 4321")
        await inventory.until(lambda: (inventory.by_key()[up].record.last_sms or 0) >= before)

        tg.spans[2] = DOWN  # the port loses the network while the session stays up
        await inventory.until(lambda: inventory.by_key()[up].record.state == "not_registered")
        assert desk.count() == 0
        tg.spans[2] = UP
        await inventory.until(lambda: inventory.by_key()[up].record.state == "ready")
        assert desk.count() == 1

        history_at = len(desk.history)
        tg.drop_clients()  # a TG reboot: every port absent at once, then back after login
        await inventory.until(
            lambda: any(s.record.sim_key == up and not s.live for s in desk.history[history_at:])
        )
        assert any(
            s.record.sim_key == up and s.record.state == "absent" for s in desk.history[history_at:]
        )
        await inventory.until(lambda: inventory.by_key()[up].live)
    finally:
        await client.stop()
    assert not inventory.by_key()[up].live and not inventory.by_key()[down].live
    assert desk.count() == 0


async def test_a_span_only_its_sms_names_is_listed_not_live(
    tmp_path: Path, tg: FakeYeastar, outbox: Outbox, inventory: InventoryWatch
) -> None:
    tg.spans = {}  # firmware whose API answers no span list
    client = yeastar_client(tmp_path, tg, outbox, inventory.inventory)
    await client.start()
    try:
        await tg.wait_until(lambda: tg.logins == 1)
        await tg.send_sms(5, "+79005556677", "hello")
        key = "yeastar:tg-1:5"
        await inventory.until(lambda: key in inventory.by_key())
        sim = inventory.by_key()[key]
        assert not sim.live and sim.record.state == "ready" and sim.record.last_sms is not None
    finally:
        await client.stop()


@given(st.text(max_size=80))
@settings(max_examples=200, deadline=None)
def test_span_state_of_any_status_line_is_a_state(status: str) -> None:
    assert isinstance(span_state(status), SimState)


def test_span_state_words() -> None:
    assert span_state(UP) is SimState.READY
    assert span_state(DOWN) is SimState.NOT_REGISTERED
    assert span_state(NO_SIM) is SimState.ABSENT
    assert span_state("Power off, Provisioned, Down") is SimState.ABSENT


# -- Dinstar and Ejoin: SMS pushes name ports, never liveness (Ejoin status pushes: test_ejoin) --


def ejoin_content(text: str) -> str:
    body = f'Sender: 900\r\nReceiver: "1.01"\r\nSMSC: 79000000000\r\n\r\n{text}'
    return base64.b64encode(body.encode()).decode()


async def test_pushed_ports_are_listed_with_last_sms_but_never_live_or_counted(
    tmp_path: Path, outbox: Outbox, inventory: InventoryWatch
) -> None:
    cfg = make_config(
        tmp_path,
        dinstar=[{"name": "box-1", "token": "tok-d"}],
        ejoin=[{"name": "sky-1", "token": "tok-e"}],
        sim=[{"source": "box-1", "port": "1", "phone": "79001230003"}],
    )
    desk = Countable(inventory.inventory, outbox)
    peers = PeerSources(cfg, _intake(outbox), Metrics(), inventory=inventory.inventory)
    before = time.time()
    dinstar_body = {"sn": "sn-1", "sms": [
        {"incoming_sms_id": 1, "port": 1, "number": "900", "text": "a", "imsi": IMSI_MTS},
        {"incoming_sms_id": 2, "number": "900", "text": "no port: no SIM named"},
    ]}  # fmt: skip
    ejoin_body = {"type": "recv-sms", "sms_num": 1, "sms": [
        [0, "1.01", int(before), "900", "+79001230004", ejoin_content("b"), ICCID, IMSI_MTS],
        [1, "2.01", int(before), "900", "", "0 250101120000"],  # a delivery report
    ]}  # fmt: skip
    async with serving(peers) as base, aiohttp.ClientSession() as s:
        async with s.post(f"{base}/v1/inbound/dinstar/box-1?token=tok-d", json=dinstar_body) as r:
            assert r.status == 200
        async with s.post(f"{base}/v1/inbound/ejoin/sky-1?token=tok-e", json=ejoin_body) as r:
            assert r.status == 200
        # a refused push (wrong token) lists nothing
        bad = {"sn": "x", "sms": [{"incoming_sms_id": 3, "port": 7, "number": "1", "text": "x"}]}
        async with s.post(f"{base}/v1/inbound/dinstar/box-1?token=no", json=bad) as r:
            assert r.status == 401
    sims = inventory.by_key()
    assert set(sims) == {"dinstar:box-1:1", ICCID}
    d = sims["dinstar:box-1:1"]
    assert not d.live and d.record.state == "ready"
    assert (d.record.imsi, d.record.operator, d.record.phone) == (IMSI_MTS, "mts", "79001230003")
    assert (d.record.last_sms or 0) >= before
    e = sims[ICCID]
    assert not e.live and (e.record.location, e.record.imsi) == ("1.01", IMSI_MTS)
    assert (e.record.phone, e.record.phone_origin) == ("79001230004", "source")
    assert desk.count() == 0 and desk.count(operator="mts") == 0
    assert all(not s.live for s in desk.history)


@given(st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=8) | st.dictionaries(
        st.sampled_from(["sn", "sms", "port", "imsi", "type", "text", "x"]), children, max_size=6
    ),
    max_leaves=30,
))  # fmt: skip
@settings(max_examples=300, deadline=None)
def test_sightings_of_any_body_never_raise_and_are_never_live(payload: Any) -> None:
    for module in (dinstar, ejoin):
        for s in module.sightings(payload, source="x:y", sims=(), now=1.0):
            assert not s.live and s.port


def test_ejoin_rows_whose_content_is_garbage_still_name_their_port() -> None:
    body = {"type": "recv-sms", "sms": [[0, "3A", 1, "900", "", "%%%not base64"]]}
    (s,) = ejoin.sightings(json.loads(json.dumps(body)), source="ejoin:s", sims=(), now=5.0)
    assert (s.port, s.last_sms, s.imsi, s.iccid) == ("3A", 5.0, None, None)


# -- in a real daemon: the wiring from the config to GET_SERVICES ---------------------------


async def test_a_daemon_counts_its_goip_sim_and_never_a_dinstar_port(
    tmp_path: Path, daemon_factory: Callable[..., Any]
) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        udp = int(probe.getsockname()[1])
    extra = f"""
[partner]
listen = "127.0.0.1:0"
key = "{PARTNER_KEY}"
services = ["vk"]

[[goip]]
name = "goip-1"
id = "goip01"
password = "{PASSWORD}"
listen = "127.0.0.1:{udp}"

[[dinstar]]
name = "box-1"
token = "tok-d"

[[sim]]
source = "goip-1"
port = "goip01"
phone = "79001230001"

[[sim]]
source = "box-1"
port = "3"
phone = "79001230003"
"""
    daemon: DaemonProcess = await daemon_factory(extra=extra)
    (listening,) = [e for e in daemon.logs() if e["event"] == "partner.listening"]
    services = f"http://127.0.0.1:{listening['port']}/getServices"

    async def vk_count(s: aiohttp.ClientSession) -> int:
        async with s.post(services, json={"key": PARTNER_KEY}) as r:
            answer = await r.json()
        return sum(int(c["operatorMap"]["any"].get("vk", 0)) for c in answer["countryList"])

    line = Line()
    await line.open(("127.0.0.1", udp))
    try:
        async with aiohttp.ClientSession() as s:
            assert await vk_count(s) == 0
            line.send(keepalive())
            assert await line.answer(timeout=5) == "reg:12;status:200;"
            push = {"sn": "sn", "sms": [
                {"incoming_sms_id": 1, "port": 3, "number": "900", "text": "x", "imsi": IMSI_MTS},
            ]}  # fmt: skip
            url = f"{daemon.base}/v1/inbound/dinstar/box-1?token=tok-d"
            async with s.post(url, json=push) as r:
                assert r.status == 200
            for _ in range(200):  # the GoIP SIM, not the Dinstar port; 10 s at most
                if await vk_count(s) == 1:
                    break
                await asyncio.sleep(0.05)
            assert await vk_count(s) == 1
    finally:
        line.close()
    assert await daemon.stop() == 0
    outbox = await Outbox.open(str(tmp_path / "outbox.sqlite3"), readonly=True, migrate=False)
    try:
        records = {r.sim_key: r for r in await PartnerBook(outbox, read_mark=False).sims()}
    finally:
        await outbox.close()
    assert records[ICCID].phone == "79001230001" and records[ICCID].state == "absent"
    assert records["dinstar:box-1:3"].last_sms is not None
