"""SMPP benchmark: deliver_sm per second over one bind with window 10, and p99 PDU -> resp.

The server under test, in its own process (`python -m bench.smpp serve`), is the gateway's
`SmppServer` (gateway/sources/smpp/) with `Inbound` -> `Intake` -> `Outbox` on a real SQLite
store (WAL, synchronous=FULL): every deliver_sm is committed before its deliver_sm_resp goes
out, and logged (`sms.accepted`, JSON at info) as the daemon does. The baseline, in its own
process too (`python -m bench.smpp bare`), is the same `SmppServer`, session and smpp34 codec,
with the content read the same way, answering ROK without storing anything.

Load (this process): one ESME bound as transceiver keeps WINDOW deliver_sm unanswered, sending
the next as each answer comes back, for SECONDS; each PDU carries a new sequence number and
text (no retransmissions), its latency is from writing it to reading its answer. Gateway and
baseline run in turns, ROUNDS times each; the figures are the medians, the spread the lowest
and highest of the runs (the machine is shared and noisy). Load and server sit on separate
cores, alike for both (bench.common.cores). Target: the gateway's rate >= 0.5x the baseline's.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
from gateway.sources.smpp.pdu import (
    HEADER,
    Bind,
    Command,
    ShortMessage,
    Status,
    bind_body,
    encode,
    message_pdu,
    parse_header,
)

WINDOW = 10
SECONDS = 5.0
ROUNDS = 3
TARGET_RATIO = 0.5
SYSTEM_ID = "bench"
PASSWORD = "benchpw"


# --- the servers (subprocesses) ------------------------------------------------------------


def serve(port: int, directory: str, store: bool) -> None:
    """SmppServer on 127.0.0.1:`port` until SIGTERM; `store`: through Intake into a real
    Outbox, else answering ROK without storing (the baseline)."""

    from gateway import config, logs
    from gateway.intake import Intake
    from gateway.metrics import Metrics
    from gateway.outbox import Outbox
    from gateway.sources.smpp.content import read_content
    from gateway.sources.smpp.inbound import Answer, Inbound, PeerRules
    from gateway.sources.smpp.server import SmppServer

    logs.configure("info", "json", secrets=[PASSWORD], once=True)

    class NoStore(Inbound):
        """Reads each message as the gateway does, answers ROK, stores nothing."""

        async def take_many(
            self, rules: PeerRules, messages: Sequence[ShortMessage]
        ) -> list[Answer]:
            for m in messages:
                read_content(m, rules.alphabet)
            return [Answer(Status.ROK, f"{m.seq:x}", stored=True) for m in messages]

    async def main() -> None:
        path = str(Path(directory) / "outbox.sqlite3")
        cfg = config.parse(
            {
                "upstream": {"url": "http://127.0.0.1:9/push", "api_key": "k"},
                "store": {"path": path},
                "smpp_server": {
                    "listen": f"127.0.0.1:{port}",
                    "window": WINDOW,
                    "account": [{"system_id": SYSTEM_ID, "password": PASSWORD}],
                },
            }
        )
        assert cfg.smpp_server is not None
        metrics = Metrics()
        outbox = await Outbox.open(path)
        intake = Intake(outbox, metrics)
        inbound = Inbound(intake) if store else NoStore(intake)
        server = SmppServer(cfg.smpp_server, inbound, metrics)
        await server.start()
        print("LISTENING", flush=True)
        await until_signalled()
        await server.stop()
        await outbox.close()

    asyncio.run(main())


class Server:
    """`python -m bench.smpp serve|bare` in its own process."""

    def __init__(self, what: str, directory: str, core: int | None) -> None:
        self.port = free_port()
        self.dir = Path(directory) / what
        self.dir.mkdir()
        self.log = self.dir / "server.log"
        cmd = [sys.executable, "-m", "bench.smpp", what, "--port", str(self.port),
               "--dir", str(self.dir)]  # fmt: skip
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=log)
        pin(self.proc.pid, core)

    async def ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while b"LISTENING" not in self.log.read_bytes():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"bench.smpp server did not start: {self.log.read_text()}")
            await asyncio.sleep(0.05)

    def stop(self) -> None:
        stop_process(self.proc)


# --- the load ------------------------------------------------------------------------------


@dataclass
class Run:
    latencies: list[float] = field(default_factory=list)  # seconds, ROK answers
    seconds: float = 0.0
    refused: int = 0

    @property
    def rate(self) -> float:
        return len(self.latencies) / self.seconds

    def p99_ms(self) -> float:
        return percentile(self.latencies, 99) * 1000


async def read_pdu(reader: asyncio.StreamReader) -> tuple[int, int, int]:
    head = await reader.readexactly(HEADER.size)
    h = parse_header(head)
    if h.length > HEADER.size:
        await reader.readexactly(h.length - HEADER.size)
    return h.command_id, h.status, h.seq


async def load(port: int, first_seq: int) -> Run:
    """One transceiver bind, WINDOW deliver_sm in flight, for SECONDS."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    bind = Bind(Command.BIND_TRANSCEIVER, SYSTEM_ID, PASSWORD)
    writer.write(encode(Command.BIND_TRANSCEIVER, 1, 0, bind_body(bind)))
    cid, status, _ = await read_pdu(reader)
    if cid != Command.BIND_TRANSCEIVER_RESP or status != Status.ROK:
        raise RuntimeError(f"bind refused: {cid:#x} status {status:#x}")
    run = Run()
    sent: dict[int, float] = {}
    seq = first_seq

    def send() -> None:
        nonlocal seq
        text = f"bench message {seq} from the SMSC".encode()
        m = ShortMessage(Command.DELIVER_SM, seq, "79005556677", "79001230001", 0, 0, text)
        sent[seq] = time.perf_counter()
        writer.write(message_pdu(m))
        seq += 1

    t0 = time.perf_counter()
    end = t0 + SECONDS
    for _ in range(WINDOW):
        send()
    while sent:
        cid, status, answered = await read_pdu(reader)
        now = time.perf_counter()
        if cid == Command.ENQUIRE_LINK:
            writer.write(encode(Command.ENQUIRE_LINK_RESP, answered))
            continue
        if cid != Command.DELIVER_SM_RESP:
            raise RuntimeError(f"unexpected PDU {cid:#x}")
        took = now - sent.pop(answered)
        if status == Status.ROK:
            run.latencies.append(took)
        else:
            run.refused += 1
        if now < end:
            send()
    run.seconds = time.perf_counter() - t0
    writer.write(encode(Command.UNBIND, seq))
    writer.close()
    return run


def summary(runs: list[Run]) -> dict[str, Any]:
    rates = [r.rate for r in runs]
    p99s = [r.p99_ms() for r in runs]
    return {
        "per_s": round(statistics.median(rates)),
        "per_s_runs": [round(x) for x in rates],
        "p50_ms": round(statistics.median(percentile(r.latencies, 50) * 1000 for r in runs), 2),
        "p99_ms": round(statistics.median(p99s), 2),
        "p99_runs_ms": [round(x, 2) for x in p99s],
        "messages": sum(len(r.latencies) for r in runs),
        "refused": sum(r.refused for r in runs),
    }


async def run() -> dict[str, Any]:
    pinned = cores()
    load_core, server_core = pinned if pinned else (None, None)
    runs: dict[str, list[Run]] = {"gateway": [], "baseline": []}
    stored = 0
    with tempfile.TemporaryDirectory() as tmp, pinned_here(load_core):
        gateway = Server("serve", tmp, server_core)
        baseline = Server("bare", tmp, server_core)
        try:
            await gateway.ready()
            await baseline.ready()
            for k in range(ROUNDS):
                for side, server in (("baseline", baseline), ("gateway", gateway)):
                    runs[side].append(await load(server.port, 1 + k * 10_000_000))
        finally:
            gateway.stop()
            baseline.stop()
        stored = count_stored(str(gateway.dir / "outbox.sqlite3"))
    gw, base = summary(runs["gateway"]), summary(runs["baseline"])
    ratio = gw["per_s"] / base["per_s"] if base["per_s"] else float("nan")
    # every ROK the gateway gave is a committed row
    ok = ratio >= TARGET_RATIO and stored == gw["messages"] and gw["refused"] == 0
    print(
        f"smpp deliver_sm, one bind, window {WINDOW}, committed before each resp:"
        f" {gw['per_s']:,}/s (runs {min(gw['per_s_runs']):,}-{max(gw['per_s_runs']):,}),"
        f" p99 PDU -> resp {gw['p99_ms']:.1f} ms"
        f" (runs {min(gw['p99_runs_ms']):.1f}-{max(gw['p99_runs_ms']):.1f})"
        f" vs the same server answering without storing {base['per_s']:,}/s"
        f" (runs {min(base['per_s_runs']):,}-{max(base['per_s_runs']):,}),"
        f" p99 {base['p99_ms']:.1f} ms, {ratio:.2f}x; {stored:,} stored"
        f" (target >= {TARGET_RATIO}x) {verdict(ok)}",
        flush=True,
    )
    return {
        "window": WINDOW,
        "seconds": SECONDS,
        "rounds": ROUNDS,
        "target_ratio": TARGET_RATIO,
        "gateway": gw,
        "baseline": base,
        "ratio": round(ratio, 3),
        "stored": stored,
        "pass": ok,
    }


def count_stored(path: str) -> int:
    import sqlite3

    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
        (n,) = conn.execute("SELECT count(*) FROM messages").fetchone()
    return int(n)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("what", choices=["serve", "bare", "run"])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--dir", default=".")
    args = parser.parse_args()
    if args.what in ("serve", "bare"):
        serve(args.port, args.dir, store=args.what == "serve")
    else:
        print(json.dumps(asyncio.run(run()), indent=2))
