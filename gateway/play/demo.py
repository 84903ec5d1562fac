"""`sms-gateway demo`: the stand-in upstream, the daemon, simulated modems and a few SMS."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import os
import random
import shlex
import signal
import sys
from pathlib import Path

import aiohttp

from gateway import config
from gateway.daemon import Daemon
from gateway.errors import GatewayError
from gateway.play.modem import FakeModem
from gateway.play.pdu import split_deliver
from gateway.play.standin import StandIn

DEMO_TOKEN = "demo-ingest-token"  # noqa: S105 - a demo on loopback, printed on purpose
DEMO_KEY = "demo-api-key"
ACTIVE = ("79001234567", "79007654321")
SAMPLES = [
    {"phone": "79001234567", "phoneFrom": "Instagram", "text": "Your verification code is 800142"},
    {"phone": "79007654321", "phoneFrom": "Telegram", "text": "Код подтверждения: 31337 🙂"},
    {"phone": "79001234567", "phoneFrom": "+447700900123", "text": 'Line one\nline "two"'},
    {"phone": "79990000000", "phoneFrom": "WhatsApp", "text": "no operation on this number"},
    {"phone": "79007654321", "phoneFrom": "SomeBank", "text": "a sender the upstream refuses"},
]


# Simulated modems: (maker profile, ICCID, the SIM's number)
MODEMS = [
    ("simcom", "8970199000000000011", "79001234567"),
    ("huawei", "8970199000000000022", "79007654321"),
    ("quectel", "8970199000000000033", "79005550000"),
]
MODEM_SMS = [
    (0, "Instagram", "Your Instagram code is 511 044"),
    (1, "VK", "VK: 7731 — код для входа. Никому его не сообщайте"),
    (2, "+447700900123", "Hi! This one is long enough to need three parts: " + "lorem ipsum " * 25),
]


def start_modems(directory: Path) -> list[FakeModem]:
    """Real pseudo-terminals that speak AT like USB modems, with /dev/serial/by-id-like links."""
    links = directory / "by-id"
    links.mkdir(parents=True, exist_ok=True)
    modems = []
    for i, (profile, iccid, _) in enumerate(MODEMS):
        modem = FakeModem(
            profile,
            iccid=iccid,
            imsi=f"25099000000000{i}",
            link_dir=links,
            link_name=f"usb-demo-{profile}-if00-port0",
        )
        modem.start()
        modems.append(modem)
    return modems


def modem_tables(modems: list[FakeModem]) -> str:
    tables = ["[modems]\nscan_interval = 10.0\nmultipart_timeout = 30.0\n"]
    for modem, (_, iccid, phone) in zip(modems, MODEMS, strict=True):
        tables.append(f'[[modem]]\nport = "{modem.port}"\n')
        tables.append(f'[[sim]]\niccid = "{iccid}"\nphone = "{phone}"\n')
    return "\n".join(tables)


def write_config(directory: Path, upstream_url: str, port: int, extra: str = "") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "config.toml"
    path.write_text(
        "# Written by `sms-gateway demo`.\n"
        "[upstream]\n"
        f'url = "{upstream_url}"\n'
        f'api_key = "{DEMO_KEY}"\n'
        "retry_interval = 2.0\n"
        "timeout = 5.0\n\n"
        "[store]\n"
        f'path = "{(directory / "outbox.sqlite3").resolve()}"\n\n'
        "[http]\n"
        f'listen = "127.0.0.1:{port}"\n'
        f'ingest_token = "{DEMO_TOKEN}"\n\n'
        "[log]\n"
        'format = "console"\n'
        'level = "warning"\n\n' + extra,
        encoding="utf-8",
    )
    return path


def cli_command() -> str:
    """How to run `sms-gateway` as the demo was run, so the printed commands work as shown.

    The script sits beside the interpreter (`.venv/bin/`), which is rarely on the PATH.
    """
    script = Path(sys.executable).parent / "sms-gateway"
    if script.is_file() and os.access(script, os.X_OK):
        return shlex.quote(str(script))
    return f"{shlex.quote(sys.executable)} -m gateway"


async def run_demo(*, port: int, directory: str) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    standin = StandIn(
        key=DEMO_KEY,
        active_phones=[*ACTIVE, *(phone for _, _, phone in MODEMS)],
        bad_senders=["SomeBank"],
        rate_limit=50,
    )
    await standin.start()
    modems: list[FakeModem] = []
    daemon: Daemon | None = None
    try:
        modems = start_modems(Path(directory))
        cfg_path = write_config(Path(directory), standin.url, port, modem_tables(modems))
        cfg = config.load(cfg_path)
        daemon = Daemon(cfg)
        try:
            parts = await daemon.start()
        except GatewayError as e:
            if isinstance(e.__cause__, OSError) and e.__cause__.errno == errno.EADDRINUSE:
                raise GatewayError(
                    f"demo: port {port} is in use; pick another with --port N"
                    " (make run PORT=N), or 0 for any free port"
                ) from e
            raise
        base = f"http://127.0.0.1:{parts.http.bound_port}"
        print(f"stand-in PUSH_SMS upstream: {standin.url}")
        print(f"daemon store:               {cfg.store.path}")
        print(f"config written to:          {cfg_path}")
        print(f"\nsending {len(SAMPLES)} SMS through the ingest API ({base}/v1/sms):")
        async with aiohttp.ClientSession() as session:
            for sample in SAMPLES:
                async with session.post(
                    f"{base}/v1/sms",
                    json=sample,
                    headers={"Authorization": f"Bearer {DEMO_TOKEN}"},
                ) as resp:
                    answer = await resp.json()
                print(
                    f"  {resp.status} {json.dumps(answer)}  <- {sample['phoneFrom']}: "
                    f"{sample['text'][:40]!r}"
                )
        print(f"\n{len(modems)} simulated modems receive SMS (real ptys speaking AT):")
        for index, sender, text in MODEM_SMS:
            pdus = split_deliver(sender, text, ref=17 + index)
            random.Random(index).shuffle(pdus)  # multi-part SMS may arrive in any order
            for pdu in pdus:
                modems[index].deliver(pdu)
            print(
                f"  {modems[index].port.rsplit('/', 1)[-1]}: {len(pdus)} part(s) from "
                f"{sender}: {text[:40]!r}"
            )
        wanted = len(SAMPLES) + len(MODEM_SMS)
        await standin.wait_for(lambda s: len(s.pushes) >= wanted, timeout=30)
        print("\nwhat the upstream answered:")
        for push in standin.pushes:
            body = push.body or {}
            print(
                f"  smsId {body.get('smsId')}: HTTP {push.status} for phone {body.get('phone')}"
                f" from {body.get('phoneFrom')}"
            )
        print("\nwhere to look (the daemon keeps running; Ctrl-C stops everything):")
        print(f"  curl {base}/health")
        print(f"  curl {base}/metrics")
        cli, cfg_arg = cli_command(), shlex.quote(str(cfg_path.resolve()))
        print(f"  {cli} status -c {cfg_arg}")
        print(f"  {cli} messages list -c {cfg_arg}")
        print(f"  {cli} ingest -c {cfg_arg} --phone 79001234567 --from Demo --text hello")
        print(f"  curl {standin.url.rsplit('/v1', 1)[0]}/received")
        await stop.wait()
    finally:
        if daemon is not None:
            with contextlib.suppress(Exception):
                await daemon.stop()
        for modem in modems:
            modem.stop()
        await standin.stop()
    print("demo stopped")
    return 0
