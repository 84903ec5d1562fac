"""Versus gammu-smsd: one simulated modem, SMS in, HTTP POST out; gammu-smsd with a curl
RunOnReceive hook against the daemon, same modem profile and same offered load.

Both systems get one FakeModem (real pty, answered from this process's loop) and 2 SMS/s for
10 s. Latency = arrival of the HTTP request carrying the text at a receiver in this process
minus the moment this process called fake.deliver() (which writes +CMTI); both stamped with
this process's time.time(). gammu-smsd: service = null, ReceiveFrequency = 0, LoopSleep = 1
(its tightest documented polling), the hook runs `curl --data-binary "$SMS_1_TEXT"` to a bare
aiohttp receiver. Gateway: the daemon pushes to an in-process StandIn (in-process here, unlike
the other benchmarks, so both receivers are alike). Baseline: gammu-smsd's p99. Target: the
gateway's p99 <= gammu's (no target was given; this is the obvious one).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from aiohttp import web

from bench.common import (
    Daemon,
    free_port,
    paced_sms,
    percentile,
    stop_process,
    verdict,
    write_config,
)
from gateway.sources.modem.simulator import FakeModem
from gateway.standin import StandIn

RATE = 2
SECONDS = 10.0
HOOK = '#!/bin/sh\nexec curl -s -o /dev/null --data-binary "$SMS_1_TEXT" "{url}"\n'


async def offer(fake: FakeModem, tag: str, got: dict[str, float]) -> list[float]:
    """Deliver RATE SMS/s for SECONDS; latencies in ms (inf for one never received)."""
    sent = await paced_sms([fake], RATE, SECONDS, tag)
    n = len(sent)
    deadline = time.monotonic() + 10
    # The receivers are filled by other code paths (one polls a deque): plain polling.
    while len(set(sent) & set(got)) < n and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.1)
    return [(got[t] - at) * 1000 if t in got else float("inf") for t, at in sent.items()]


async def gammu_run(directory: Path) -> list[float]:
    got: dict[str, float] = {}

    async def post(request: web.Request) -> web.Response:
        got.setdefault(await request.text(), time.time())
        return web.Response(status=201)

    app = web.Application()
    app.router.add_post("/v1/sms", post)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    hook = directory / "hook.sh"
    hook.write_text(HOOK.format(url=f"http://127.0.0.1:{port}/v1/sms"), encoding="utf-8")
    os.chmod(hook, 0o755)
    fake = FakeModem("simcom")
    fake.start()
    rc = directory / "smsdrc"
    rc.write_text(
        f"[gammu]\ndevice = {fake.port}\nconnection = at\n[smsd]\nservice = null\n"
        f"RunOnReceive = {hook}\nlogfile = {directory / 'smsd.log'}\nLoopSleep = 1\n"
        "ReceiveFrequency = 0\nCheckSecurity = 0\nCheckSignal = 0\nCheckBattery = 0\n"
        "StatusFrequency = 0\nHardResetFrequency = 0\n",
        encoding="utf-8",
    )
    proc = subprocess.Popen(["gammu-smsd", "-c", str(rc)])
    try:
        await fake.wait_command("AT+CNMI=", timeout=30)
        await asyncio.sleep(3.0)  # its start-up storage probing
        return await offer(fake, "gammu", got)
    finally:
        # gammu-smsd can sit on SIGTERM for 30 s and more (blocked on the port): 3 s, then kill.
        stop_process(proc, timeout=3.0)
        fake.stop()
        await runner.cleanup()


async def gateway_run(directory: Path) -> list[float]:
    standin = StandIn()
    await standin.start()
    fake = FakeModem("simcom")
    fake.start()
    extra = (
        f'[modems]\ncommand_timeout = 2\n[[modem]]\nname = "m1"\nport = {json.dumps(fake.port)}\n'
        f'[[sim]]\niccid = "{fake.iccid}"\nphone = "79001234567"\n'
    )
    daemon = Daemon(write_config(directory, standin.url, extra=extra))
    got: dict[str, float] = {}

    def collect() -> None:
        for p in standin.pushes:
            if p.status == 200 and p.body:
                got.setdefault(str(p.body.get("text")), p.at)

    async def collector() -> None:
        while True:
            collect()
            await asyncio.sleep(0.05)

    task = asyncio.create_task(collector())
    try:
        await daemon.listening()
        await fake.wait_command("AT+CMGL", timeout=30)
        await asyncio.sleep(1.0)
        return await offer(fake, "gateway", got)
    finally:
        task.cancel()
        daemon.stop()
        fake.stop()
        await standin.stop()


async def run() -> dict[str, Any]:
    if shutil.which("gammu-smsd") is None:
        print("gammu-smsd comparison: not run (gammu-smsd is not installed)", flush=True)
        return {"run": False, "reason": "gammu-smsd is not installed"}
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "gammu").mkdir()
        (Path(tmp) / "gateway").mkdir()
        gammu = await gammu_run(Path(tmp) / "gammu")
        gateway = await gateway_run(Path(tmp) / "gateway")
    g50, g99 = percentile(gammu, 50), percentile(gammu, 99)
    w50, w99 = percentile(gateway, 50), percentile(gateway, 99)
    ok = w99 <= g99
    print(
        f"vs gammu-smsd ({RATE} SMS/s for {SECONDS:g} s, 1 modem): deliver() -> HTTP POST"
        f" arrival: gateway p50 {w50:.1f} ms, p99 {w99:.1f} ms vs gammu-smsd + curl hook"
        f" p50 {g50:.1f} ms, p99 {g99:.1f} ms (target: gateway p99 <= gammu's) {verdict(ok)}",
        flush=True,
    )
    lost = {"gateway": sum(x == float("inf") for x in gateway)}
    lost["gammu"] = sum(x == float("inf") for x in gammu)
    if any(lost.values()):
        print(f"  not received within 10 s: {lost}", flush=True)
    return {
        "run": True,
        "rate_per_s": RATE,
        "seconds": SECONDS,
        "gateway_p50_ms": round(w50, 2),
        "gateway_p99_ms": round(w99, 2),
        "gammu_p50_ms": round(g50, 2),
        "gammu_p99_ms": round(g99, 2),
        "lost": lost,
        "pass": ok,
    }


if __name__ == "__main__":
    print(json.dumps(asyncio.run(run()), indent=2))
