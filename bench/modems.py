"""Modem bank: 256 simulated modems (FakeModem, real ptys, answered from this process's loop)
on one daemon, which pushes to the stand-in (own process).

Idle: the daemon's CPU (utime + stime from /proc/<pid>/stat) over 10 s once every modem has
been set up and scanned (AT+CMGL seen on each); target < 5 % of one core. Baseline (same run):
this bench process's own CPU over the same 10 s, answering nothing (256 idle ptys).

Load: 20 SMS/s for 10 s, round-robin over the modems. Latency = the store's accepted_at of the
message (the daemon's clock inside the committing transaction, read back with a read-only
sqlite connection and matched by text) minus the time this process called fake.deliver()
(which writes +CMTI). Target p99 < 250 ms.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from bench.common import (
    Daemon,
    StandInProcess,
    cpu_seconds,
    paced_sms,
    percentile,
    verdict,
    write_config,
)
from gateway.play.modem import FakeModem

MODEMS = 256
IDLE_SECONDS = 10.0
RATE = 20
LOAD_SECONDS = 10.0
TARGET_IDLE_PCT = 5.0
TARGET_P99_MS = 250.0


def bank_config(bank: list[FakeModem]) -> str:
    text = "[modems]\nscan_interval = 60\ncommand_timeout = 2\n"
    for i, fake in enumerate(bank):
        text += f'[[modem]]\nname = "m{i}"\nport = {json.dumps(fake.port)}\n'
        text += f'[[sim]]\niccid = "{fake.iccid}"\nphone = "7900{i:07d}"\n'
    return text


def committed(store: str, prefix: str) -> dict[str, float]:
    """{text: accepted_at} of the bench's messages, read-only."""
    try:
        conn = sqlite3.connect(f"file:{store}?mode=ro", uri=True)
    except sqlite3.Error:
        return {}
    try:
        rows = conn.execute(
            "SELECT text, accepted_at FROM messages WHERE text LIKE ?", (prefix + "%",)
        ).fetchall()
    except sqlite3.Error:
        return {}
    finally:
        conn.close()
    return {str(t): float(a) for t, a in rows}


async def modems_up(daemon: Daemon) -> int:
    async with aiohttp.ClientSession() as s, s.get(f"{daemon.base}/health") as r:
        health = await r.json()
    return int(health["checks"]["modems"]["up"])


def states(store: str) -> dict[str, int]:
    conn = sqlite3.connect(f"file:{store}?mode=ro", uri=True)
    try:
        rows = conn.execute(
            "SELECT state, count(*) FROM messages WHERE text LIKE 'bank %' GROUP BY state"
        ).fetchall()
    finally:
        conn.close()
    return {str(k): int(v) for k, v in rows}


async def run() -> dict[str, Any]:
    standin = StandInProcess()
    bank = [
        FakeModem("quectel", iccid=f"89701990000{i:08d}", imei=f"86612304{i:07d}")
        for i in range(MODEMS)
    ]
    with tempfile.TemporaryDirectory() as tmp:
        store = str(Path(tmp) / "outbox.sqlite3")
        try:
            await standin.ready()
            for fake in bank:
                fake.start()
            daemon = Daemon(write_config(Path(tmp), standin.url, extra=bank_config(bank)))
            try:
                t0 = time.perf_counter()
                await daemon.listening()
                for fake in bank:
                    await fake.wait_command("AT+CMGL", timeout=120)
                startup = time.perf_counter() - t0
                up = await modems_up(daemon)
                await asyncio.sleep(2.0)  # let the last set-ups finish

                me0, d0, w0 = cpu_seconds(os.getpid()), cpu_seconds(daemon.pid), time.monotonic()
                await asyncio.sleep(IDLE_SECONDS)
                wall = time.monotonic() - w0
                idle_pct = (cpu_seconds(daemon.pid) - d0) / wall * 100
                bench_pct = (cpu_seconds(os.getpid()) - me0) / wall * 100

                sent = await paced_sms(bank, RATE, LOAD_SECONDS, "bank")
                n = len(sent)
                deadline = time.monotonic() + 15
                seen = committed(store, "bank ")
                while len(seen) < n and time.monotonic() < deadline:
                    await asyncio.sleep(0.25)
                    seen = committed(store, "bank ")
                daemon.alive()
            finally:
                daemon.stop()
            by_state = states(store)
        finally:
            for fake in bank:
                fake.stop()
            standin.stop()
    lat = [(seen[t] - at) * 1000 for t, at in sent.items() if t in seen]
    missing = n - len(lat)
    p50, p99 = percentile(lat, 50), percentile(lat, 99)
    idle_ok = idle_pct < TARGET_IDLE_PCT
    lat_ok = p99 < TARGET_P99_MS and missing == 0
    print(
        f"modems idle ({MODEMS} modems, {wall:.0f} s): daemon CPU {idle_pct:.2f} % of one core"
        f" vs bench process (256 fake modems) {bench_pct:.2f} %"
        f" (target < {TARGET_IDLE_PCT:g} %) {verdict(idle_ok)}",
        flush=True,
    )
    print(
        f"modems load ({RATE} SMS/s for {LOAD_SECONDS:g} s, {n} SMS): deliver() -> commit"
        f" p50 {p50:.1f} ms, p99 {p99:.1f} ms, max {max(lat, default=0):.1f} ms, missing"
        f" {missing} (target p99 < {TARGET_P99_MS:g} ms) {verdict(lat_ok)}",
        flush=True,
    )
    print(
        f"  start-up until every modem was scanned: {startup:.1f} s; /health modems up: {up};"
        f" bench messages by state at the end: {by_state}",
        flush=True,
    )
    return {
        "modems": MODEMS,
        "startup_seconds": round(startup, 1),
        "health_modems_up": up,
        "states_at_end": by_state,
        "idle_seconds": round(wall, 1),
        "idle_cpu_pct": round(idle_pct, 3),
        "baseline_bench_cpu_pct": round(bench_pct, 3),
        "target_idle_cpu_pct": TARGET_IDLE_PCT,
        "idle_pass": idle_ok,
        "rate_per_s": RATE,
        "load_seconds": LOAD_SECONDS,
        "messages": n,
        "missing": missing,
        "p50_ms": round(p50, 2),
        "p99_ms": round(p99, 2),
        "max_ms": round(max(lat, default=0), 2),
        "target_p99_ms": TARGET_P99_MS,
        "latency_pass": lat_ok,
        "pass": idle_ok and lat_ok,
    }


if __name__ == "__main__":
    print(json.dumps(asyncio.run(run()), indent=2))
