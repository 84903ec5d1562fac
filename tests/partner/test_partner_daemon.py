"""The partner side in a real daemon subprocess: Onlinesim's calls over loopback HTTP, kill -9 and
restart, hostile input, /health and /metrics, and `sms-gateway activations` in subprocesses."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway.play.standin import StandIn
from tests.fakes.daemon import DaemonProcess, write_config
from tests.partner.test_service import BAD_CALLS, KEY, ORDER

PARTNER = f"""
[partner]
listen = "127.0.0.1:{{port}}"
key = "{KEY}"
services = ["vk", "wa"]
rate = 100000.0
request_timeout = 2.0
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def partner_daemon(tmp_path: Path, standin: StandIn, sims: int = 50) -> DaemonProcess:
    # A fixed port: `activations finish` finds the listener by the config, as on a host.
    path = write_config(tmp_path, standin.url, extra=PARTNER.format(port=free_port()))
    return DaemonProcess(
        path, prefix=[sys.executable, "-m", "tests.partner.sims_daemon", str(sims), "--"]
    )


def partner_url(d: DaemonProcess, path: str = "/") -> str:
    ports = [int(e["port"]) for e in d.logs() if e.get("event") == "partner.listening"]
    assert ports, "no partner.listening in the log"
    return f"http://127.0.0.1:{ports[-1]}{path}"


async def post(target: str, body: Any) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as s, s.post(target, json=body) as r:
        return r.status, await r.json(content_type=None)


def cli(d: DaemonProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", "activations", *args, "-c", str(d.config_path)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def counts(answer: dict[str, Any]) -> dict[str, int]:
    for country in answer["countryList"]:
        return dict(country["operatorMap"]["any"])
    return {}


@pytest.fixture
async def daemon_with_sims(tmp_path: Path, standin: StandIn) -> Any:
    d = partner_daemon(tmp_path, standin)
    await d.start()
    yield d
    if d.proc is not None and d.proc.poll() is None:
        d.kill()


async def test_500_orders_then_kill_9_and_restart_keep_every_activation(
    daemon_with_sims: DaemonProcess,
) -> None:
    d = daemon_with_sims
    started = asyncio.get_running_loop().time()
    status, services = await post(partner_url(d, "/getServices"), {"key": KEY})
    assert status == 200 and counts(services) == {"vk": 50, "wa": 50}
    assert asyncio.get_running_loop().time() - started < 2.0
    conn = aiohttp.TCPConnector(limit=200)
    async with aiohttp.ClientSession(connector=conn) as s:

        async def one() -> dict[str, Any]:
            async with s.post(partner_url(d, "/getNumber"), json={**ORDER, "key": KEY}) as r:
                return dict(await r.json())

        answers = await asyncio.gather(*(one() for _ in range(500)))
    won = {a["activationId"]: a["number"] for a in answers if a["status"] == "SUCCESS"}
    assert len(won) == 50 and len(set(won.values())) == 50
    assert sum(a["status"] == "NO_NUMBERS" for a in answers) == 450
    d.kill()  # kill -9 right after the answers arrived

    await d.start()
    status, services = await post(partner_url(d, "/getServices"), {"key": KEY})
    assert counts(services) == {}  # the same 50 SIMs are still busy
    assert (await post(partner_url(d, "/getNumber"), {**ORDER, "key": KEY}))[1] == {
        "status": "NO_NUMBERS"
    }
    listed = json.loads(cli(d, "list", "--open", "--json", "--limit", "100").stdout)
    assert {a["activation_id"]: int(a["phone"]) for a in listed} == won

    first = min(won)
    finish = {"action": "FINISH_ACTIVATION", "activationId": first, "status": 3, "key": KEY}
    assert await post(partner_url(d, "/finishActivation"), finish) == (200, {"status": "SUCCESS"})
    _, services = await post(partner_url(d, "/getServices"), {"key": KEY})
    assert counts(services) == {"vk": 0, "wa": 1}  # sold for vk: never again; wa may have it
    d.kill()
    await d.start()
    assert await post(partner_url(d, "/finishActivation"), finish) == (200, {"status": "SUCCESS"})
    _, services = await post(partner_url(d, "/getServices"), {"key": KEY})
    assert counts(services) == {"vk": 0, "wa": 1}  # the ledger survived; nothing changed
    assert KEY not in d.log_text()


async def test_hostile_input_changes_nothing_and_the_daemon_keeps_serving(
    daemon_with_sims: DaemonProcess,
) -> None:
    d = daemon_with_sims
    async with aiohttp.ClientSession() as s:
        for name, data, headers, status, error in BAD_CALLS:
            async with s.post(partner_url(d, "/"), data=data, headers=headers) as r:
                assert (r.status, await r.json(content_type=None)) == (
                    status,
                    {"status": "ERROR", "error": error},
                ), name
    # A client that sends half a head and stops is cut at request_timeout (2 s here) without
    # holding anything: others are answered meanwhile.
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", int(partner_url(d).rsplit(":", 1)[1].rstrip("/"))
    )
    writer.write(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Le")
    await writer.drain()
    listed = json.loads(cli(d, "list", "--json").stdout)
    assert listed == []
    _, services = await post(partner_url(d, "/getServices"), {"key": KEY})
    assert counts(services) == {"vk": 50, "wa": 50}
    async with asyncio.timeout(6):
        assert await reader.read() == b""  # cut, nothing answered
    writer.close()
    assert d.proc is not None and d.proc.poll() is None


async def test_health_and_metrics_show_the_partner_side(daemon_with_sims: DaemonProcess) -> None:
    d = daemon_with_sims
    await post(partner_url(d, "/getNumber"), {**ORDER, "key": KEY})
    status, health = await d.health()
    partner = health["checks"]["partner"]
    assert status == 200 and partner["status"] == "ok"
    assert partner["listening"] is True and partner["open_activations"] == 1
    assert partner["last_method"] == "GET_NUMBER" and partner["last_call_age"] < 60
    assert partner["stale_activations"] == 0 and partner["sims_usable"] == 49
    _, anonymous = await d.health(token=None)
    assert "listen" not in anonymous["checks"]["partner"]
    _, body = await d.request("GET", "/metrics", token=None)
    assert 'sms_gateway_partner_calls_total{answer="SUCCESS",method="GET_NUMBER"} 1.0' in body
    assert "sms_gateway_partner_activations_open 1.0" in body
    assert 'sms_gateway_sims{country="russia",operator="mts",state="ready"} 50.0' in body


async def test_cli_finish_goes_through_a_running_daemon_and_to_the_store_of_a_stopped_one(
    daemon_with_sims: DaemonProcess,
) -> None:
    d = daemon_with_sims
    ids = []
    for _ in range(2):
        _, got = await post(partner_url(d, "/getNumber"), {**ORDER, "key": KEY})
        ids.append(got["activationId"])
    shown = cli(d, "show", str(ids[0]))
    assert shown.returncode == 0 and "open" in shown.stdout

    running = cli(d, "finish", str(ids[0]), "--status", "4")
    assert running.returncode == 0, running.stderr
    assert "running daemon" in running.stderr and f"activation {ids[0]}: finished" in running.stdout
    assert KEY not in running.stdout + running.stderr
    # The daemon's desk saw it: the SIM is offered again at once.
    _, services = await post(partner_url(d, "/getServices"), {"key": KEY})
    assert counts(services) == {"vk": 49, "wa": 49}
    again = cli(d, "finish", str(ids[0]), "--status", "4")
    assert again.returncode == 0

    assert await d.stop() == 0
    stopped = cli(d, "finish", str(ids[1]), "--status", "3")
    assert stopped.returncode == 0 and "running daemon" not in stopped.stderr
    repeat = cli(d, "finish", str(ids[1]), "--status", "3")
    assert repeat.returncode == 0 and "already finished" in repeat.stdout
    missing = cli(d, "finish", "999999", "--status", "3")
    assert missing.returncode == 1 and "no activation 999999" in missing.stderr
    listed = json.loads(cli(d, "list", "--json").stdout)
    assert {a["activation_id"]: (a["state"], a["status"]) for a in listed} == {
        ids[0]: ("finished", 4),
        ids[1]: ("finished", 3),
    }
    text = cli(d, "list").stdout
    assert "3 sold" in text and "4 cancelled" in text

    await d.start()
    _, services = await post(partner_url(d, "/getServices"), {"key": KEY})
    assert counts(services) == {"vk": 49, "wa": 50}  # the store's finish is the desk's now
