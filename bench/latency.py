"""Latency benchmark: from the ingest answer (201) to the upstream's receipt of that smsId.

Open loop: 500 messages/s offered to POST /v1/sms (one per request, each sent at its scheduled
time whatever the previous ones did) for 30 s. The stand-in runs in its own process; its
`/received` (the last 1000 pushes with their arrival time `at`) is polled every 0.2 s, i.e.
about every 100 pushes, so nothing scrolls out unseen. Both clocks are this machine's
time.time(). Baseline (same run): the bare HTTP round trip of the ingest requests themselves
(request sent -> 201 read), printed for scale. Target: p99 < 50 ms.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from bench.common import TOKEN, Daemon, StandInProcess, percentile, verdict, write_config

RATE = 500
SECONDS = 30
POLL = 0.2
TARGET_P99_MS = 50.0


async def offer(url: str, rate: int, seconds: float) -> tuple[dict[int, float], list[float]]:
    """Open-loop POSTs; returns {smsId: time the 201 was read} and the round trips (s)."""
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"}
    answered: dict[int, float] = {}
    round_trips: list[float] = []
    n = int(rate * seconds)
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one(i: int) -> None:
            body = json.dumps(
                {"phone": "79001234567", "phoneFrom": "Bench", "text": f"latency {i}"}
            ).encode()
            sent = time.time()
            async with session.post(url, data=body, headers=headers) as r:
                data = await r.json()
                done = time.time()
                if r.status != 201:
                    raise RuntimeError(f"{r.status}: {data}")
            answered[int(data["smsId"])] = done
            round_trips.append(done - sent)

        tasks = []
        t0 = time.perf_counter()
        for i in range(n):
            delay = t0 + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(i)))
        await asyncio.gather(*tasks)
    return answered, round_trips


async def watch(standin: StandInProcess, seen: dict[int, float], stop: asyncio.Event) -> None:
    async with aiohttp.ClientSession() as s:
        while not stop.is_set():
            for p in await standin.received(s):
                sid = p.get("smsId")
                if p["status"] == 200 and isinstance(sid, int):
                    seen.setdefault(sid, p["at"])
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), POLL)


async def run(seconds: float = SECONDS) -> dict[str, Any]:
    standin = StandInProcess()
    seen: dict[int, float] = {}
    stop = asyncio.Event()
    with tempfile.TemporaryDirectory() as tmp:
        try:
            await standin.ready()
            daemon = Daemon(write_config(Path(tmp), standin.url, token=TOKEN))
            try:
                await daemon.listening()
                watcher = asyncio.create_task(watch(standin, seen, stop))
                answered, round_trips = await offer(f"{daemon.base}/v1/sms", RATE, seconds)
                deadline = time.monotonic() + 5
                # Another process's answers: nothing to wait on but polling it.
                while set(answered) - set(seen) and time.monotonic() < deadline:  # noqa: ASYNC110
                    await asyncio.sleep(POLL)
                stop.set()
                await watcher
            finally:
                daemon.stop()
        finally:
            standin.stop()
    lat = [(seen[i] - t) * 1000 for i, t in answered.items() if i in seen]
    missing = len(answered) - len(lat)
    p50, p99 = percentile(lat, 50), percentile(lat, 99)
    rt50, rt99 = percentile(round_trips, 50) * 1000, percentile(round_trips, 99) * 1000
    ok = p99 < TARGET_P99_MS and missing == 0
    print(
        f"latency ({RATE}/s offered for {seconds:g} s, {len(answered):,} messages): 201 -> upstream"
        f" receipt p50 {p50:.1f} ms, p99 {p99:.1f} ms, max {max(lat, default=0):.1f} ms"
        f" (target p99 < {TARGET_P99_MS:g} ms) {verdict(ok)}",
        flush=True,
    )
    print(
        f"  baseline: ingest round trip p50 {rt50:.1f} ms, p99 {rt99:.1f} ms; not seen at the"
        f" stand-in within 5 s: {missing}; stand-in in its own process, /received polled"
        f" every {POLL} s",
        flush=True,
    )
    return {
        "rate_per_s": RATE,
        "seconds": seconds,
        "messages": len(answered),
        "p50_ms": round(p50, 2),
        "p99_ms": round(p99, 2),
        "max_ms": round(max(lat, default=0), 2),
        "min_ms": round(min(lat, default=0), 2),
        "missing": missing,
        "baseline_round_trip_p50_ms": round(rt50, 2),
        "baseline_round_trip_p99_ms": round(rt99, 2),
        "target_p99_ms": TARGET_P99_MS,
        "pass": ok,
    }


if __name__ == "__main__":
    print(json.dumps(asyncio.run(run()), indent=2))
