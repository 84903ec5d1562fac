"""Delivery follows activations through a real daemon: simulated modems on ptys, the partner
listener, and the stand-in playing Onlinesim (it orders a number, takes PUSH_SMS only for it)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from gateway.outbox import Hold, Outbox, State
from gateway.play.standin import PartnerPlay, StandIn
from tests.fakes.daemon import DaemonProcess
from tests.sources.modem.conftest import FakeFactory, sms
from tests.sources.modem.conftest import fakes as fakes  # the fixture, used by name

PARTNER_KEY = "e2e-partner-key-0123456789"
PHONES = {"m1": "79161110001", "m2": "79162220002"}  # MTS SIMs, numbers from [[sim]]
IMSIS = {"m1": "250011000000001", "m2": "250011000000002"}
ICCIDS = {"m1": "8970101000000000011", "m2": "8970101000000000029"}


def config(fakes: dict[str, str], push_without: bool) -> str:
    lines = ["[modems]", "scan_interval = 1", "command_timeout = 1", "reopen_max = 0.5", ""]
    for name, port in fakes.items():
        lines += ["[[modem]]", f'name = "{name}"', f"port = {json.dumps(port)}", ""]
        lines += ["[[sim]]", f'iccid = "{ICCIDS[name]}"', f'phone = "{PHONES[name]}"', ""]
    lines += [
        "[partner]",
        'listen = "127.0.0.1:0"',
        f'key = "{PARTNER_KEY}"',
        'services = ["vk"]',
        f"push_without_activation = {'true' if push_without else 'false'}",
    ]
    return "\n".join(lines) + "\n"


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args], capture_output=True, text=True, timeout=30
    )


async def test_the_ordered_sims_sms_is_pushed_and_the_other_kept(
    tmp_path: Path, fakes: FakeFactory, standin: StandIn, daemon_factory: Callable[..., Any]
) -> None:
    made = {
        n: fakes(imsi=IMSIS[n], iccid=ICCIDS[n], imei=f"86612304567890{i}", operator="MTS")
        for i, n in enumerate(PHONES)
    }
    daemon: DaemonProcess = await daemon_factory(
        extra=config({n: f.port for n, f in made.items()}, push_without=False)
    )
    (listening,) = [e for e in daemon.logs() if e["event"] == "partner.listening"]
    standin.play(
        PartnerPlay(f"http://127.0.0.1:{listening['port']}", PARTNER_KEY, services_interval=0)
    )
    # Both SIMs ready in their modems: Onlinesim is offered two numbers for vk.
    for f in made.values():
        await f.wait_command("AT+CMGL=4", timeout=15)

    async def both_offered() -> bool:
        return StandIn.count(await standin.get_services(), "vk") == 2

    await polled(both_offered, timeout=15)
    order = await standin.order("vk")
    assert order is not None and order.phone in PHONES.values()
    ordered = next(n for n, p in PHONES.items() if p == order.phone)
    other = next(n for n in PHONES if n != ordered)

    made[ordered].deliver(sms("VK code 1111", sender="VK"))
    made[other].deliver(sms("VK code 2222", sender="VK"))
    await standin.wait_for(lambda s: len(s.delivered()) == 1, timeout=15)
    # The other SIM's SMS is committed held, never sent anywhere.
    await daemon.logged("sms.held", reason="no_activation", phone=PHONES[other], timeout=15)
    (pushed,) = standin.delivered()
    assert pushed.body is not None
    assert (pushed.body["phone"], pushed.body["text"]) == (order.phone, "VK code 1111")
    assert all(p.body and p.body["phone"] == order.phone for p in standin.pushes)
    assert await daemon.stop() == 0

    store = str(tmp_path / "outbox.sqlite3")
    outbox = await Outbox.open(store, readonly=True, migrate=False)
    try:
        found = {m.text: m for m in await outbox.list_messages(limit=10)}
    finally:
        await outbox.close()
    mine, kept = found["VK code 1111"], found["VK code 2222"]
    assert (mine.state, mine.activation_id, mine.phone) == (
        State.DELIVERED,
        order.activation_id,
        order.phone,
    )
    assert (kept.state, kept.hold_reason, kept.activation_id, kept.attempts) == (
        State.HELD,
        Hold.NO_ACTIVATION,
        None,
        0,
    )
    # What an operator sees.
    cfg = str(daemon.config_path)
    held = cli("messages", "list", "--state", "held", "-c", cfg)
    assert held.returncode == 0, held.stderr
    (row,) = held.stdout.splitlines()[1:]
    assert str(kept.sms_id) in row and "no_activation" in row and PHONES[other] in row
    listed = cli("messages", "list", "-c", cfg)
    assert "activation" in listed.stdout.splitlines()[0]
    (line,) = [r for r in listed.stdout.splitlines() if r.split()[0] == str(mine.sms_id)]
    assert str(order.activation_id) in line
    shown = cli("messages", "show", str(mine.sms_id), "-c", cfg)
    assert f"activation_id {order.activation_id}" in shown.stdout
    as_json = json.loads(cli("messages", "show", str(kept.sms_id), "--json", "-c", cfg).stdout)
    assert (as_json["hold_reason"], as_json["activation_id"]) == ("no_activation", None)


async def polled(check: Callable[[], Awaitable[bool]], timeout: float) -> None:
    """Wait, bounded, for what the daemon process does: no event crosses the boundary."""
    async with asyncio.timeout(timeout):
        while not await check():  # noqa: ASYNC110 - no event crosses the process boundary
            await asyncio.sleep(0.05)
