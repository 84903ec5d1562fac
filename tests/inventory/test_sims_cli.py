"""`sms-gateway sims` and `sims discover` in a subprocess: the store read without secrets, and
discovery on a pty modem both by itself and through a running daemon (whose upstream, the
stand-in, never sees the operator's answer SMS)."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gateway.outbox import Outbox, State
from gateway.outbox.models import Hold
from gateway.outbox.partner import Activation, LedgerEntry, PartnerBook, SimRecord
from gateway.play.modem import UssdAnswer
from gateway.play.standin import StandIn
from tests.fakes.daemon import DaemonProcess, write_config
from tests.sources.modem.conftest import FakeFactory, sms

NUMBER = "79261234567"
MTS = "250011234567890"
MEGAFON = "250021234567890"


async def cli(*args: str, timeout: float = 60) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gateway",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(timeout):
        out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def partner_config(fake_port: str, network: str, code: str, answer: str = "ussd") -> str:
    return f"""
[modems]
scan_interval = 1
command_timeout = 1
reopen_max = 0.5

[[modem]]
name = "m1"
port = {json.dumps(fake_port)}

[partner]
listen = "127.0.0.1:0"
push_without_activation = true

[[partner.number_query]]
network = "{network}"
code = "{code}"
answer = "{answer}"
sender = "MTS"
pattern = "(\\\\d{{11}})"
timeout = 5
"""


async def test_sims_lists_the_inventory_with_its_ledger_without_secrets(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, "http://127.0.0.1:9/v1/PUSH_SMS")
    # Secrets in files nobody may read: `sims` must not need them.
    text = cfg.read_text().replace(
        'api_key = "test-api-key-SECRET-abcdef"', 'api_key_file = "/nonexistent"'
    )
    cfg.write_text(text)
    outbox = await Outbox.open(str(tmp_path / "outbox.sqlite3"))
    try:
        book = PartnerBook(outbox)
        await book.save_sims(
            [
                SimRecord("8970100000000000001", "modem:m1", "m1", "ready", 1.0e9,
                          iccid="8970100000000000001", imsi=MTS, mcc="250", mnc="01",
                          country="russia", operator="mts\x1b[2J", phone=NUMBER,
                          phone_origin="ussd", signal=-71),
                SimRecord("goip:box:3", "goip:box", "3", "absent", 1.0e9),
            ]
        )  # fmt: skip
        activation = Activation(5, "8970100000000000001", NUMBER, "vk", False, 1.0, 2.0)
        await book.finish_activation(activation, LedgerEntry(sold=True))
    finally:
        await outbox.close()

    code, out, err = await cli("sims", "-c", str(cfg))
    assert code == 0, err
    assert "8970100000000000001" in out and f"{NUMBER} (ussd)" in out and "goip:box:3" in out
    assert "\x1b" not in out and "mts\\x1b[2J" in out  # operator text made visible
    assert "vk: sold" in out

    code, out, err = await cli("sims", "--json", "-c", str(cfg))
    assert code == 0, err
    by_key = {s["sim"]: s for s in json.loads(out)}
    first = by_key["8970100000000000001"]
    assert (first["phone"], first["phone_origin"], first["mcc"], first["mnc"]) == (
        NUMBER, "ussd", "250", "01",
    )  # fmt: skip
    assert first["ledger"] == {"vk": {"sold": True, "blocked": False, "cancels": 0, "refunds": 0}}
    assert by_key["goip:box:3"]["phone"] is None


async def test_discover_without_a_daemon_opens_the_port_and_records_the_number(
    tmp_path: Path, fakes: FakeFactory
) -> None:
    fake = fakes(imsi=MEGAFON, ussd={"*205#": UssdAnswer(f"Vash nomer {NUMBER}", "ucs2")})
    cfg = write_config(
        tmp_path,
        "http://127.0.0.1:9/v1/PUSH_SMS",
        extra=partner_config(fake.port, "250-02", "*205#"),
    )
    code, out, err = await cli("sims", "discover", "-c", str(cfg))
    assert code == 0, err
    assert out.strip() == f"m1: {NUMBER} (ussd: the operator's USSD answer)"
    assert fake.ussd_asked == ["*205#"]

    code, out, err = await cli("sims", "--json", "-c", str(cfg))
    (sim,) = json.loads(out)
    assert (sim["sim"], sim["phone"], sim["phone_origin"]) == (fake.iccid, NUMBER, "ussd")

    code, out, err = await cli("sims", "discover", "nowhere", "-c", str(cfg))
    assert code == 1 and "nowhere: no number" in out


async def test_discover_asks_the_running_daemon_and_the_operator_sms_is_never_pushed(
    tmp_path: Path,
    fakes: FakeFactory,
    standin: StandIn,
    daemon_factory: Callable[..., Any],
) -> None:
    answer = UssdAnswer("Zapros prinyat", sms_from="MTS", sms_text=f"Vash nomer {NUMBER}")
    fake = fakes(imsi=MTS, ussd={"*111*0887#": answer})
    daemon: DaemonProcess = await daemon_factory(
        extra=partner_config(fake.port, "250-01", "*111*0887#", answer="sms")
    )
    await fake.wait_command("AT+CMGL=4", timeout=15)
    # At start-up the daemon asked already (the SIM says no number); on demand it asks again.
    # The daemon listens on a free port: the CLI's copy of the config names the one it got.
    bound = daemon.base.rsplit(":", 1)[1]
    copy = tmp_path / "cli.toml"
    copy.write_text(daemon.config_path.read_text().replace("127.0.0.1:0", f"127.0.0.1:{bound}", 1))
    code, out, err = await cli("sims", "discover", "m1", "-c", str(copy))
    assert code == 0, err
    assert out.strip().startswith(f"m1: {NUMBER} (")

    fake.deliver(sms("Your code 4321", sender="Instagram"))
    await standin.wait_for(
        lambda s: any(json.loads(p.raw)["text"] == "Your code 4321" for p in s.pushes), timeout=15
    )
    pushed = [json.loads(p.raw) for p in standin.pushes]
    assert all("Vash nomer" not in p["text"] for p in pushed)
    assert next(p["phone"] for p in pushed if p["text"] == "Your code 4321") == NUMBER
    assert await daemon.stop() == 0

    outbox = await Outbox.open(str(tmp_path / "outbox.sqlite3"), readonly=True, migrate=False)
    try:
        messages = await outbox.list_messages(limit=100)
        sims = await PartnerBook(outbox, read_mark=False).sims()
    finally:
        await outbox.close()
    answers = [m for m in messages if "Vash nomer" in m.text]
    assert answers and all(
        m.state is State.HELD and m.hold_reason is Hold.OPERATOR_ANSWER for m in answers
    )
    (sim,) = sims
    assert (sim.phone, sim.phone_origin, sim.state) == (NUMBER, "sms", "absent")
