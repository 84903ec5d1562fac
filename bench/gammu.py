"""Versus gammu-smsd: one simulated modem, SMS in, HTTP POST out; gammu-smsd with a curl
RunOnReceive hook against the daemon, same modem profile and same offered load. Three figures.

Every part gives each system its own SimOnlyModem (a FakeModem, real pty, answered from this
process's loop, listing SIM storage only: see there why).

Latency. Both systems get one modem and 2 SMS/s for 10 s. Latency = arrival of the HTTP request
carrying the text at a receiver in this process minus the moment this process called
fake.deliver() (which writes +CMTI); both stamped with this process's time.time(). gammu-smsd:
service = null, ReceiveFrequency = 0, LoopSleep = 1 (its tightest documented polling), the hook
runs `curl --data-binary "$SMS_1_TEXT"` to a bare aiohttp receiver. Gateway: the daemon pushes
to an in-process StandIn (in-process here, unlike the other benchmarks, so both receivers are
alike). Baseline: gammu-smsd's p99. Target: the gateway's p99 <= gammu's (no target was given;
this is the obvious one).

Rate and loss run both systems side by side (concurrently, to save wall time), each with its own
modem and its own in-process StandIn upstream, the daemon with its default configuration
(retry_interval 10 s, concurrency 32, circuit_after 5). gammu-smsd's hook is what an operator
writes (PUSH_HOOK): build the PUSH_SMS JSON with jq from $SMS_1_NUMBER / $SMS_1_TEXT (smsId: the
time in microseconds) and POST it once with `curl -f`.

Rate (modem -> upstream, SMS with a 200 per second, from the first deliver() to the last 200):
300 SMS handed to the modem at 1000/s, i.e. a SIM backlog: the SIM holds 30, the network keeps
the rest and puts the next one in as soon as a slot is freed. What limits each: gammu-smsd reads
the SIM once a loop (LoopSleep = 1 s, its minimum) and gets at most the 30 stored SMS per loop,
running the hook (sh, date, jq, curl) for each in turn; the gateway reads on every +CMTI
(AT+CMGR, commit with fsync, AT+CMGD, one command at a time on the port) and pushes
concurrently, so the pty round trips and the commits bound it. A real modem receives far fewer
than either rate from the network; the figure matters for a backlog after an outage and for how
many modems one host serves. Target: the gateway delivers all and is faster.

Loss: 5 SMS/s for 60 s (gammu-smsd keeps up with that rate, so its losses are the upstream's
doing) while the upstream answers 500 to 50% of the requests, drawn at random from
random.Random(SEED) (each side's upstream has its own stream with the same seed), 200 otherwise;
then it is healthy, and each side is watched until every SMS got a 200, or every SMS was tried,
the SIM is empty and no request came for QUIET s (longer than the daemon's retry interval), or
DRAIN s. Lost = SMS offered that never got a 200. Target: the gateway loses 0.

What gammu-smsd does when RunOnReceive fails: nothing. It waits for the hook (at most two
minutes, gammu-smsd-run(7)), logs a non-zero exit ("Process failed with exit status 22" for
`curl -f` on a 500), and carries on: the hook's result is not looked at; the message was already
handed to the service (with service = null: dropped; with files or SQL: in the inbox) and is
deleted from the SIM right after (gammu's smsd/core.c, SMSD_ReadDeleteSMS: SaveInboxSMS, then
RunOnReceive whose result is ignored, then GSM_DeleteSMS for every part). It is never offered to
the hook again, so every failed POST is a lost SMS unless the operator writes retry and spooling
into the hook. The run shows it: one request per SMS, as many failed exits in smsd.log as 500
answers, and every SMS deleted from the SIM (`failures_logged`, `deleted_from_sim`).
`curl --retry N` in the hook would cut the losses to about 0.5^(N+1) here, not to zero, and
stall the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import shutil
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from bench.common import (
    Daemon,
    free_port,
    paced_sms,
    percentile,
    stop_process,
    verdict,
    write_config,
)
from gateway.play.modem import FakeModem
from gateway.play.standin import StandIn

RATE = 2
SECONDS = 10.0
HOOK = '#!/bin/sh\nexec curl -s -o /dev/null --data-binary "$SMS_1_TEXT" "{url}"\n'


def _cpms_sim_only(self: FakeModem, form: str, args: list[str], urcs: list[str]) -> list[str]:
    if form == "test":
        return ['+CPMS: ("SM"),("SM"),("SM")']
    return FakeModem._h_cpms(self, form, args, urcs)


class SimOnlyModem(FakeModem):
    """A FakeModem whose AT+CPMS=? lists SIM storage only.

    The simulator keeps one storage behind every memory name. gammu-smsd reads "SM" and then
    "ME" on every poll, so on the plain fake it sees each SMS twice, runs its hook twice, and
    its second AT+CMGD of a slot deletes a newer SMS the network put there meanwhile (lost,
    never read): an artefact, not gammu's fault. A SIM-only modem is what the fake is faithful to.
    """

    _HANDLERS = {**FakeModem._HANDLERS, "+CPMS": _cpms_sim_only}


def smsdrc(directory: Path, fake: FakeModem, hook: Path) -> Path:
    """gammu-smsd's configuration: null service, RunOnReceive, its tightest polling."""
    rc = directory / "smsdrc"
    rc.write_text(
        f"[gammu]\ndevice = {fake.port}\nconnection = at\n[smsd]\nservice = null\n"
        f"RunOnReceive = {hook}\nlogfile = {directory / 'smsd.log'}\nLoopSleep = 1\n"
        "ReceiveFrequency = 0\nCheckSecurity = 0\nCheckSignal = 0\nCheckBattery = 0\n"
        "StatusFrequency = 0\nHardResetFrequency = 0\n",
        encoding="utf-8",
    )
    return rc


async def offer(fake: FakeModem, tag: str, got: dict[str, float]) -> list[float]:
    """Deliver RATE SMS/s for SECONDS; latencies in ms (inf for one never received)."""
    sent = await paced_sms([fake], RATE, SECONDS, tag)
    n = len(sent)
    deadline = time.monotonic() + 10
    # The receivers are filled by other code paths (one polls a deque): plain polling.
    while len(set(sent) & set(got)) < n and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.1)
    return [(got[t] - at) * 1000 if t in got else float("inf") for t, at in sent.items()]


async def gammu_run(directory: Path) -> list[float]:
    got: dict[str, float] = {}

    async def post(request: web.Request) -> web.Response:
        got.setdefault(await request.text(), time.time())
        return web.Response(status=201)

    app = web.Application()
    app.router.add_post("/v1/sms", post)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    hook = directory / "hook.sh"
    hook.write_text(HOOK.format(url=f"http://127.0.0.1:{port}/v1/sms"), encoding="utf-8")
    os.chmod(hook, 0o755)
    fake = SimOnlyModem("simcom")
    fake.start()
    proc = subprocess.Popen(["gammu-smsd", "-c", str(smsdrc(directory, fake, hook))])
    try:
        await fake.wait_command("AT+CNMI=", timeout=30)
        await asyncio.sleep(3.0)  # its start-up storage probing
        return await offer(fake, "gammu", got)
    finally:
        # gammu-smsd can sit on SIGTERM for 30 s and more (blocked on the port): 3 s, then kill.
        stop_process(proc, timeout=3.0)
        fake.stop()
        await runner.cleanup()


def modem_config(fake: FakeModem) -> str:
    return (
        f'[modems]\ncommand_timeout = 2\n[[modem]]\nname = "m1"\nport = {json.dumps(fake.port)}\n'
        f'[[sim]]\niccid = "{fake.iccid}"\nphone = "79001234567"\n'
    )


async def gateway_run(directory: Path) -> list[float]:
    standin = StandIn()
    await standin.start()
    fake = SimOnlyModem("simcom")
    fake.start()
    daemon = Daemon(write_config(directory, standin.url, extra=modem_config(fake)))
    got: dict[str, float] = {}

    def collect() -> None:
        for p in standin.pushes:
            if p.status == 200 and p.body:
                got.setdefault(str(p.body.get("text")), p.at)

    async def collector() -> None:
        while True:
            collect()
            await asyncio.sleep(0.05)

    task = asyncio.create_task(collector())
    try:
        await daemon.listening()
        await fake.wait_command("AT+CMGL", timeout=30)
        await asyncio.sleep(1.0)
        return await offer(fake, "gateway", got)
    finally:
        task.cancel()
        daemon.stop()
        fake.stop()
        await standin.stop()


# -- rate and loss: each system with its own modem and its own stand-in upstream ----------

BURST = 300  # SMS offered for the rate figure...
BURST_RATE = 1000.0  # ...this fast: a SIM backlog (it holds 30, the network keeps the rest)
BURST_WAIT = 60.0  # at most this long for a burst to arrive upstream
LOSS_RATE = 5.0  # SMS/s offered while the upstream is flaky: gammu-smsd keeps up with it
LOSS_SECONDS = 60.0
FAIL_RATIO = 0.5
SEED = 6  # both upstreams draw their failures from random.Random(SEED)
DRAIN = 90.0  # after the flaky minute, at most this long for each side to finish
QUIET = 15.0  # every SMS tried once, SIM empty and no request for this long (> the daemon's
# retry_interval, 10 s): nothing more is coming
PUSH_HOOK = """#!/bin/sh
# One POST per message, as an operator writes it; -f makes an HTTP error a failed exit status.
body=$(jq -cn --arg from "$SMS_1_NUMBER" --arg text "$SMS_1_TEXT" --argjson id "$(date +%s%6N)" \
  '{smsId: $id, phoneFrom: $from, phone: "79001234567", text: $text, action: "PUSH_SMS",
    key: "bench-key"}')
exec curl -sf -o /dev/null --max-time 10 -H 'Content-Type: application/json; charset=utf-8' \
  --data-binary "$body" "@URL@"
"""


@dataclass(frozen=True)
class Rig:
    """One system under test, running: its simulated modem, its own upstream, its log."""

    name: str
    fake: FakeModem
    upstream: StandIn
    log: Path
    failure_line: str  # what its log says for a push that failed (one line each)


def first_arrivals(upstream: StandIn, *, ok_only: bool) -> dict[str, float]:
    """Text -> when it first arrived upstream (with a 200 answer, or with any answer)."""
    out: dict[str, float] = {}
    for p in upstream.pushes:
        if p.body is not None and (p.status == 200 or not ok_only):
            out.setdefault(str(p.body.get("text")), p.at)
    return out


@contextlib.asynccontextmanager
async def gammu_rig(directory: Path) -> AsyncIterator[Rig]:
    upstream = StandIn(rng=random.Random(SEED))
    await upstream.start()
    fake = SimOnlyModem("simcom")
    fake.start()
    hook = directory / "push-hook.sh"
    hook.write_text(PUSH_HOOK.replace("@URL@", upstream.url), encoding="utf-8")
    os.chmod(hook, 0o755)
    proc = subprocess.Popen(
        ["gammu-smsd", "-c", str(smsdrc(directory, fake, hook))],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,  # it echoes every failed hook there; smsd.log has them all
    )
    try:
        await fake.wait_command("AT+CNMI=", timeout=30)
        await asyncio.sleep(3.0)  # its start-up storage probing
        yield Rig(
            "gammu", fake, upstream, directory / "smsd.log", "Process failed with exit status"
        )
    finally:
        await asyncio.to_thread(stop_process, proc, timeout=3.0)
        fake.stop()
        await upstream.stop()


@contextlib.asynccontextmanager
async def gateway_rig(directory: Path) -> AsyncIterator[Rig]:
    upstream = StandIn(rng=random.Random(SEED))
    await upstream.start()
    fake = SimOnlyModem("simcom")
    fake.start()
    daemon = Daemon(write_config(directory, upstream.url, extra=modem_config(fake)))
    try:
        await daemon.listening()
        await fake.wait_command("AT+CMGL", timeout=30)
        await asyncio.sleep(1.0)
        yield Rig("gateway", fake, upstream, daemon.log_path, '"push.retry_scheduled"')
        daemon.alive()
    finally:
        await asyncio.to_thread(daemon.stop)
        fake.stop()
        await upstream.stop()


async def rate_phase(rig: Rig) -> dict[str, Any]:
    """BURST SMS offered at BURST_RATE to a healthy upstream: SMS with a 200 per second, from
    the first deliver() to the last 200."""
    sent = await paced_sms([rig.fake], BURST_RATE, BURST / BURST_RATE, f"{rig.name} burst")
    with contextlib.suppress(TimeoutError):
        await rig.upstream.wait_for(
            lambda u: all(t in first_arrivals(u, ok_only=True) for t in sent), timeout=BURST_WAIT
        )
    with contextlib.suppress(TimeoutError):  # the last AT+CMGD follows the last 200
        await rig.fake.wait_until(lambda: not rig.fake.messages and not rig.fake.pending, 5.0)
    got = first_arrivals(rig.upstream, ok_only=True)
    arrivals = [got[t] for t in sent if t in got]
    span = max(arrivals) - min(sent.values()) if arrivals else float("inf")
    return {
        "offered": len(sent),
        "delivered": len(arrivals),
        "seconds": round(span, 2),
        "per_s": round(len(arrivals) / span, 1),
    }


async def loss_phase(rig: Rig) -> dict[str, Any]:
    """LOSS_RATE SMS/s for LOSS_SECONDS while FAIL_RATIO of the requests get a 500, then a
    healthy upstream until every SMS got a 200, nothing more is coming (QUIET) or DRAIN."""
    deleted_before = len(rig.fake.deleted)
    log_offset = rig.log.stat().st_size if rig.log.exists() else 0
    rig.upstream.fail_ratio = FAIL_RATIO
    sent = await paced_sms([rig.fake], LOSS_RATE, LOSS_SECONDS, f"{rig.name} flaky")
    rig.upstream.fail_ratio = 0.0
    healthy_at = time.time()
    while time.time() < healthy_at + DRAIN:  # a quiet period is waited out: plain polling
        ok = first_arrivals(rig.upstream, ok_only=True)
        if all(t in ok for t in sent):
            break
        tried = first_arrivals(rig.upstream, ok_only=False)
        last = max((p.at for p in rig.upstream.pushes), default=0.0)
        sim_empty = not rig.fake.messages and not rig.fake.pending
        if sim_empty and all(t in tried for t in sent) and time.time() - last > QUIET:
            break
        await asyncio.sleep(0.25)
    finished = time.time()
    ok = first_arrivals(rig.upstream, ok_only=True)
    ours = [p for p in rig.upstream.pushes if p.body is not None and p.body.get("text") in sent]
    last_ok = max((ok[t] for t in sent if t in ok), default=healthy_at)
    with rig.log.open("rb") as f:
        f.seek(log_offset)
        log = f.read().decode(errors="replace")
    return {
        "offered": len(sent),
        "delivered": sum(t in ok for t in sent),
        "lost": sum(t not in ok for t in sent),
        "requests": len(ours),
        "answered_500": sum(p.status == 500 for p in ours),
        "last_200_after_healthy_s": round(last_ok - healthy_at, 1),
        "watched_after_healthy_s": round(finished - healthy_at, 1),
        "deleted_from_sim": len(rig.fake.deleted) - deleted_before,
        "failures_logged": log.count(rig.failure_line),
    }


async def rate_and_loss(directory: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """Both systems side by side (concurrently, to save wall time): the rate, then the loss."""
    (directory / "gammu").mkdir(parents=True)
    (directory / "gateway").mkdir()
    async with gammu_rig(directory / "gammu") as g, gateway_rig(directory / "gateway") as w:
        rates = await asyncio.gather(rate_phase(w), rate_phase(g))
        losses = await asyncio.gather(loss_phase(w), loss_phase(g))
    rate = {"offered": BURST, "offered_per_s": BURST_RATE, "gateway": rates[0], "gammu": rates[1]}
    loss = {
        "fail_ratio": FAIL_RATIO,
        "failures": f"random.Random({SEED}) per upstream",
        "flaky_seconds": LOSS_SECONDS,
        "rate_per_s": LOSS_RATE,
        "drain_max_s": DRAIN,
        "gateway": losses[0],
        "gammu": losses[1],
    }
    return rate, loss


async def run() -> dict[str, Any]:
    missing = [tool for tool in ("gammu-smsd", "jq", "curl") if shutil.which(tool) is None]
    if missing:
        print(f"gammu-smsd comparison: not run ({', '.join(missing)} not installed)", flush=True)
        return {"run": False, "reason": f"not installed: {missing}"}
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "gammu").mkdir()
        (Path(tmp) / "gateway").mkdir()
        gammu = await gammu_run(Path(tmp) / "gammu")
        gateway = await gateway_run(Path(tmp) / "gateway")
        rate, loss = await rate_and_loss(Path(tmp) / "flaky")
    g50, g99 = percentile(gammu, 50), percentile(gammu, 99)
    w50, w99 = percentile(gateway, 50), percentile(gateway, 99)
    ok = w99 <= g99
    print(
        f"vs gammu-smsd ({RATE} SMS/s for {SECONDS:g} s, 1 modem): deliver() -> HTTP POST"
        f" arrival: gateway p50 {w50:.1f} ms, p99 {w99:.1f} ms vs gammu-smsd + curl hook"
        f" p50 {g50:.1f} ms, p99 {g99:.1f} ms (target: gateway p99 <= gammu's) {verdict(ok)}",
        flush=True,
    )
    lost = {"gateway": sum(x == float("inf") for x in gateway)}
    lost["gammu"] = sum(x == float("inf") for x in gammu)
    if any(lost.values()):
        print(f"  not received within 10 s: {lost}", flush=True)
    rw, rg = rate["gateway"], rate["gammu"]
    rate_ok = rw["delivered"] == BURST and rw["per_s"] > rg["per_s"]
    print(
        f"vs gammu-smsd, modem -> upstream rate ({BURST} SMS offered at {BURST_RATE:g}/s to 1"
        f" modem, healthy upstream): gateway {rw['per_s']:.1f}/s ({rw['delivered']} in"
        f" {rw['seconds']:.1f} s) vs gammu-smsd + jq/curl hook {rg['per_s']:.1f}/s"
        f" ({rg['delivered']} in {rg['seconds']:.1f} s) (target: gateway faster)"
        f" {verdict(rate_ok)}",
        flush=True,
    )
    lw, lg = loss["gateway"], loss["gammu"]
    loss_ok = lw["lost"] == 0
    print(
        f"vs gammu-smsd, lost with the upstream answering 500 to {FAIL_RATIO:.0%} of requests"
        f" (seeded random) for {LOSS_SECONDS:g} s at {LOSS_RATE:g} SMS/s, then healthy:"
        f" gateway lost {lw['lost']}/{lw['offered']} ({lw['requests']} requests,"
        f" {lw['answered_500']} answered 500, {lw['failures_logged']} retries logged, last 200"
        f" at +{lw['last_200_after_healthy_s']} s)"
        f" vs gammu-smsd + hook lost {lg['lost']}/{lg['offered']} ({lg['requests']} requests,"
        f" {lg['answered_500']} answered 500, {lg['failures_logged']} failed hook exits"
        f" logged, {lg['deleted_from_sim']} deleted from the SIM) (target: gateway loses 0)"
        f" {verdict(loss_ok)}",
        flush=True,
    )
    return {
        "run": True,
        "rate_per_s": RATE,
        "offered_seconds": SECONDS,
        "gateway_p50_ms": round(w50, 2),
        "gateway_p99_ms": round(w99, 2),
        "gammu_p50_ms": round(g50, 2),
        "gammu_p99_ms": round(g99, 2),
        "lost": lost,
        "latency_pass": ok,
        "rate": rate,
        "rate_pass": rate_ok,
        "loss": loss,
        "loss_pass": loss_ok,
        "pass": ok and rate_ok and loss_ok,
    }


if __name__ == "__main__":
    print(json.dumps(asyncio.run(run()), indent=2))
