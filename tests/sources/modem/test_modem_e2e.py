"""End to end: a simulated modem, `sms-gateway run` in a subprocess, the stand-in upstream."""

from __future__ import annotations

import json
import signal
from collections.abc import Callable
from typing import Any

import aiohttp

from gateway.sources.modem.simulator import FakeModem
from gateway.standin import StandIn
from tests.fakes.daemon import DaemonProcess, write_config
from tests.sources.modem.test_device import PHONE, FakeFactory, fakes, sms

__all__ = ["fakes"]  # fixture

MODEMS = """
[modems]
scan_interval = 1
command_timeout = 1
reopen_max = 0.5

[[modem]]
name = "m1"
port = {port}
"""
SIM = """
[[sim]]
iccid = {iccid}
phone = "{phone}"
"""


def modem_config(fake: FakeModem, *, with_sim: bool) -> str:
    text = MODEMS.format(port=json.dumps(fake.port))
    if with_sim:
        text += SIM.format(iccid=json.dumps(fake.iccid), phone=PHONE)
    return text


def pushes_for(standin: StandIn, text: str) -> list[dict[str, Any]]:
    bodies = [json.loads(p.raw) for p in standin.pushes if p.status == 200]
    return [b for b in bodies if b["text"] == text]


async def test_sms_on_a_modem_is_pushed_with_the_sims_phone(
    fakes: FakeFactory, daemon_factory: Callable[..., Any], standin: StandIn
) -> None:
    fake = fakes("huawei")
    fake.deliver(sms("waiting before start"))  # arrived while the daemon was not running
    daemon: DaemonProcess = await daemon_factory(extra=modem_config(fake, with_sim=True))
    await fake.wait_command("AT+CMGL=4", timeout=10)
    fake.deliver(sms("Your code: 5521", sender="Instagram"))
    await standin.wait_for(lambda s: len(pushes_for(s, "Your code: 5521")) == 1, timeout=10)
    await standin.wait_for(lambda s: len(pushes_for(s, "waiting before start")) == 1, timeout=10)
    (push,) = pushes_for(standin, "Your code: 5521")
    assert (push["phone"], push["phoneFrom"], push["action"]) == (PHONE, "Instagram", "PUSH_SMS")
    await fake.wait_until(lambda: fake.used == 0)

    status, health = await daemon.health()
    assert status == 200
    modems = health["checks"]["modems"]
    assert modems["status"] == "ok"
    m1 = modems["modems"]["m1"]
    assert (m1["iccid"], m1["phone"], m1["sim_ready"]) == (fake.iccid, PHONE, True)
    async with aiohttp.ClientSession() as s, s.get(daemon.base + "/metrics") as resp:
        exposition = await resp.text()
    assert 'sms_gateway_modem_up{modem="m1"} 1.0' in exposition
    assert 'sms_gateway_messages_received_total{source="modem:m1"} 2.0' in exposition
    assert await daemon.stop() == 0


async def test_sighup_with_a_sim_entry_releases_held_messages(
    fakes: FakeFactory, daemon_factory: Callable[..., Any], standin: StandIn
) -> None:
    fake = fakes()
    daemon: DaemonProcess = await daemon_factory(extra=modem_config(fake, with_sim=False))
    await fake.wait_command("AT+CMGL=4", timeout=10)
    fake.deliver(sms("held for a phone"))
    await fake.wait_until(lambda: fake.used == 0 and bool(fake.deleted), timeout=10)
    status, health = await daemon.health()
    assert status == 200 and health["checks"]["modems"]["status"] == "degraded"
    assert health["checks"]["modems"]["modems"]["m1"]["phone"] is None
    assert pushes_for(standin, "held for a phone") == []

    write_config(daemon.dir, standin.url, extra=modem_config(fake, with_sim=True))
    daemon.signal(signal.SIGHUP)
    await standin.wait_for(lambda s: len(pushes_for(s, "held for a phone")) == 1, timeout=10)
    (push,) = pushes_for(standin, "held for a phone")
    assert push["phone"] == PHONE
    assert await daemon.stop() == 0
