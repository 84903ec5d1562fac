"""Shared helpers: the stand-in and the daemon as subprocesses, stores, /proc readings, output.

`python -m bench.common bare-server --port P` runs the ingest baseline: a bare aiohttp server
answering 201 to POST /v1/sms without any storage (in its own process, like the daemon).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import structlog

from gateway.outbox import Incoming, Outbox

CONCURRENCY = 32
TOKEN = "bench-ingest-token-0123456789"
TICKS = os.sysconf("SC_CLK_TCK")
# The bench's own Outbox use (filling stores) logs nothing below warnings.
structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(30))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def closed_url() -> str:
    """An upstream URL nobody listens on (connection refused)."""
    return f"http://127.0.0.1:{free_port()}/v1/PUSH_SMS"


def cores() -> tuple[int, int] | None:
    """(load core, server core): where the load side and the side under test run, if pinned.

    The throughput benchmarks pin the process that makes the load (the bench itself, or the
    daemon draining its queue) to one core and the one that serves it to the other, the same
    for the gateway and its baseline. Unpinned, the scheduler's placement moved the baselines
    by a quarter from one run to the next (the bare server gave 14k/s or 17k/s), so a ratio
    said more about placement than about the gateway. None: fewer than two cores to use.
    """
    allowed = sorted(os.sched_getaffinity(0))
    return (allowed[0], allowed[1]) if len(allowed) >= 2 else None


def pin(pid: int, core: int | None) -> None:
    """Keep process `pid` (every thread it has now or starts later) on `core`."""
    if core is None:
        return
    with contextlib.suppress(OSError):  # it may have exited already
        for task in os.listdir(f"/proc/{pid}/task"):
            os.sched_setaffinity(int(task), {core})


@contextlib.contextmanager
def pinned_here(core: int | None) -> Iterator[None]:
    """This (the bench) process on `core` for the block, as it was afterwards."""
    before = os.sched_getaffinity(0)
    if core is not None:
        os.sched_setaffinity(0, {core})
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


class StandInProcess:
    """`python -m gateway stand-in` in its own process; GET /stats and /received."""

    def __init__(self, core: int | None = None) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.url = f"{self.base}/v1/PUSH_SMS"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gateway", "stand-in", "--port", str(self.port),
             "--rate", "0", "--quiet"],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        pin(self.proc.pid, core)

    async def stats(self, session: aiohttp.ClientSession) -> dict[str, Any]:
        async with session.get(f"{self.base}/stats") as r:
            data: dict[str, Any] = await r.json()
            return data

    async def received(self, session: aiohttp.ClientSession) -> list[dict[str, Any]]:
        async with session.get(f"{self.base}/received") as r:
            data: list[dict[str, Any]] = await r.json()
            return data

    async def ready(self) -> None:
        await wait_http(f"{self.base}/stats", self.proc)

    def stop(self) -> None:
        stop_process(self.proc)


async def wait_http(url: str, proc: subprocess.Popen[bytes], tries: int = 400) -> None:
    async with aiohttp.ClientSession() as s:
        for _ in range(tries):
            if proc.poll() is not None:
                raise RuntimeError(f"{proc.args!r} exited {proc.returncode}")
            try:
                async with s.get(url) as r:
                    await r.read()
                    return
            except aiohttp.ClientError:
                await asyncio.sleep(0.05)
    raise RuntimeError(f"{url}: did not start")


def stop_process(
    proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 30.0
) -> None:
    """Signal, wait up to `timeout` s, then SIGKILL."""
    if proc.poll() is None:
        proc.send_signal(sig)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class BareServer:
    """The ingest baseline (this module's `bare-server`) in its own process."""

    def __init__(self, core: int | None = None) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.common", "bare-server", "--port", str(self.port)]
        )
        pin(self.proc.pid, core)

    async def ready(self) -> None:
        await wait_http(f"{self.base}/ping", self.proc)

    def stop(self) -> None:
        stop_process(self.proc)


def push_body(i: int) -> bytes:
    return json.dumps(
        {"smsId": i, "phoneFrom": "Bench", "phone": "79001234567",
         "text": f"Your code is {i:06d}", "action": "PUSH_SMS", "key": "bench-key"},
        ensure_ascii=False, separators=(",", ":"),
    ).encode()  # fmt: skip


async def fill_store(path: str, n: int, step: int = 20_000) -> None:
    """Commit n queued messages through Outbox.accept, `step` per call."""
    outbox = await Outbox.open(path)
    now = time.time()
    for start in range(0, n, step):
        await outbox.accept(
            [
                Incoming("bench", "79001234567", "Bench", f"Your code is {i:06d}", now)
                for i in range(start, min(n, start + step))
            ]
        )
    await outbox.close()


def write_config(
    directory: Path,
    url: str,
    *,
    log_level: str = "info",
    token: str = "",
    extra: str = "",
    store: str | None = None,
) -> Path:
    store = store or str(directory / "outbox.sqlite3")
    path = directory / "config.toml"
    text = (
        f'[upstream]\nurl = "{url}"\napi_key = "bench-key"\nconcurrency = {CONCURRENCY}\n'
        f'[store]\npath = "{store}"\n[http]\nlisten = "127.0.0.1:0"\n'
    )
    if token:
        text += f'ingest_token = "{token}"\n'
    text += f'[log]\nlevel = "{log_level}"\n{extra}'
    path.write_text(text, encoding="utf-8")
    return path


class Daemon:
    """`python -m gateway run -c CONFIG` with stderr (JSON log lines) to a file."""

    def __init__(self, config: Path, core: int | None = None) -> None:
        self.config = config
        self.log_path = config.parent / "daemon.log"
        self.port = 0
        cmd = [sys.executable, "-m", "gateway", "run", "-c", str(config)]
        self.profiling = bool(os.environ.get("BENCH_PROFILE"))
        if self.profiling:  # collapsed stacks for flame graphs
            cmd = ["py-spy", "record", "-r", "200", "-f", "raw",
                   "-o", os.environ["BENCH_PROFILE"], "--", *cmd]  # fmt: skip
        with open(self.log_path, "ab") as log:
            env = {**os.environ, "PYTHONUNBUFFERED": "1"}
            env.pop("NOTIFY_SOCKET", None)
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=log, env=env)
        pin(self.proc.pid, core)

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def alive(self) -> None:
        if self.proc.poll() is not None:
            tail = self.log_path.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"daemon exited {self.proc.returncode}:\n{tail}")

    async def listening(self, timeout: float = 60.0) -> None:
        """Wait for the `http.listening` log line; remember the port."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.alive()
            for line in self.log_path.read_text(errors="replace").splitlines():
                if '"http.listening"' in line:
                    self.port = int(json.loads(line)["port"])
                    return
            await asyncio.sleep(0.05)
        raise RuntimeError("daemon did not log http.listening")

    def stop(self) -> None:
        # py-spy writes its profile on SIGINT; the daemon stops cleanly on either.
        stop_process(self.proc, signal.SIGINT if self.profiling else signal.SIGTERM)


def rss_kib(pid: int, key: str = "VmHWM:") -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, in seconds."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


async def drain_window(
    standin: StandInProcess, daemon: Daemon, count: int, *, poll: float = 0.02
) -> tuple[float, int]:
    """Deliveries/s over the first `count` deliveries by a just-started daemon, timed from the
    first delivery the stand-in reports (start-up excluded); and the daemon's VmHWM in KiB."""
    async with aiohttp.ClientSession() as s:
        before = (await standin.stats(s))["delivered"]
        peak = 0
        t0 = 0.0
        start_count = 0
        while True:
            daemon.alive()
            peak = max(peak, rss_kib(daemon.pid))
            done = (await standin.stats(s))["delivered"] - before
            now = time.perf_counter()
            if not t0 and done > 0:
                t0, start_count = now, done
            if done >= count:
                return (done - start_count) / (now - t0), max(peak, rss_kib(daemon.pid))
            await asyncio.sleep(poll)


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[k]


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def fmt_rate(x: float) -> str:
    return f"{x:,.0f}/s"


# -- the bare ingest server ---------------------------------------------------------------


def bare_server(port: int) -> None:
    from aiohttp import web

    counter = iter(range(1, 1 << 62))

    async def post(request: web.Request) -> web.Response:
        payload = await request.json()
        if isinstance(payload, list):
            return web.json_response([{"smsId": next(counter)} for _ in payload], status=201)
        return web.json_response({"smsId": next(counter)}, status=201)

    async def ping(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application(client_max_size=1024 * 1024)
    app.router.add_post("/v1/sms", post)
    app.router.add_get("/ping", ping)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("what", choices=["bare-server"])
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    bare_server(args.port)


async def paced_sms(
    fakes: Sequence[Any], rate: float, seconds: float, tag: str
) -> dict[str, float]:
    """Deliver `rate` SMS a second for `seconds`, round robin over simulated modems.

    Returns text -> the wall time it was handed to its modem (which emits +CMTI at once).
    """
    from gateway.play.pdu import encode_deliver

    sent: dict[str, float] = {}
    start = time.perf_counter()
    for k in range(int(rate * seconds)):
        delay = start + k / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        text = f"{tag} {k} code {k:06d}"
        pdu = encode_deliver("Bench", text)
        sent[text] = time.time()
        fakes[k % len(fakes)].deliver(pdu)
    return sent


async def until_signalled() -> None:
    """Wait for SIGTERM or SIGINT: how a benchmark's server process is told to stop."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
