"""Status page JSON: what a wall of screens polling /status.json costs the daemon.

256 simulated modems (FakeModem, real ptys answered from this process's loop, as in
bench/modems.py) on one daemon with `http.status_token` set. Once every modem has been set up
and scanned: the daemon's CPU (utime + stime from /proc/<pid>/stat) over windows of WINDOW
seconds that start PERIOD seconds apart, idle and load in turn (idle, load, idle, ..., idle;
RUNS loads). In a load window this process sends RATE requests a second to GET /status.json
(HTTP basic with the token, paced on a fixed schedule, one connection kept alive, each answer
read whole and checked to list every port).

Every modem checks its signal, registration and storage every 30 s (scans every 60 s), all
256 in a burst; windows PERIOD = 30 s apart see the same part of that cycle, so the burst does
not land in one window and miss the next. A run's cost is its load window's CPU minus the mean
of the idle windows before and after it, in % of one core; target: under 5 % in every run (the
worst is what is judged; the median and the spread are printed too).
"""

from __future__ import annotations

import asyncio
import base64
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from bench.common import Daemon, StandInProcess, cpu_seconds, verdict, write_config
from bench.modems import MODEMS, bank_config, modems_up
from gateway.play.modem import FakeModem

RATE = 10  # requests a second
WINDOW = 10.0  # seconds of each idle and each load window
RUNS = 3
PERIOD = 30.0  # the modems' check interval (gateway/sources/modem/device.py), a window's start
TARGET_PCT = 5.0  # % of one core the polling may add
TOKEN = "bench-status-token"


def with_status_token(config: Path) -> None:
    text = config.read_text(encoding="utf-8")
    listen = 'listen = "127.0.0.1:0"\n'
    config.write_text(text.replace(listen, listen + f'status_token = "{TOKEN}"\n', 1))


async def poll(session: aiohttp.ClientSession, url: str, seconds: float) -> tuple[int, int]:
    """RATE requests a second for `seconds`, on a fixed schedule (a late one is not made up
    by a burst). Returns (answers, bytes of the last one)."""
    auth = {"Authorization": "Basic " + base64.b64encode(f"bench:{TOKEN}".encode()).decode()}
    loop = asyncio.get_running_loop()
    start = loop.time()
    n = int(seconds * RATE)
    size = 0
    for i in range(n):
        delay = start + i / RATE - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        async with session.get(url, headers=auth) as resp:
            body = await resp.read()
            if resp.status != 200:
                raise RuntimeError(f"/status.json answered {resp.status}: {body[:200]!r}")
        size = len(body)
    ports = len(json.loads(body)["ports"])
    if ports < MODEMS:
        raise RuntimeError(f"/status.json lists {ports} ports, not {MODEMS}")
    return n, size


async def window(pid: int, seconds: float, load: Any = None) -> tuple[float, float]:
    """The daemon's CPU over one window, in % of one core, and the window's wall time."""
    c0, w0 = cpu_seconds(pid), time.monotonic()
    if load is None:
        await asyncio.sleep(seconds)
    else:
        await load
    wall = time.monotonic() - w0
    return (cpu_seconds(pid) - c0) / wall * 100, wall


async def run() -> dict[str, Any]:
    standin = StandInProcess()
    bank = [
        FakeModem("quectel", iccid=f"89701990000{i:08d}", imei=f"86612304{i:07d}")
        for i in range(MODEMS)
    ]
    runs: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        try:
            await standin.ready()
            for fake in bank:
                fake.start()
            config = write_config(Path(tmp), standin.url, extra=bank_config(bank))
            with_status_token(config)
            daemon = Daemon(config)
            try:
                t0 = time.perf_counter()
                await daemon.listening()
                for fake in bank:
                    await fake.wait_command("AT+CMGL", timeout=120)
                startup = time.perf_counter() - t0
                up = await modems_up(daemon)
                await asyncio.sleep(2.0)  # let the last set-ups finish
                url = f"{daemon.base}/status.json"
                async with aiohttp.ClientSession() as session:
                    await poll(session, url, 1.0)  # warm: the first snapshot, the connection
                    size = 0
                    loop = asyncio.get_running_loop()
                    start = loop.time()
                    idles: list[float] = []
                    loads: list[tuple[float, int, float]] = []
                    for k in range(2 * RUNS + 1):
                        await asyncio.sleep(max(0.0, start + k * PERIOD - loop.time()))
                        if k % 2 == 0:
                            idles.append((await window(daemon.pid, WINDOW))[0])
                            continue
                        task = asyncio.ensure_future(poll(session, url, WINDOW))
                        loaded, wall = await window(daemon.pid, WINDOW, task)
                        n, size = task.result()
                        loads.append((loaded, n, wall))
                    for i, (loaded, n, wall) in enumerate(loads):
                        idle = (idles[i] + idles[i + 1]) / 2
                        runs.append(
                            {
                                "idle_pct": round(idle, 3),
                                "load_pct": round(loaded, 3),
                                "added_pct": round(loaded - idle, 3),
                                "requests": n,
                                "rate": round(n / wall, 2),
                            }
                        )
                daemon.alive()
            finally:
                daemon.stop()
        finally:
            for fake in bank:
                fake.stop()
            standin.stop()
    added = [r["added_pct"] for r in runs]
    worst, median = max(added), statistics.median(added)
    ok = worst < TARGET_PCT
    print(
        f"status page ({MODEMS} modems, {RATE} req/s to /status.json for {WINDOW:g} s, {RUNS}"
        f" runs): daemon CPU +{median:.2f} % of one core (median; min {min(added):.2f}, max"
        f" {worst:.2f}) over idle windows of {statistics.median(r['idle_pct'] for r in runs):.2f}"
        f" % (target < {TARGET_PCT:g} % in every run) {verdict(ok)}",
        flush=True,
    )
    print(
        f"  each answer {size / 1024:.0f} KiB; start-up until every modem was scanned:"
        f" {startup:.1f} s; /health modems up: {up}",
        flush=True,
    )
    return {
        "modems": MODEMS,
        "rate_per_s": RATE,
        "window_seconds": WINDOW,
        "runs": runs,
        "added_cpu_pct_median": round(median, 3),
        "added_cpu_pct_min": round(min(added), 3),
        "added_cpu_pct_max": round(worst, 3),
        "answer_bytes": size,
        "health_modems_up": up,
        "target_added_cpu_pct": TARGET_PCT,
        "pass": ok,
    }


if __name__ == "__main__":
    print(json.dumps(asyncio.run(run()), indent=2))
