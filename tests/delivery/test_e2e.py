"""End to end: `sms-gateway run` in a subprocess against the stand-in upstream on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from gateway import __version__
from gateway.play.standin import Answer, StandIn
from tests.fakes.daemon import API_KEY, DaemonProcess, write_config

TEXTS = [
    "Your verification code is 800142",
    "Код подтверждения: 4417. Никому не сообщайте",
    "emoji 🙂👍🏽 and a flag 🇷🇺",
    "quotes \" ' and backslash \\ and / slash",
    "line one\nline two\r\nline three\ttab",
    "",
]


def attempts_for(standin: StandIn, sms_id: int) -> list[Any]:
    return [p for p in standin.pushes if p.sms_id == sms_id]


async def test_messages_arrive_upstream_byte_exact(daemon: DaemonProcess, standin: StandIn) -> None:
    payload = [
        {"phone": "+7 (900) 123-45-67", "phoneFrom": sender, "text": text}
        for sender, text in zip(["Instagram", "+79001112233", "Сбер", "A&B", "x", "y"], TEXTS)
    ]
    status, body = await daemon.post_sms(payload)
    assert status == 201
    ids = [item["smsId"] for item in body]
    assert len(set(ids)) == len(TEXTS)
    await standin.wait_for(lambda s: s.delivered_ids() >= set(ids), timeout=10)
    for sms_id, item in zip(ids, payload):
        (push,) = attempts_for(standin, sms_id)
        expected = {
            "smsId": sms_id,
            "phoneFrom": item["phoneFrom"],
            "phone": "79001234567",
            "text": item["text"],
            "action": "PUSH_SMS",
            "key": API_KEY,
        }
        assert json.loads(push.raw) == expected
        assert list(json.loads(push.raw)) == list(expected)  # exactly these keys, in this order
        assert push.raw.decode("utf-8") == json.dumps(
            expected, ensure_ascii=False, separators=(",", ":")
        )
        assert b"\\u" not in push.raw  # raw UTF-8, no escapes
        assert (
            item["text"].encode("utf-8") in push.raw or "\n" in item["text"] or '"' in item["text"]
        )
        assert push.headers["Content-Type"] == "application/json; charset=utf-8"
        assert push.headers["User-Agent"] == f"partner-sms-gateway/{__version__}"
        assert push.headers["Authorization"] == f"Bearer {API_KEY}"
    assert isinstance(json.loads(attempts_for(standin, ids[0])[0].raw)["smsId"], int)


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (404, '{"response": "NO_OPERATION"}'),
        (404, "NO_OPERATION"),
        (200 + 204, '{"response":"NO_OP"}'),
        (400, '{"response": "BAD_SERVICE"}'),
        (500, "error: BAD_SERVICE"),
    ],
)
async def test_drop_codes_end_a_message_after_one_attempt(
    daemon: DaemonProcess, standin: StandIn, status: int, body: str
) -> None:
    standin.script.append(Answer(status, body))
    _, answer = await daemon.post_sms({"phone": "79001234567", "phoneFrom": "S", "text": "t"})
    sms_id = answer["smsId"]
    await standin.wait_for(lambda s: len(attempts_for(s, sms_id)) == 1, timeout=5)
    drop = await daemon_logged(daemon, "push.dropped", sms_id=sms_id)
    assert drop["http_status"] == status
    # Recorded as dropped: a final state, never claimed again (no need to wait for a retry).
    with sqlite3.connect(daemon.dir / "outbox.sqlite3") as db:
        row = db.execute("SELECT state, leased FROM messages WHERE sms_id = ?", (sms_id,))
        assert row.fetchone() == ("dropped", 0)
    assert len(attempts_for(standin, sms_id)) == 1


async def daemon_logged(
    daemon: DaemonProcess, event: str, timeout: float = 10.0, **match: Any
) -> dict[str, Any]:
    """The first log line of `event` with these fields, waiting for it at most `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        for entry in daemon.logs():
            if entry.get("event") == event and all(entry.get(k) == v for k, v in match.items()):
                return entry
        assert time.monotonic() < deadline, f"no {event} {match} within {timeout} s"
        await asyncio.sleep(0.05)


def gaps(standin: StandIn, sms_id: int) -> list[float]:
    times = sorted(p.at for p in attempts_for(standin, sms_id))
    return [b - a for a, b in zip(times, times[1:])]


@pytest.mark.parametrize(
    "failure",
    [Answer(500, "oops"), Answer(404, "<html>Not Found</html>"), Answer(reset=True)],
    ids=["http-500", "404-without-code", "connection-reset"],
)
async def test_failures_are_retried_at_the_configured_spacing(
    daemon: DaemonProcess, standin: StandIn, failure: Answer
) -> None:
    standin.script.extend([failure, failure])
    _, answer = await daemon.post_sms({"phone": "79001234567", "phoneFrom": "S", "text": "t"})
    sms_id = answer["smsId"]
    await standin.wait_for(lambda s: sms_id in s.delivered_ids(), timeout=10)
    assert len(attempts_for(standin, sms_id)) == 3
    for gap in gaps(standin, sms_id):
        assert 0.5 <= gap < 1.2  # retry_interval = 0.5 after the failed attempt ended
    # Every attempt carried the same body.
    assert len({p.raw for p in attempts_for(standin, sms_id)}) == 1


async def test_timeout_is_retried_after_the_attempt_ends(
    daemon_factory: Callable[..., Any], standin: StandIn
) -> None:
    daemon = await daemon_factory(upstream={"timeout": 0.5, "retry_interval": 0.5})
    standin.script.append(Answer(delay=2.0))
    _, answer = await daemon.post_sms({"phone": "79001234567", "phoneFrom": "S", "text": "t"})
    sms_id = answer["smsId"]
    await standin.wait_for(lambda s: len(attempts_for(s, sms_id)) == 2, timeout=10)
    assert sorted(p.status for p in attempts_for(standin, sms_id)) == [0, 200]
    (gap,) = gaps(standin, sms_id)
    assert 1.0 <= gap < 1.8  # 0.5 s timeout + 0.5 s retry interval
    errors = [e for e in daemon.logs() if e.get("event") == "push.failed"]
    assert errors[0]["error"] == "Timeout" and errors[0]["sms_id"] == sms_id


async def test_without_retry_interval_in_the_config_a_retry_comes_ten_seconds_later(
    tmp_path: Path, standin: StandIn
) -> None:
    """The real default: the config does not set retry_interval at all."""
    path = write_config(tmp_path, standin.url)
    lines = path.read_text(encoding="utf-8").splitlines()
    path.write_text("\n".join(x for x in lines if not x.startswith("retry_interval")) + "\n")
    assert "\nretry_interval" not in path.read_text(encoding="utf-8")
    daemon = DaemonProcess(path)
    await daemon.start()
    try:
        standin.script.append(Answer(500, "down"))
        _, answer = await daemon.post_sms({"phone": "79001234567", "phoneFrom": "S", "text": "t"})
        sms_id = answer["smsId"]
        await standin.wait_for(lambda s: sms_id in s.delivered_ids(), timeout=15)
        (gap,) = gaps(standin, sms_id)
        assert 10.0 <= gap < 11.0
    finally:
        await daemon.stop()


async def test_429_with_retry_after_pauses_all_sending(
    daemon: DaemonProcess, standin: StandIn
) -> None:
    standin.script.append(Answer(429, '{"response":"TOO_MANY_ATTEMPTS"}', {"Retry-After": "2"}))
    _, first = await daemon.post_sms({"phone": "79001234567", "phoneFrom": "S", "text": "a"})
    await standin.wait_for(lambda s: len(s.pushes) == 1, timeout=5)
    limited_at = standin.pushes[0].at
    _, rest = await daemon.post_sms(
        [{"phone": "79001234567", "phoneFrom": "S", "text": f"m{i}"} for i in range(5)]
    )
    wanted = {first["smsId"], *(r["smsId"] for r in rest)}
    await standin.wait_for(lambda s: s.delivered_ids() >= wanted, timeout=15)
    later = list(standin.pushes)[1:]
    assert min(p.at for p in later) >= limited_at + 2.0  # nobody was sent during the pause
    limited = [e for e in daemon.logs() if e.get("event") == "push.rate_limited"]
    assert limited[0]["retry_after"] == 2.0


async def test_kill_9_during_pushes_loses_nothing(daemon: DaemonProcess, standin: StandIn) -> None:
    standin.default = Answer(delay=0.3)
    _, answers = await daemon.post_sms(
        [{"phone": "79001234567", "phoneFrom": "S", "text": f"m{i}"} for i in range(60)]
    )
    ids = {a["smsId"] for a in answers}
    await standin.wait_for(lambda s: s.in_flight >= 5, timeout=5)
    daemon.kill()
    standin.default = None
    await daemon.start()
    await standin.wait_for(lambda s: s.delivered_ids() >= ids, timeout=30)
    seen = {p.sms_id for p in standin.pushes}
    assert seen == ids  # every message, and no new smsId for any of them
    await daemon.stop()


async def test_sigterm_exits_zero_within_five_seconds_keeping_inflight(
    daemon_factory: Callable[..., Any], standin: StandIn
) -> None:
    daemon = await daemon_factory(upstream={"timeout": 60})
    standin.default = Answer(delay=30)
    _, answer = await daemon.post_sms({"phone": "79001234567", "phoneFrom": "S", "text": "t"})
    await standin.wait_for(lambda s: s.in_flight == 1, timeout=5)
    started = time.monotonic()
    daemon.signal(signal.SIGTERM)
    await daemon.wait_notification("STOPPING=1", timeout=5)
    code = await daemon.wait(timeout=6)
    assert code == 0
    assert time.monotonic() - started < 5.0
    abandoned = [e for e in daemon.logs() if e.get("event") == "delivery.pushes_abandoned"]
    assert abandoned and abandoned[0]["sms_ids"] == [answer["smsId"]]
    # The abandoned message stays queued and goes out, same smsId, after a restart.
    standin.default = None
    await daemon.start()
    await standin.wait_for(lambda s: answer["smsId"] in s.delivered_ids(), timeout=10)
    assert await daemon.stop() == 0


async def test_sigint_also_stops_cleanly(daemon: DaemonProcess) -> None:
    daemon.signal(signal.SIGINT)
    assert await daemon.wait(timeout=6) == 0


async def test_api_key_never_reaches_the_logs(daemon: DaemonProcess, standin: StandIn) -> None:
    standin.script.append(Answer(401, '{"response":"ERROR_WRONG_KEY"}'))
    _, answer = await daemon.post_sms({"phone": "79001234567", "phoneFrom": "S", "text": "t"})
    await standin.wait_for(lambda s: answer["smsId"] in s.delivered_ids(), timeout=10)
    await daemon.stop()
    text = daemon.log_text()
    assert API_KEY not in text
    assert "upstream.key_rejected" in text
    for entry in daemon.logs():
        if entry["event"].startswith("push."):
            assert entry["sms_id"] == answer["smsId"]


async def test_a_backlog_drains_with_at_most_concurrency_requests_in_flight(
    daemon_factory: Callable[..., Any], standin: StandIn
) -> None:
    daemon = await daemon_factory(upstream={"concurrency": 4})
    standin.default = Answer(delay=0.05)
    _, answers = await daemon.post_sms(
        [{"phone": "79001234567", "phoneFrom": "S", "text": f"m{i}"} for i in range(40)]
    )
    ids = {a["smsId"] for a in answers}
    await standin.wait_for(lambda s: s.delivered_ids() >= ids, timeout=15)
    assert standin.max_in_flight == 4  # the window was used, and never exceeded
    # One keep-alive session: connections are reused, not one per request.
    assert len(standin.peers) <= 4


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def test_an_idle_daemon_neither_spins_nor_misses_new_work(
    daemon: DaemonProcess, standin: StandIn
) -> None:
    """After the queue runs dry the worker stops claiming (no busy loop of write transactions),
    and still picks up the next message at once."""
    _, first = await daemon.post_sms({"phone": "79001234567", "phoneFrom": "S", "text": "a"})
    await standin.wait_for(lambda s: first["smsId"] in s.delivered_ids(), timeout=10)
    assert daemon.proc is not None
    before = cpu_seconds(daemon.proc.pid)
    await asyncio.sleep(2.0)
    assert cpu_seconds(daemon.proc.pid) - before < 0.2  # a spinning claim loop burns ~2 s
    t0 = time.monotonic()
    _, second = await daemon.post_sms({"phone": "79001234567", "phoneFrom": "S", "text": "b"})
    await standin.wait_for(lambda s: second["smsId"] in s.delivered_ids(), timeout=10)
    assert time.monotonic() - t0 < 0.5  # woken by the commit, not by the 1 s poll


async def test_messages_claimed_ahead_are_handed_back_when_the_circuit_opens(
    daemon_factory: Callable[..., Any], standin: StandIn
) -> None:
    """Steady flow claims windows ahead; once the upstream is down only the probe may hold a
    lease, so nothing sits leased (and unsent) in memory while the circuit is open."""
    daemon = await daemon_factory(
        upstream={"concurrency": 4, "circuit_after": 2, "retry_interval": 5.0}
    )
    standin.default = Answer(status=500, delay=0.2)
    status, _ = await daemon.post_sms(
        [{"phone": "79001234567", "phoneFrom": "S", "text": f"m{i}"} for i in range(60)]
    )
    assert status == 201
    deadline = time.monotonic() + 10
    while "upstream.circuit_open" not in daemon.log_text():
        assert time.monotonic() < deadline, "the circuit never opened"
        await asyncio.sleep(0.05)
    # The in-flight answers come back and the buffer is handed back: then at most the probe
    # holds a lease (claimed ahead and kept, they would hold theirs for 6 x timeout + 5 s).
    deadline = time.monotonic() + 3.0
    while True:
        with sqlite3.connect(daemon.dir / "outbox.sqlite3") as db:
            (leased,) = db.execute("SELECT count(*) FROM messages WHERE leased = 1").fetchone()
        if leased <= 1:
            break
        assert time.monotonic() < deadline, f"{leased} messages still leased"
        await asyncio.sleep(0.05)
    assert len(standin.pushes) <= 8  # about a window before it opened; no probe yet
