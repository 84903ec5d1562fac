"""Drain benchmark: N queued messages delivered to the stand-in, against a bare aiohttp client.

The stand-in runs in its own process. The baseline POSTs the same bodies at the same
concurrency with no storage at all; the gateway figure is the daemon (a subprocess) draining a
store that already holds N queued messages, timed from its first delivery (start-up excluded)
to the N-th. Three runs of each, in turns; ratio = median gateway rate / median baseline rate;
target >= 0.7. The load side (bare client, or the daemon) runs on one core and the stand-in on
the other (bench.common.cores).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from bench.common import (
    CONCURRENCY,
    Daemon,
    StandInProcess,
    cores,
    drain_window,
    fill_store,
    fmt_rate,
    pinned_here,
    push_body,
    verdict,
    write_config,
)

TARGET = 0.7
DEFAULT_N = 100_000
ROUNDS = 3  # runs of each side, in turns


async def baseline(url: str, n: int) -> float:
    """Bare aiohttp client: same bodies, same concurrency, no storage. Returns messages/s."""
    headers = {"Content-Type": "application/json; charset=utf-8"}
    counter = iter(range(1, n + 1))
    connector = aiohttp.TCPConnector(limit=CONCURRENCY)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def lane() -> None:
            for i in counter:
                async with session.post(url, data=push_body(i), headers=headers) as r:
                    await r.read()

        t0 = time.perf_counter()
        await asyncio.gather(*(lane() for _ in range(CONCURRENCY)))
        return n / (time.perf_counter() - t0)


async def gateway_drain(
    standin: StandInProcess, n: int, directory: Path, log_level: str, core: int | None = None
) -> tuple[float, int, float]:
    """Daemon draining n queued messages: (messages/s, peak RSS KiB, seconds to fill)."""
    store = str(directory / "outbox.sqlite3")
    t0 = time.perf_counter()
    await fill_store(store, n)
    fill = time.perf_counter() - t0
    config = write_config(directory, standin.url, log_level=log_level, store=store)
    daemon = Daemon(config, core=core)
    try:
        rate, peak = await drain_window(standin, daemon, n, poll=0.05)
    finally:
        daemon.stop()
    return rate, peak, fill


async def run(n: int = DEFAULT_N, log_level: str = "info") -> dict[str, Any]:
    load, server = cores() or (None, None)
    standin = StandInProcess(core=server)
    base_runs: list[float] = []
    gateway_runs: list[tuple[float, int, float]] = []
    try:
        await standin.ready()
        # Baseline and gateway in turns, ROUNDS each, medians compared: one pair of runs moves
        # with how the two cores happen to be shared (the baseline varied 12.6-16k/s).
        for _ in range(ROUNDS):
            with pinned_here(load):  # the bare client makes the load here; then the daemon
                base_runs.append(await baseline(standin.url, n))
            with tempfile.TemporaryDirectory() as tmp:
                gateway_runs.append(
                    await gateway_drain(standin, n, Path(tmp), log_level, core=load)
                )
    finally:
        standin.stop()
    base = statistics.median(base_runs)
    rate = statistics.median(g[0] for g in gateway_runs)
    peak = max(g[1] for g in gateway_runs)
    fill = max(g[2] for g in gateway_runs)
    ratio = rate / base
    result = {
        "messages": n,
        "concurrency": CONCURRENCY,
        "rounds": ROUNDS,
        "cores_load_server": list(cores() or []),
        "baseline_runs_per_s": [round(x, 1) for x in base_runs],
        "gateway_runs_per_s": [round(g[0], 1) for g in gateway_runs],
        "baseline_per_s": round(base, 1),
        "gateway_per_s": round(rate, 1),
        "ratio": round(ratio, 3),
        "target_ratio": TARGET,
        "pass": ratio >= TARGET,
        "gateway_peak_rss_mib": round(peak / 1024, 1),
        "fill_seconds": round(fill, 1),
        "log_level": log_level,
    }
    print(
        f"drain (N={n:,}, concurrency {CONCURRENCY}, median of {ROUNDS}): gateway"
        f" {fmt_rate(rate)} vs baseline {fmt_rate(base)} = {ratio:.2f}x"
        f" (target >= {TARGET}x) {verdict(ratio >= TARGET)}",
        flush=True,
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-n", type=int, default=DEFAULT_N)
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run(args.n, args.log_level)), indent=2))


if __name__ == "__main__":
    main()
