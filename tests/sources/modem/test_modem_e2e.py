"""End to end: a simulated modem, `sms-gateway run` in a subprocess, the stand-in upstream."""

from __future__ import annotations

import json
import signal
from collections.abc import Callable
from typing import Any

import aiohttp

from gateway.play.modem import FakeModem
from gateway.play.standin import StandIn
from tests.fakes.daemon import DaemonProcess, write_config
from tests.sources.modem.conftest import PHONE, FakeFactory, sms

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


async def test_kill_9_between_commit_and_delete_gives_one_smsid_and_no_loss(
    fakes: FakeFactory, daemon_factory: Callable[..., Any], standin: StandIn
) -> None:
    fake = fakes("simcom")
    daemon: DaemonProcess = await daemon_factory(extra=modem_config(fake, with_sim=True))
    await fake.wait_command("AT+CMGL=4", timeout=10)
    fake.stall_on = "AT+CMGD"  # the message is committed; the delete never happens
    fake.deliver(sms("code 7319 before the crash", sender="Bank"))
    await fake.wait_command("AT+CMGD", timeout=10)
    daemon.kill()  # kill -9 between the commit and the SIM delete
    assert fake.used == 1  # still on the SIM
    fake.stall_on = None
    fake.silent = False
    await daemon.start()
    await standin.wait_for(lambda s: len(pushes_for(s, "code 7319 before the crash")) >= 1, 15)
    await fake.wait_until(lambda: fake.used == 0, timeout=10)  # read again, then deleted
    pushes = pushes_for(standin, "code 7319 before the crash")
    assert len({p["smsId"] for p in pushes}) == 1  # a resend may happen; a new smsId may not
    dupes = [e for e in daemon.logs() if e.get("event") == "sms.duplicate_ignored"]
    assert any(e["sms_id"] == pushes[0]["smsId"] for e in dupes)
    assert await daemon.stop() == 0


async def test_many_modems_in_one_daemon_all_deliver(
    fakes: FakeFactory, daemon_factory: Callable[..., Any], standin: StandIn
) -> None:
    count = 100
    bank = [
        fakes("quectel", iccid=f"89701990000{i:08d}", link_name=f"usb-bank-{i}-if00-port0")
        for i in range(count)
    ]
    tables = "[modems]\nscan_interval = 5\ncommand_timeout = 2\n"
    for i, fake in enumerate(bank):
        tables += f'[[modem]]\nname = "m{i}"\nport = {json.dumps(fake.port)}\n'
        tables += f'[[sim]]\niccid = "{fake.iccid}"\nphone = "7900{i:07d}"\n'
    daemon: DaemonProcess = await daemon_factory(extra=tables)
    for i, fake in enumerate(bank):
        await fake.wait_command("AT+CNMI", timeout=30)
        fake.deliver(sms(f"hello from modem {i}"))
    await standin.wait_for(lambda s: len(s.delivered_ids()) == count, timeout=60)
    phones = {json.loads(p.raw)["phone"] for p in standin.pushes if p.status == 200}
    assert phones == {f"7900{i:07d}" for i in range(count)}
    _, health = await daemon.health()
    assert health["checks"]["modems"]["up"] == count
    assert await daemon.stop() == 0


async def test_unplugged_modem_is_reopened_and_a_silent_one_reset(
    fakes: FakeFactory, daemon_factory: Callable[..., Any], standin: StandIn
) -> None:
    fake = fakes("telit")
    daemon: DaemonProcess = await daemon_factory(extra=modem_config(fake, with_sim=True))
    await fake.wait_command("AT+CMGL=4", timeout=10)
    fake.unplug()
    fake.deliver(sms("sent while unplugged"))
    fake.replug()
    await standin.wait_for(lambda s: len(pushes_for(s, "sent while unplugged")) == 1, timeout=20)
    fake.silent = True  # hung: reads commands, answers nothing
    await daemon.logged("modem.unresponsive", timeout=15)
    fake.silent = False
    fake.deliver(sms("after the reset"))
    await standin.wait_for(lambda s: len(pushes_for(s, "after the reset")) == 1, timeout=20)
    assert await daemon.stop() == 0
