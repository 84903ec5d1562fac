"""`sms-gateway demo`: the stand-in upstream, the daemon and a few messages, all on this machine."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
from pathlib import Path

import aiohttp

from gateway import config
from gateway.daemon import Daemon
from gateway.standin import StandIn

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


def write_config(directory: Path, upstream_url: str, port: int) -> Path:
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
        'level = "warning"\n',
        encoding="utf-8",
    )
    return path


async def run_demo(*, port: int, directory: str) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    standin = StandIn(key=DEMO_KEY, active_phones=ACTIVE, bad_senders=["SomeBank"], rate_limit=50)
    await standin.start()
    cfg_path = write_config(Path(directory), standin.url, port)
    cfg = config.load(cfg_path)
    daemon = Daemon(cfg)
    parts = await daemon.start()
    base = f"http://127.0.0.1:{parts.http.bound_port}"
    print(f"stand-in PUSH_SMS upstream: {standin.url}")
    print(f"daemon store:               {cfg.store.path}")
    print(f"config written to:          {cfg_path}")
    print(f"\nsending {len(SAMPLES)} SMS through the ingest API ({base}/v1/sms):")
    try:
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
        await standin.wait_for(lambda s: len(s.pushes) >= len(SAMPLES), timeout=15)
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
        print(f"  sms-gateway status -c {cfg_path}")
        print(f"  sms-gateway messages list -c {cfg_path}")
        print(f"  sms-gateway ingest -c {cfg_path} --phone 79001234567 --from Demo --text hello")
        print(f"  curl {standin.url.rsplit('/v1', 1)[0]}/received")
        await stop.wait()
    finally:
        with contextlib.suppress(Exception):
            await daemon.stop()
        await standin.stop()
    print("demo stopped")
    return 0
