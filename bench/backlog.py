"""Backlog scale: does the drain rate hold with a million queued, and what does memory do?

Two stores are filled with Outbox.accept (20,000 per call): 10,000 queued (the baseline) and
1,000,000 queued. A fresh daemon drains each into the stand-in (own process); the rate is timed
over the first WINDOW deliveries from its first delivery (start-up excluded), the same window
for both; each store is filled once and copied afresh for each of five alternating rounds,
and the median rate is used. Targets: rate with 1M within 20 % of the rate with 10k; the
daemon's peak RSS (VmHWM from /proc, sampled every 20 ms until the window ends) with 1M
queued < 200 MB.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import (
    Daemon,
    StandInProcess,
    drain_window,
    fill_store,
    fmt_rate,
    verdict,
    write_config,
)

SMALL = 10_000
LARGE = 1_000_000
WINDOW = 10_000  # the small backlog holds no more than this
ROUNDS = 5  # median of five drains from each backlog
TARGET_WITHIN = 0.20
TARGET_RSS_MB = 200.0


async def fill(directory: Path, queued: int) -> float:
    directory.mkdir()
    t0 = time.perf_counter()
    await fill_store(str(directory / "outbox.sqlite3"), queued)
    return time.perf_counter() - t0


async def drain(standin: StandInProcess, pristine: Path, work: Path) -> tuple[float, int]:
    """A fresh copy of the pristine store, a fresh daemon: (deliveries/s, VmHWM KiB)."""
    if work.exists():
        shutil.rmtree(work)
    work.mkdir()
    for f in pristine.glob("outbox.sqlite3*"):
        shutil.copyfile(f, work / f.name)
    store = str(work / "outbox.sqlite3")
    daemon = Daemon(write_config(work, standin.url, store=store))
    try:
        return await drain_window(standin, daemon, WINDOW)
    finally:
        daemon.stop()


async def run() -> dict[str, Any]:
    standin = StandInProcess()
    runs: dict[int, list[tuple[float, int]]] = {SMALL: [], LARGE: []}
    try:
        await standin.ready()
        with tempfile.TemporaryDirectory() as tmp:
            fills = {q: await fill(Path(tmp) / f"pristine-{q}", q) for q in runs}
            size = sum(f.stat().st_size for f in (Path(tmp) / f"pristine-{LARGE}").glob("outbox*"))
            for _ in range(ROUNDS):  # alternate, so drift on the machine hits both alike
                for q, results in runs.items():
                    results.append(
                        await drain(standin, Path(tmp) / f"pristine-{q}", Path(tmp) / "work")
                    )
    finally:
        standin.stop()
    rates = {q: statistics.median(r for r, _ in results) for q, results in runs.items()}
    peaks = {q: max(p for _, p in results) for q, results in runs.items()}
    small: dict[str, Any] = {
        "queued": SMALL,
        "per_s": round(rates[SMALL], 1),
        "runs_per_s": [round(r) for r, _ in runs[SMALL]],
        "peak_rss_mib": round(peaks[SMALL] / 1024, 1),
        "fill_seconds": round(fills[SMALL], 1),
    }
    large: dict[str, Any] = {
        "queued": LARGE,
        "per_s": round(rates[LARGE], 1),
        "runs_per_s": [round(r) for r, _ in runs[LARGE]],
        "peak_rss_mib": round(peaks[LARGE] / 1024, 1),
        "fill_seconds": round(fills[LARGE], 1),
        "store_mib": round(size / 2**20, 1),
    }
    ratio = large["per_s"] / small["per_s"]
    rate_ok = abs(1 - ratio) <= TARGET_WITHIN
    rss_mb = large["peak_rss_mib"] * 1.048576
    rss_ok = rss_mb < TARGET_RSS_MB
    print(
        f"backlog rate (first {WINDOW:,} deliveries, median of {ROUNDS}): {LARGE:,} queued"
        f" {fmt_rate(large['per_s'])}"
        f" vs {SMALL:,} queued {fmt_rate(small['per_s'])} = {ratio:.2f}x"
        f" (target within {TARGET_WITHIN:.0%}) {verdict(rate_ok)}",
        flush=True,
    )
    print(
        f"backlog memory: daemon VmHWM with {LARGE:,} queued {rss_mb:.0f} MB"
        f" (with {SMALL:,}: {small['peak_rss_mib'] * 1.048576:.0f} MB)"
        f" (target < {TARGET_RSS_MB:g} MB) {verdict(rss_ok)}",
        flush=True,
    )
    print(
        f"  runs: {LARGE:,} queued {large['runs_per_s']}/s, {SMALL:,} queued"
        f" {small['runs_per_s']}/s; fill {LARGE:,}: {large['fill_seconds']} s,"
        f" store {large['store_mib']} MiB",
        flush=True,
    )
    return {
        "small": small,
        "large": large,
        "window": WINDOW,
        "rounds": ROUNDS,
        "ratio": round(ratio, 3),
        "target_within": TARGET_WITHIN,
        "rate_pass": rate_ok,
        "large_peak_rss_mb": round(rss_mb, 1),
        "target_rss_mb": TARGET_RSS_MB,
        "rss_pass": rss_ok,
        "pass": rate_ok and rss_ok,
    }


if __name__ == "__main__":
    print(json.dumps(asyncio.run(run()), indent=2))
