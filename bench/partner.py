"""Partner API benchmark: GET_NUMBER and GET_SERVICES latency with 10,000 SIMs in the inventory.

The server under test is the gateway's own partner side in its own process
(`python -m bench.partner serve`): `partner_app` + `Desk` + `PartnerBook` on a real SQLite store
(WAL, synchronous=FULL, every activation committed before it is answered), 10,000 SIMs over
three countries and nine operators, four services, logging JSON at info as the daemon does.
The baseline, in its own process too (`python -m bench.partner bare`), is a bare aiohttp
handler that reads the body and answers a fixed one of the same shape.

Load: 200 callers, each on its own kept-alive connection, each sending one call every 0.4 s
(first one at a random phase), so 500 calls/s are offered (Onlinesim itself sends GET_SERVICES
every 2 minutes and GET_NUMBER per client order) and up to 200 can be in flight at once (the
most seen is reported); latency is from sending a request to reading its whole answer, taken
in this process. The client asks for gzip (aiohttp's default), so the gateway compresses its
answers. GET_NUMBER runs last 8 s (4,000 orders, so the 10,000 SIMs last; NO_NUMBERS answers
are counted apart); between runs every number ordered is finished with status 4 (not timed),
which frees it. GET_SERVICES runs (8 s) have 20 GET_NUMBERs a second beside them (not timed),
so the counts are recomputed after each order rather than served from the desk's cache only.
Gateway and baseline run in turns, three times each; the median p99 is the figure, the spread
is the lowest and highest p99 of the runs. Load and server sit on separate cores, alike for
both (bench.common.cores). Targets: p99 < 20 ms for each call.

`BENCH_PROFILE=out.raw python -m bench partner` runs the server under py-spy.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from bench.common import (
    cores,
    free_port,
    percentile,
    pin,
    pinned_here,
    stop_process,
    until_signalled,
    verdict,
)
from bench.common import wait_http as wait_http_common

SIMS = 10_000
SERVICES = ("vk", "wa", "tg", "ok")
# (country, operator, share of the SIMs)
NETWORKS = [
    ("russia", "mts", 0.25), ("russia", "megafon", 0.2), ("russia", "beeline", 0.15),
    ("russia", "tele2", 0.1), ("kazakhstan", "kcell", 0.1), ("kazakhstan", "beeline", 0.05),
    ("kazakhstan", "tele2", 0.05), ("uzbekistan", "ucell", 0.05), ("uzbekistan", "beeline", 0.05),
]  # fmt: skip
COUNTRY_CODES = {"russia": "7", "kazakhstan": "77", "uzbekistan": "998"}
KEY = "bench-partner-key-0123456789"
CALLERS = 200
PERIOD = 0.4  # seconds between one caller's calls: CALLERS / PERIOD calls/s offered
NUMBER_SECONDS = 8.0
SERVICES_SECONDS = 8.0
SIDE_ORDERS_PER_S = 20.0  # GET_NUMBERs beside the GET_SERVICES runs
ROUNDS = 3
TARGET_P99_MS = 20.0


def inventory() -> list[tuple[str, str, str, str]]:
    """(key, phone, country, operator) for SIMS SIMs."""
    out = []
    n = 0
    for index, (country, operator, share) in enumerate(NETWORKS):
        for i in range(round(SIMS * share)):
            code = COUNTRY_CODES[country]
            national = 10 if code == "7" else 9  # digits after the country code
            phone = f"{code}9{n:0{national - 1}d}"
            out.append((f"8970{index:02d}{i:013d}", phone, country, operator))
            n += 1
    return out[:SIMS]


# --- the servers (subprocesses) ------------------------------------------------------------


def serve(port: int, directory: str) -> None:
    """The gateway's partner side on a real store, 10,000 SIMs, until SIGTERM/SIGINT."""

    from aiohttp import web

    from gateway import logs
    from gateway.outbox import Outbox
    from gateway.outbox.partner import PartnerBook, SimRecord
    from gateway.partner.api import ApiLimits, partner_app
    from gateway.partner.desk import Desk, SimState, SimView

    logs.configure("info", "json", secrets=[KEY], once=True)

    async def main() -> None:
        outbox = await Outbox.open(str(Path(directory) / "outbox.sqlite3"))
        book = PartnerBook(outbox)
        await book.start()
        now = time.time()
        sims = inventory()
        await book.save_sims(
            [
                SimRecord(key, "modem", f"port-{i}", "ready", now, iccid=key,
                          country=country, operator=operator, phone=phone)
                for i, (key, phone, country, operator) in enumerate(sims)
            ]
        )  # fmt: skip
        desk = Desk(store=book, services=SERVICES, clock=time.time)
        desk.load(await book.activations(), await book.ledger())
        desk.update_sims(
            SimView(key, phone, country, operator, SimState.READY, live=True)
            for key, phone, country, operator in sims
        )
        # One loopback address makes all the load: the per-address limit is not what is measured.
        limits = ApiLimits(rate=1e9, burst=1_000_000)
        runner = web.AppRunner(partner_app(desk, key=KEY, limits=limits), access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port, backlog=1024).start()
        await until_signalled()
        await runner.cleanup()
        await outbox.close()

    asyncio.run(main())


def bare(port: int) -> None:
    """The baseline: reads the body, answers a fixed one of the real answer's shape."""
    from aiohttp import web

    number = json.dumps({"number": 79001234567, "activationId": 355, "status": "SUCCESS"})
    services = json.dumps(
        {
            "countryList": [
                {"country": country, "operatorMap": {
                    op: dict.fromkeys(SERVICES, 1000)
                    for op in ["any", *(o for c, o, _ in NETWORKS if c == country)]
                }}
                for country in COUNTRY_CODES
            ],
            "status": "SUCCESS",
        }
    )  # fmt: skip
    finish = json.dumps({"status": "SUCCESS"})

    def fixed(body: str) -> Callable[[web.Request], Any]:
        async def handle(request: web.Request) -> web.Response:
            await request.read()
            return web.Response(text=body, content_type="application/json")

        return handle

    app = web.Application()
    app.router.add_post("/getNumber", fixed(number))
    app.router.add_post("/getServices", fixed(services))
    app.router.add_post("/finishActivation", fixed(finish))
    app.router.add_get("/getServices", fixed(services))
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None, backlog=1024)


class Server:
    """`python -m bench.partner serve|bare` in its own process."""

    def __init__(self, what: str, directory: str, core: int | None) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = Path(directory) / f"{what}.log"
        cmd = [sys.executable, "-m", "bench.partner", what, "--port", str(self.port),
               "--dir", directory]  # fmt: skip
        self.profiling = what == "serve" and bool(os.environ.get("BENCH_PROFILE"))
        if self.profiling:
            cmd = ["py-spy", "record", "-r", "200", "-f", "raw",
                   "-o", os.environ["BENCH_PROFILE"], "--", *cmd]  # fmt: skip
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=log)
        pin(self.proc.pid, core)

    async def ready(self) -> None:
        await wait_http_common(f"{self.base}/getServices", self.proc, tries=1200)

    def stop(self) -> None:
        import signal

        stop_process(self.proc, signal.SIGINT if self.profiling else signal.SIGTERM)


# --- the load ------------------------------------------------------------------------------


@dataclass
class Run:
    latencies: list[float] = field(default_factory=list)  # seconds, SUCCESS answers
    answers: dict[str, int] = field(default_factory=dict)  # answer status -> count
    activation_ids: list[int] = field(default_factory=list)
    seconds: float = 0.0
    in_flight: int = 0
    most_in_flight: int = 0

    def p(self, q: float) -> float:
        return percentile(self.latencies, q) * 1000


def get_number_body(rng: random.Random) -> bytes:
    country, operator, _ = rng.choices(NETWORKS, weights=[w for *_, w in NETWORKS])[0]
    return json.dumps(
        {"action": "GET_NUMBER", "country": country,
         "operator": operator if rng.random() < 0.3 else "any",
         "service": rng.choice(SERVICES), "sum": 12.5, "key": KEY, "exceptionPhoneSet": [7999]}
    ).encode()  # fmt: skip


GET_SERVICES_BODY = json.dumps({"action": "GET_SERVICES", "key": KEY}).encode()
HEADERS = {"Content-Type": "application/json", "User-Agent": "bench-onlinesim"}


async def call(session: aiohttp.ClientSession, url: str, body: bytes) -> tuple[float, Any]:
    sent = time.perf_counter()
    async with session.post(url, data=body, headers=HEADERS) as r:
        raw = await r.read()
        took = time.perf_counter() - sent
        if r.status != 200:
            raise RuntimeError(f"{url}: HTTP {r.status} {raw[:200]!r}")
    return took, json.loads(raw)


async def load(base: str, path: str, seconds: float, seed: int, side_orders: float = 0.0) -> Run:
    """CALLERS callers, one call every PERIOD each, for `seconds`; `side_orders` GET_NUMBERs
    a second beside them (not timed)."""
    rng = random.Random(seed)
    run = Run()
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        start = time.perf_counter() + 0.2
        end = start + seconds

        async def caller(phase: float) -> None:
            slot = start + phase
            while slot < end:
                delay = slot - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                body = get_number_body(rng) if path == "/getNumber" else GET_SERVICES_BODY
                run.in_flight += 1
                run.most_in_flight = max(run.most_in_flight, run.in_flight)
                try:
                    took, answer = await call(session, base + path, body)
                finally:
                    run.in_flight -= 1
                status = str(answer.get("status"))
                run.answers[status] = run.answers.get(status, 0) + 1
                if status == "SUCCESS":
                    run.latencies.append(took)
                    if "activationId" in answer:
                        run.activation_ids.append(int(answer["activationId"]))
                slot += PERIOD

        async def orders_beside() -> None:
            k = 0
            while (slot := start + k / side_orders) < end:
                delay = slot - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                _, answer = await call(session, base + "/getNumber", get_number_body(rng))
                if "activationId" in answer:
                    run.activation_ids.append(int(answer["activationId"]))
                k += 1

        tasks = [caller(rng.random() * PERIOD) for _ in range(CALLERS)]
        if side_orders:
            tasks.append(orders_beside())
        t0 = time.perf_counter()
        await asyncio.gather(*tasks)
        run.seconds = time.perf_counter() - t0
    return run


async def finish_all(base: str, activation_ids: list[int]) -> None:
    """FINISH 4 for every number ordered: frees the SIMs for the next run (not timed)."""
    connector = aiohttp.TCPConnector(limit=32)
    async with aiohttp.ClientSession(connector=connector) as session:
        it = iter(activation_ids)

        async def lane() -> None:
            for activation_id in it:
                body = json.dumps(
                    {"action": "FINISH_ACTIVATION", "activationId": activation_id,
                     "status": 4, "key": KEY}
                ).encode()  # fmt: skip
                _, answer = await call(session, base + "/finishActivation", body)
                if answer.get("status") != "SUCCESS":
                    raise RuntimeError(f"FINISH {activation_id}: {answer}")

        await asyncio.gather(*(lane() for _ in range(32)))


def summary(runs: list[Run]) -> dict[str, Any]:
    p99s = [r.p(99) for r in runs]
    answers: dict[str, int] = {}
    for r in runs:
        for k, v in r.answers.items():
            answers[k] = answers.get(k, 0) + v
    return {
        "p50_ms": round(statistics.median(r.p(50) for r in runs), 2),
        "p99_ms": round(statistics.median(p99s), 2),
        "p99_runs_ms": [round(x, 2) for x in p99s],
        "max_ms": round(max(max(r.latencies, default=0) for r in runs) * 1000, 2),
        "calls_per_s": round(statistics.median(sum(r.answers.values()) / r.seconds for r in runs)),
        "answers": answers,
        "most_in_flight": max(r.most_in_flight for r in runs),
    }


def line(name: str, gw: dict[str, Any], base: dict[str, Any], extra: str = "") -> tuple[str, bool]:
    ok = gw["p99_ms"] < TARGET_P99_MS
    ratio = gw["p99_ms"] / base["p99_ms"] if base["p99_ms"] else float("nan")
    spread = f"{min(gw['p99_runs_ms']):.1f}-{max(gw['p99_runs_ms']):.1f}"
    bspread = f"{min(base['p99_runs_ms']):.1f}-{max(base['p99_runs_ms']):.1f}"
    return (
        f"partner {name} ({CALLERS} callers, {CALLERS / PERIOD:,.0f}/s offered, {SIMS:,} SIMs):"
        f" p50 {gw['p50_ms']:.1f} ms, p99 {gw['p99_ms']:.1f} ms (runs {spread})"
        f" vs bare aiohttp p50 {base['p50_ms']:.1f} ms, p99 {base['p99_ms']:.1f} ms"
        f" (runs {bspread}), {ratio:.1f}x; at most {gw['most_in_flight']} in flight{extra}"
        f" (target p99 < {TARGET_P99_MS:g} ms)"
        f" {verdict(ok)}",
        ok,
    )


async def run() -> dict[str, Any]:
    pinned = cores()
    load_core, server_core = pinned if pinned else (None, None)
    number: dict[str, list[Run]] = {"gateway": [], "baseline": []}
    services: dict[str, list[Run]] = {"gateway": [], "baseline": []}
    with tempfile.TemporaryDirectory() as tmp, pinned_here(load_core):
        gateway = Server("serve", tmp, server_core)
        baseline = Server("bare", tmp, server_core)
        try:
            await gateway.ready()
            await baseline.ready()
            for k in range(ROUNDS):
                for side, server in (("baseline", baseline), ("gateway", gateway)):
                    r = await load(server.base, "/getNumber", NUMBER_SECONDS, seed=k)
                    number[side].append(r)
                    if side == "gateway":
                        await finish_all(server.base, r.activation_ids)
                    r = await load(
                        server.base, "/getServices", SERVICES_SECONDS, seed=100 + k,
                        side_orders=SIDE_ORDERS_PER_S,
                    )  # fmt: skip
                    services[side].append(r)
                    if side == "gateway":
                        await finish_all(server.base, r.activation_ids)
        finally:
            gateway.stop()
            baseline.stop()
    result: dict[str, Any] = {
        "sims": SIMS,
        "callers": CALLERS,
        "offered_per_s": CALLERS / PERIOD,
        "rounds": ROUNDS,
        "target_p99_ms": TARGET_P99_MS,
    }
    gw_n, base_n = summary(number["gateway"]), summary(number["baseline"])
    no_numbers = gw_n["answers"].get("NO_NUMBERS", 0)
    text, ok_n = line("GET_NUMBER", gw_n, base_n, f"; NO_NUMBERS {no_numbers}")
    print(text, flush=True)
    gw_s, base_s = summary(services["gateway"]), summary(services["baseline"])
    text, ok_s = line("GET_SERVICES", gw_s, base_s, f"; {SIDE_ORDERS_PER_S:g} orders/s beside")
    print(text, flush=True)
    result["get_number"] = {**gw_n, "baseline": base_n, "no_numbers": no_numbers}
    result["get_services"] = {**gw_s, "baseline": base_s}
    result["get_number_pass"] = ok_n
    result["get_services_pass"] = ok_s
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("what", choices=["serve", "bare", "run"])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--dir", default=".")
    args = parser.parse_args()
    if args.what == "serve":
        serve(args.port, args.dir)
    elif args.what == "bare":
        bare(args.port)
    else:
        print(json.dumps(asyncio.run(run()), indent=2))
