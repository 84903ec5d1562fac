"""Ingest benchmark: messages committed through POST /v1/sms of the running daemon.

Single: one message per request from 32 concurrent clients, against a bare aiohttp server (own
process) answering 201 without storage, in turns, three runs of each; the medians are compared;
target >= 0.6x. The clients (this process) run on one core, the server under test on the
other (bench.common.cores), alike for both. Lists: lists of 100 from 8 concurrent
clients, against sqlite `executemany` of 100 rows per transaction into the gateway's own
schema (migrations/*.sql, all its indexes; WAL, synchronous=FULL, one connection, one list
after the other); target >= 0.5x.

The daemon's upstream is a closed port (connection refused): delivery fails fast, its circuit
opens after a few attempts, so ingest does not compete with delivery for the two cores.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from bench.common import (
    TOKEN,
    BareServer,
    Daemon,
    closed_url,
    cores,
    fmt_rate,
    pinned_here,
    verdict,
    write_config,
)

SINGLE_N = 30_000
ROUNDS = 3  # single-message runs of each side, in turns
SINGLE_CONCURRENCY = 32
LIST_SIZE = 100
LISTS = 1_000
LIST_CONCURRENCY = 8
TARGET_SINGLE = 0.6
TARGET_LISTS = 0.5
MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"
INSERT = (  # the columns Outbox._insert writes
    "INSERT INTO messages (sms_id, source, source_ref, phone, phone_from, text, received_at,"
    " expiry_base, accepted_at, state, due_at, hold_reason, raw, partial)"
    " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
)


def item(i: int) -> dict[str, str]:
    return {"phone": "+7 900 123-45-67", "phoneFrom": "Bench", "text": f"Your code is {i:06d}"}


async def post_all(url: str, bodies: list[bytes], concurrency: int, per_body: int) -> float:
    """POST every body from `concurrency` clients; messages/s (every answer must be 201)."""
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"}
    it = iter(bodies)
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def lane() -> None:
            for b in it:
                async with session.post(url, data=b, headers=headers) as r:
                    await r.read()
                    if r.status != 201:
                        raise RuntimeError(f"{url}: {r.status} {await r.text()}")

        t0 = time.perf_counter()
        await asyncio.gather(*(lane() for _ in range(concurrency)))
        return len(bodies) * per_body / (time.perf_counter() - t0)


def single_bodies(offset: int) -> list[bytes]:
    return [json.dumps(item(offset + i)).encode() for i in range(SINGLE_N)]


def list_bodies(offset: int) -> list[bytes]:
    return [
        json.dumps([item(offset + k * LIST_SIZE + j) for j in range(LIST_SIZE)]).encode()
        for k in range(LISTS)
    ]


def sqlite_baseline(path: str) -> float:
    """executemany of LIST_SIZE rows per transaction, WAL + synchronous=FULL: rows/s."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    for sql in sorted(MIGRATIONS.glob("*.sql")):  # the gateway's own schema and indexes
        conn.executescript(sql.read_text(encoding="utf-8"))
    t0 = time.perf_counter()
    for k in range(LISTS):
        now = time.time()
        rows = [
            (None, "http", None, "79001234567", "Bench", f"Your code is {k * LIST_SIZE + j:06d}",
             now, now, now, "queued", now, None, None, 0)
            for j in range(LIST_SIZE)
        ]  # fmt: skip
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(INSERT, rows)
        conn.execute("COMMIT")
    rate = LISTS * LIST_SIZE / (time.perf_counter() - t0)
    conn.close()
    return rate


async def measure(bare: BareServer, daemon: Daemon) -> tuple[list[float], list[float], float]:
    """(baseline single runs, gateway single runs, gateway lists rate), messages/s.

    Single: baseline and gateway in turns, ROUNDS each, so both see the same moments of the
    machine; the medians are compared.
    """
    url = f"{daemon.base}/v1/sms"
    base_runs: list[float] = []
    single_runs: list[float] = []
    for r in range(ROUNDS):
        bodies = single_bodies(r * SINGLE_N)
        base_runs.append(await post_all(f"{bare.base}/v1/sms", bodies, SINGLE_CONCURRENCY, 1))
        single_runs.append(await post_all(url, bodies, SINGLE_CONCURRENCY, 1))
    lists = await post_all(url, list_bodies(ROUNDS * SINGLE_N), LIST_CONCURRENCY, LIST_SIZE)
    return base_runs, single_runs, lists


async def run() -> dict[str, Any]:
    load, server = cores() or (None, None)
    with tempfile.TemporaryDirectory() as tmp:
        bare = BareServer(core=server)
        daemon = Daemon(write_config(Path(tmp), closed_url(), token=TOKEN), core=server)
        try:
            await bare.ready()
            await daemon.listening()
            with pinned_here(load):
                base_runs, single_runs, lists = await measure(bare, daemon)
        finally:
            daemon.stop()
            bare.stop()
        base_lists = await asyncio.to_thread(sqlite_baseline, str(Path(tmp) / "baseline.sqlite3"))
    base_single, single = statistics.median(base_runs), statistics.median(single_runs)
    r_single, r_lists = single / base_single, lists / base_lists
    print(
        f"ingest single (N={SINGLE_N:,}, {SINGLE_CONCURRENCY} clients, median of {ROUNDS}): gateway"
        f" {fmt_rate(single)} vs bare aiohttp 201 {fmt_rate(base_single)} = {r_single:.2f}x"
        f" (target >= {TARGET_SINGLE}x) {verdict(r_single >= TARGET_SINGLE)}",
        flush=True,
    )
    print(
        f"ingest lists ({LISTS} x {LIST_SIZE}, {LIST_CONCURRENCY} clients): gateway"
        f" {fmt_rate(lists)} vs sqlite executemany {fmt_rate(base_lists)} = {r_lists:.2f}x"
        f" (target >= {TARGET_LISTS}x) {verdict(r_lists >= TARGET_LISTS)}",
        flush=True,
    )
    print("  (daemon upstream: a closed port, so delivery does not compete)", flush=True)
    return {
        "upstream": "closed port (connection refused; delivery circuit opens)",
        "single": {
            "messages": SINGLE_N,
            "rounds": ROUNDS,
            "cores_load_server": list(cores() or []),
            "baseline_runs_per_s": [round(x, 1) for x in base_runs],
            "gateway_runs_per_s": [round(x, 1) for x in single_runs],
            "concurrency": SINGLE_CONCURRENCY,
            "baseline_per_s": round(base_single, 1),
            "gateway_per_s": round(single, 1),
            "ratio": round(r_single, 3),
            "target_ratio": TARGET_SINGLE,
            "pass": r_single >= TARGET_SINGLE,
        },
        "lists": {
            "lists": LISTS,
            "list_size": LIST_SIZE,
            "concurrency": LIST_CONCURRENCY,
            "baseline_per_s": round(base_lists, 1),
            "gateway_per_s": round(lists, 1),
            "ratio": round(r_lists, 3),
            "target_ratio": TARGET_LISTS,
            "pass": r_lists >= TARGET_LISTS,
        },
    }


if __name__ == "__main__":
    print(json.dumps(asyncio.run(run()), indent=2))
