"""Drain benchmark: N queued messages delivered to the stand-in, against a bare aiohttp client.

The stand-in runs in its own process. The baseline POSTs the same bodies at the same
concurrency with no storage at all; the gateway figure is the daemon (a subprocess) draining a
store that already holds N queued messages. Ratio = gateway rate / baseline rate.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from gateway.outbox import Incoming, Outbox

CONCURRENCY = 32


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class StandInProcess:
    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1/PUSH_SMS"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gateway", "stand-in", "--port", str(self.port),
             "--rate", "0", "--quiet"],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip

    async def stats(self, session: aiohttp.ClientSession) -> dict[str, Any]:
        async with session.get(f"http://127.0.0.1:{self.port}/stats") as r:
            data: dict[str, Any] = await r.json()
            return data

    async def ready(self) -> None:
        async with aiohttp.ClientSession() as s:
            for _ in range(200):
                try:
                    await self.stats(s)
                    return
                except aiohttp.ClientError:
                    await asyncio.sleep(0.05)
        raise RuntimeError("stand-in did not start")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def body(i: int) -> bytes:
    return json.dumps(
        {"smsId": i, "phoneFrom": "Bench", "phone": "79001234567",
         "text": f"Your code is {i:06d}", "action": "PUSH_SMS", "key": "bench-key"},
        ensure_ascii=False, separators=(",", ":"),
    ).encode()  # fmt: skip


async def baseline(url: str, n: int) -> float:
    """Bare aiohttp client: same bodies, same concurrency, no storage. Returns messages/s."""
    headers = {"Content-Type": "application/json; charset=utf-8"}
    counter = iter(range(1, n + 1))
    connector = aiohttp.TCPConnector(limit=CONCURRENCY)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def lane() -> None:
            for i in counter:
                async with session.post(url, data=body(i), headers=headers) as r:
                    await r.read()

        t0 = time.perf_counter()
        await asyncio.gather(*(lane() for _ in range(CONCURRENCY)))
        return n / (time.perf_counter() - t0)


async def fill_store(path: str, n: int) -> None:
    outbox = await Outbox.open(path)
    now = time.time()
    step = 20_000
    for start in range(0, n, step):
        await outbox.accept(
            [
                Incoming("bench", "79001234567", "Bench", f"Your code is {i:06d}", now)
                for i in range(start, min(n, start + step))
            ]
        )
    await outbox.close()


def write_config(directory: Path, url: str, store: str, log_level: str) -> Path:
    path = directory / "config.toml"
    path.write_text(
        f'[upstream]\nurl = "{url}"\napi_key = "bench-key"\nconcurrency = {CONCURRENCY}\n'
        f'[store]\npath = "{store}"\n[http]\nlisten = "127.0.0.1:0"\n'
        f'[log]\nlevel = "{log_level}"\n',
        encoding="utf-8",
    )
    return path


async def gateway_drain(
    standin: StandInProcess, n: int, directory: Path, log_level: str
) -> tuple[float, int]:
    """Daemon draining n queued messages. Returns (messages/s, peak RSS in KiB)."""
    store = str(directory / "outbox.sqlite3")
    await fill_store(store, n)
    cfg = write_config(directory, standin.url, store, log_level)
    async with aiohttp.ClientSession() as s:
        before = (await standin.stats(s))["delivered"]
        with open(directory / "daemon.log", "wb") as log:
            cmd = [sys.executable, "-m", "gateway", "run", "-c", str(cfg)]
            if os.environ.get("BENCH_PROFILE"):  # collapsed stacks for flame graphs
                cmd = ["py-spy", "record", "-r", "200", "-f", "raw",
                       "-o", os.environ["BENCH_PROFILE"], "--", *cmd]  # fmt: skip
            proc = subprocess.Popen(cmd, stderr=log)
        t0 = time.perf_counter()
        peak = 0
        try:
            while (await standin.stats(s))["delivered"] - before < n:
                if proc.poll() is not None:
                    raise RuntimeError(f"daemon exited {proc.returncode}")
                peak = max(peak, rss_kib(proc.pid))
                await asyncio.sleep(0.05)
            elapsed = time.perf_counter() - t0
        finally:
            # py-spy writes its profile on SIGINT; the daemon stops cleanly on either.
            proc.send_signal(signal.SIGINT if os.environ.get("BENCH_PROFILE") else signal.SIGTERM)
            proc.wait(30)
    return n / elapsed, peak


def rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


async def run(n: int, log_level: str) -> dict[str, Any]:
    standin = StandInProcess()
    try:
        await standin.ready()
        base = await baseline(standin.url, n)
        with tempfile.TemporaryDirectory() as tmp:
            rate, peak = await gateway_drain(standin, n, Path(tmp), log_level)
    finally:
        standin.stop()
    return {
        "messages": n,
        "baseline_per_s": round(base, 1),
        "gateway_per_s": round(rate, 1),
        "ratio": round(rate / base, 3),
        "gateway_peak_rss_mib": round(peak / 1024, 1),
        "log_level": log_level,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-n", type=int, default=20_000)
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args()
    result = asyncio.run(run(args.n, args.log_level))
    print(json.dumps(result, indent=2))
    print(f"drain: gateway {result['gateway_per_s']}/s vs bare client {result['baseline_per_s']}/s"
          f" = {result['ratio']:.2f} x baseline  (pid {os.getpid()})")  # fmt: skip


if __name__ == "__main__":
    main()
