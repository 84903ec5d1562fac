"""The real daemon's /metrics, scraped once for the deploy tests: a daemon with a simulated modem
(a real pty), a GoIP peer, an SMPP box bound to its [smpp_server] (and one refused for a wrong
password), an [[smpp_client]] with no SMSC behind its port (never bound) and the partner side on
(one GET_SERVICES answered), one SMS each from the API, the modem and the box delivered to the
stand-in upstream, so that every metric family the rules and the dashboard may name has
samples."""

from __future__ import annotations

import asyncio
import json
import re
import socket
from pathlib import Path

import aiohttp
import pytest

from gateway.play.modem import FakeModem
from gateway.play.pdu import encode_deliver
from gateway.play.standin import StandIn
from gateway.sources.smpp.pdu import Command, Status
from tests.deploy.promql import Exposition
from tests.fakes.daemon import DaemonProcess, write_config
from tests.sources.smpp.peer import Peer, sm

PEERS = """
[modems]
scan_interval = 1
command_timeout = 1
reopen_max = 0.5

[[modem]]
name = "m1"
port = {port}

[[sim]]
iccid = {iccid}
phone = "79001234567"

[[goip]]
name = "g1"
listen = "127.0.0.1:0"
id = "goip01"
password = "goip-test-password"

[smpp_server]
listen = "127.0.0.1:{smpp_port}"

[[smpp_server.account]]
system_id = "box1"
password = "{smpp_password}"

[[smpp_client]]  # nothing listens on its port: it never binds
name = "op1"
host = "127.0.0.1"
port = {smsc_port}
system_id = "gw"
password = "pw"
reconnect_max = 0.5

[partner]
listen = "127.0.0.1:{partner_port}"
key = "{partner_key}"
services = ["vk"]
push_without_activation = true  # the SMS are pushed (delivered counters), not held
"""
PARTNER_KEY = "partner-scrape-key"
SMPP_PASSWORD = "smpp-pw"
# The modem has been read: a signal reading (not NaN) and its SIM storage's size.
READ = (
    re.compile(r'^sms_gateway_modem_signal\{modem="m1"\} -?\d', re.MULTILINE),
    'sms_gateway_modem_storage_capacity{modem="m1"}',
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _scrape(directory: Path) -> str:
    standin = StandIn()
    await standin.start()
    fake = FakeModem("simcom", link_dir=directory)
    fake.start()
    partner_port = free_port()
    smpp_port = free_port()
    peers: list[Peer] = []  # closed before the daemon stops (no unbind to wait for)
    daemon = DaemonProcess(
        write_config(
            directory,
            standin.url,
            extra=PEERS.format(
                port=json.dumps(fake.port),
                iccid=json.dumps(fake.iccid),
                partner_port=partner_port,
                partner_key=PARTNER_KEY,
                smpp_port=smpp_port,
                smpp_password=SMPP_PASSWORD,
                smsc_port=free_port(),
            ),
        )
    )
    try:
        await daemon.start()
        status, _ = await daemon.post_sms({"phone": "79001234567", "phoneFrom": "S", "text": "t"})
        assert status == 201
        await fake.wait_command("AT+CMGL=4", timeout=10)  # the modem is read
        fake.deliver(encode_deliver("Bank", "code 1234"))
        box = Peer()
        await box.connect(smpp_port)
        peers.append(box)
        assert (await box.bind("box1", SMPP_PASSWORD)).status == Status.ROK  # bind box1#1
        box.send_message(sm(1, b"from the box"))
        h, _ = await box.read_until(Command.SUBMIT_SM_RESP)
        assert h.status == Status.ROK
        refused = Peer()  # an error series: bind_refused
        await refused.connect(smpp_port)
        peers.append(refused)
        assert (await refused.bind("box1", "wrong")).status == Status.RINVPASWD
        await standin.wait_for(lambda s: len(s.delivered()) >= 3, timeout=10)
        async with aiohttp.ClientSession() as session, asyncio.timeout(15):
            call = {"action": "GET_SERVICES", "key": PARTNER_KEY}
            async with session.post(f"http://127.0.0.1:{partner_port}/", json=call) as resp:
                assert resp.status == 200, await resp.text()
            while True:  # the modem's gauges are set once its network and storage are read
                async with session.get(daemon.base + "/metrics") as resp:
                    text = await resp.text()
                if READ[0].search(text) and READ[1] in text:
                    return text
                await asyncio.sleep(0.1)  # polled, bounded by the timeout above
    finally:
        for peer in peers:
            await peer.close()
        if daemon.proc is not None:
            await daemon.stop()
        fake.stop()
        await standin.stop()


@pytest.fixture(scope="session")
def exposition(tmp_path_factory: pytest.TempPathFactory) -> Exposition:
    """One scrape of the real daemon, shared by the alert and the dashboard tests."""
    return Exposition.parse(asyncio.run(_scrape(tmp_path_factory.mktemp("scrape"))))
