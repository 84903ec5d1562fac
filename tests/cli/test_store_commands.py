"""The store commands as an operator runs them: real subprocesses on a real store file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp

from gateway.outbox import Attempt, AttemptRecord, Hold, Incoming, Outbox, Outcome, State
from gateway.outbox.partner import PartnerBook
from gateway.play.standin import Answer, StandIn
from tests.fakes.daemon import API_KEY, INGEST_TOKEN, DaemonProcess, write_config


def cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        capture_output=True,
        text=True,
        input=stdin,
        timeout=30,
    )


def test_ingest_commits_and_prints_the_smsid(tmp_path: Path) -> None:
    cfg = str(write_config(tmp_path, "http://127.0.0.1:9/v1/PUSH_SMS"))
    first = cli("ingest", "-c", cfg, "--phone", "+7 900 123-45-67", "--from", "Bank", "--text", "a")
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip() == "1"
    second = cli("ingest", "-c", cfg, "--phone", "79001234567", "--from", "X", stdin="from stdin\n")
    assert second.stdout.strip() == "2"
    listed = json.loads(cli("messages", "list", "--json", "-c", cfg).stdout)
    assert [(m["sms_id"], m["phone"], m["text"]) for m in listed] == [
        (2, "79001234567", "from stdin\n"),
        (1, "79001234567", "a"),
    ]
    assert {m["source"] for m in listed} == {"cli"}


def test_ingest_with_the_same_id_twice_is_one_message(tmp_path: Path) -> None:
    cfg = str(write_config(tmp_path, "http://127.0.0.1:9/v1/PUSH_SMS"))
    args = ["ingest", "-c", cfg, "--phone", "79001234567", "--from", "X", "--text", "t"]
    assert cli(*args, "--id", "hook-1").stdout.strip() == "1"
    assert cli(*args, "--id", "hook-1").stdout.strip() == "1"
    assert cli(*args, "--id", "hook-2").stdout.strip() == "2"


def test_ingest_refuses_bad_input_with_exit_2_and_commits_nothing(tmp_path: Path) -> None:
    cfg = str(write_config(tmp_path, "http://127.0.0.1:9/v1/PUSH_SMS"))
    bad = cli("ingest", "-c", cfg, "--phone", "abc", "--from", "X", "--text", "t")
    assert bad.returncode == 2
    assert bad.stderr.startswith("sms-gateway: --phone:")
    missing = cli("ingest", "-c", cfg, "--phone", "79001234567", "--text", "t")
    assert missing.returncode == 2
    assert "--from" in missing.stderr
    assert not (tmp_path / "outbox.sqlite3").exists()  # refused before the store is touched
    assert cli("migrate", "-c", cfg).returncode == 0
    again = cli("ingest", "-c", cfg, "--phone", "abc", "--from", "X", "--text", "t")
    assert again.stderr.startswith("sms-gateway: --phone:")
    status = json.loads(cli("status", "--json", "-c", cfg).stdout)
    assert sum(status["messages"].values()) == 0


def test_status_without_a_store_says_so(tmp_path: Path) -> None:
    cfg = str(write_config(tmp_path, "http://127.0.0.1:9/v1/PUSH_SMS"))
    result = cli("status", "-c", cfg)
    assert result.returncode == 1
    assert "no store there" in result.stderr
    assert "Traceback" not in result.stderr


async def test_status_show_and_retry_while_the_daemon_runs(
    daemon: DaemonProcess, standin: StandIn
) -> None:
    cfg = str(daemon.config_path)
    standin.script.extend([Answer(500, "busy"), Answer(404, '{"response":"NO_OPERATION"}')])
    _, answer = await daemon.post_sms({"phone": "79001234567", "phoneFrom": "Shop", "text": "hi"})
    sms_id = answer["smsId"]
    await standin.wait_for(lambda s: len(s.pushes) == 2, timeout=10)
    # The drop is recorded just after the answer; the daemon logs it once committed.
    await daemon.logged("push.dropped", timeout=10)

    status = json.loads(cli("status", "--json", "-c", cfg).stdout)
    assert status["messages"]["dropped"] == 1
    assert status["recent_drops"][0]["smsId"] == sms_id
    assert status["recent_drops"][0]["code"] == "NO_OPERATION"
    text = cli("status", "-c", cfg).stdout
    assert "NO_OPERATION" in text
    assert API_KEY not in text

    shown = json.loads(cli("messages", "show", str(sms_id), "--json", "-c", cfg).stdout)
    assert [(a["outcome"], a["http_status"]) for a in shown["attempts"]] == [
        ("retry", 500),
        ("dropped", 404),
    ]
    assert shown["attempts"][1]["code"] == "NO_OPERATION"
    assert shown["attempts"][0]["body"] == "busy"

    dropped = json.loads(cli("messages", "list", "--state", "dropped", "--json", "-c", cfg).stdout)
    assert [m["sms_id"] for m in dropped] == [sms_id]

    retried = cli("messages", "retry", "--state", "dropped", "--since", "1h", "-c", cfg)
    assert retried.returncode == 0
    assert f"({sms_id})" in retried.stdout
    # The daemon picks it up (it polls the store for other writers) with the same smsId.
    await standin.wait_for(lambda s: sms_id in s.delivered_ids(), timeout=10)
    assert len([p for p in standin.pushes if p.sms_id == sms_id]) == 3


BOX_WITH_PORTS = """
[[dinstar]]
name = "box-1"
token = "tok-d"

[[sim]]
source = "box-1"
port = "0"
phone = "79001230000"
"""


async def test_retry_with_phone_sends_on_a_message_held_no_phone_while_the_daemon_runs(
    daemon_factory: Any, standin: StandIn
) -> None:
    """A box port with no [[sim]] (its source has per-port entries) is held no_phone and never
    released by the daemon; the operator gives it its number and the running daemon pushes it,
    same smsId."""
    daemon: DaemonProcess = await daemon_factory(extra=BOX_WITH_PORTS)
    cfg = str(daemon.config_path)
    push = {"sn": "sn-1", "sms": [
        {"incoming_sms_id": 1, "port": 5, "number": "VK", "text": "code 5"},
        {"incoming_sms_id": 2, "port": 0, "number": "VK", "text": "code 0"},
    ]}  # fmt: skip
    async with (
        aiohttp.ClientSession() as s,
        s.post(f"{daemon.base}/v1/inbound/dinstar/box-1?token=tok-d", json=push) as r,
    ):
        assert r.status == 200
    held = json.loads(cli("messages", "list", "--state", "held", "--json", "-c", cfg).stdout)
    [(held_id, reason)] = [(m["sms_id"], m["hold_reason"]) for m in held]
    assert reason == "no_phone"
    everything = json.loads(cli("messages", "list", "--json", "-c", cfg).stdout)
    [mapped_id] = {m["sms_id"] for m in everything} - {held_id}
    await standin.wait_for(lambda st: mapped_id in st.delivered_ids(), timeout=10)

    given = cli("messages", "retry", str(held_id), str(mapped_id), "99", "--phone",
                "+7 900 123-00-05", "-c", cfg)  # fmt: skip
    assert given.returncode == 0, given.stderr
    assert given.stdout.splitlines() == [f"given phone 79001230005 and queued: 1 ({held_id})"]
    assert (
        "not changed (only messages held no_phone take --phone):"
        f" {mapped_id} (delivered), 99 (no such message)"
    ) in given.stderr
    [line] = [x for x in given.stderr.splitlines() if "sms.released" in x]
    assert f"sms_ids=[{held_id}]" in line and "phone=79001230005" in line
    assert "source=dinstar:box-1" in line and API_KEY not in given.stderr
    # The daemon picks it up (it polls the store for other writers): same smsId, new phone.
    await standin.wait_for(lambda st: held_id in st.delivered_ids(), timeout=10)
    [pushed] = [p.body for p in standin.pushes if p.sms_id == held_id]
    assert pushed is not None
    assert (pushed["phone"], pushed["text"]) == ("79001230005", "code 5")
    assert (
        json.loads(cli("messages", "show", str(held_id), "--json", "-c", cfg).stdout)["state"]
        == "delivered"
    )


async def test_retry_with_phone_follows_the_activations_with_partner_on(tmp_path: Path) -> None:
    config = write_config(tmp_path, "http://127.0.0.1:9/v1/PUSH_SMS", extra="[partner]\n")
    text = config.read_text(encoding="utf-8")
    config.write_text(text.replace("[http]", "keep_finished = 3600\n\n[http]", 1), "utf-8")
    cfg, ordered, unordered = str(config), "79001110001", "79002220002"
    now = time.time()
    clock = [now - 7200]
    outbox = await Outbox.open(str(tmp_path / "outbox.sqlite3"), clock=lambda: clock[0])
    try:
        book = PartnerBook(outbox)
        await book.start()

        def held_sms(text: str) -> Incoming:
            return Incoming("smpp-server:box1", "", "VK", text, now, hold=Hold.NO_PHONE)

        # Two hours ago, before the order; then the order; then two more.
        [before] = [a.sms_id for a in await outbox.accept([held_sms("before the order")])]
        activation_id = await book.open_activation(
            "smpp-server:box1:5", ordered, "vk", False, now - 3600, now + 600
        )
        clock[0] = now
        during, elsewhere = [
            a.sms_id for a in await outbox.accept([held_sms("during"), held_sms("elsewhere")])
        ]
    finally:
        await outbox.close()

    first = cli("messages", "retry", str(before), str(during), "--phone", ordered, "-c", cfg)
    assert first.returncode == 0, first.stderr
    assert first.stdout.splitlines() == [
        f"given phone {ordered} and queued: 1 ({during})",
        f"  pushed for activation {activation_id}: {during}",
        f"given phone {ordered}, held no_activation (no activation was open on it when they"
        f" came; `messages retry SMSID` pushes one anyway): 1 ({before})",
    ]
    second = cli("messages", "retry", str(elsewhere), str(before), "--phone", unordered, "-c", cfg)
    assert second.returncode == 0, second.stderr
    assert (
        "held no_activation (no activation" in second.stdout and f"({elsewhere})" in second.stdout
    )
    assert f"{before} (held no_activation)" in second.stderr  # given a phone once only

    shown = {
        i: json.loads(cli("messages", "show", str(i), "--json", "-c", cfg).stdout)
        for i in (before, during, elsewhere)
    }
    assert {
        i: (m["state"], m["hold_reason"], m["phone"], m["activation_id"]) for i, m in shown.items()
    } == {
        before: ("held", "no_activation", ordered, None),
        during: ("queued", None, ordered, activation_id),
        elsewhere: ("held", "no_activation", unordered, None),
    }
    # `messages retry SMSID` still pushes a no_activation one by hand, as ever.
    assert f"({before})" in cli("messages", "retry", str(before), "-c", cfg).stdout
    outbox = await Outbox.open(str(tmp_path / "outbox.sqlite3"), readonly=True, migrate=False)
    try:
        m = await outbox.get_message(before)
        assert m is not None and m.state is State.QUEUED
    finally:
        await outbox.close()


async def test_retry_with_a_bad_phone_or_without_smsids_is_refused_and_changes_nothing(
    tmp_path: Path,
) -> None:
    cfg = str(write_config(tmp_path, "http://127.0.0.1:9/v1/PUSH_SMS"))
    outbox = await Outbox.open(str(tmp_path / "outbox.sqlite3"))
    try:
        [a] = await outbox.accept(
            [Incoming("gammu", "", "VK", "x", time.time(), hold=Hold.NO_PHONE)]
        )
    finally:
        await outbox.close()
    for phone in ("abc", "12", "+7 900 123-45-67 ext 5"):
        bad = cli("messages", "retry", str(a.sms_id), "--phone", phone, "-c", cfg)
        assert bad.returncode == 2, bad.stderr
        assert "argument --phone:" in bad.stderr and "is not a phone number" in bad.stderr
    for args in ([], ["--state", "dropped"], [str(a.sms_id), "--since", "1h"]):
        refused = cli("messages", "retry", *args, "--phone", "79001234567", "-c", cfg)
        assert refused.returncode == 2, refused.stderr
        assert refused.stderr.startswith("sms-gateway: messages retry --phone: name the messages")
    # Without --phone, as ever: a held no_phone message is not retried.
    plain = cli("messages", "retry", str(a.sms_id), "-c", cfg)
    assert (plain.returncode, plain.stdout) == (0, "queued again: 0\n")
    listed = json.loads(cli("messages", "list", "--json", "-c", cfg).stdout)
    assert [(m["state"], m["hold_reason"], m["phone"]) for m in listed] == [
        ("held", "no_phone", "")
    ]


HOSTILE_TEXT = "code 1234\x1b]0;pwned\x07\x1b[2J\nsmsId 99  delivered\u202e"
HOSTILE_SENDER = "Bank\x1b[1A\r\u2066"


async def test_sms_text_cannot_act_on_the_terminal(tmp_path: Path) -> None:
    """Escape sequences, CR, newlines and bidi controls in an SMS are shown, never sent raw."""
    cfg = str(write_config(tmp_path, "http://127.0.0.1:9/v1/PUSH_SMS"))
    took = cli("ingest", "-c", cfg, "--phone", "79001234567", "--from", HOSTILE_SENDER,
               "--text", HOSTILE_TEXT)  # fmt: skip
    assert took.returncode == 0, took.stderr
    sms_id = int(took.stdout)
    # A drop, so that `status` lists the sender too.
    outbox = await Outbox.open(str(tmp_path / "outbox.sqlite3"))
    try:
        [claimed] = await outbox.claim_due(limit=1, lease=60, max_age=0)
        attempt = Attempt(sms_id, time.time(), 0.1, Outcome.DROPPED, 404, "NO_OPERATION",
                          body="NO_OPERATION\x1b]2;upstream\x07")  # fmt: skip
        await outbox.record([AttemptRecord(attempt, None)])
    finally:
        await outbox.close()
    assert claimed.sms_id == sms_id

    listed = cli("messages", "list", "-c", cfg)
    shown = cli("messages", "show", str(sms_id), "-c", cfg)
    status = cli("status", "-c", cfg)
    for result, lines in ((listed, 2), (shown, 19), (status, 7)):
        assert result.returncode == 0, result.stderr
        out = result.stdout
        assert not [c for c in out if c in "\x1b\x07\r\u202e\u2066"], out
        assert len(out.splitlines()) == lines, out
    assert "\\x1b]0;pwned\\x07\\x1b[2J\\nsmsId" in listed.stdout
    assert "Bank\\x1b[1A\\r\\u2066" in status.stdout
    assert "NO_OPERATION\\x1b]2;upstream\\x07" in shown.stdout
    # --json stays exact.
    exact = json.loads(cli("messages", "show", str(sms_id), "--json", "-c", cfg).stdout)
    assert (exact["text"], exact["phone_from"]) == (HOSTILE_TEXT, HOSTILE_SENDER)


async def test_list_held_messages_with_why_they_are_held(tmp_path: Path) -> None:
    cfg = str(write_config(tmp_path, "http://127.0.0.1:9/v1/PUSH_SMS"))
    outbox = await Outbox.open(str(tmp_path / "outbox.sqlite3"))
    try:
        now = time.time()
        await outbox.accept(
            [
                Incoming("modem", "", "Bank", "code 1", now, "m-1", hold=Hold.NO_PHONE),
                Incoming("modem", "79001234567", "Shop", "", now, "m-2", hold=Hold.UNDECODABLE),
                Incoming("modem", "79001234567", "Shop", "queued one", now, "m-3"),
            ]
        )
    finally:
        await outbox.close()
    held = cli("messages", "list", "--state", "held", "-c", cfg)
    assert held.returncode == 0, held.stderr
    rows = held.stdout.splitlines()[1:]
    assert [(r.split()[0], r.split()[1]) for r in rows] == [("2", "held"), ("1", "held")]
    assert "undecodable" in rows[0]
    assert "no_phone" in rows[1]
    as_json = json.loads(cli("messages", "list", "--state", "held", "--json", "-c", cfg).stdout)
    assert [(m["sms_id"], m["hold_reason"]) for m in as_json] == [
        (2, "undecodable"),
        (1, "no_phone"),
    ]


def test_show_of_an_unknown_id_exits_1(tmp_path: Path) -> None:
    cfg = str(write_config(tmp_path, "http://127.0.0.1:9/v1/PUSH_SMS"))
    cli("migrate", "-c", cfg)
    result = cli("messages", "show", "99", "-c", cfg)
    assert result.returncode == 1
    assert "no message with smsId 99" in result.stderr


def test_retry_needs_ids_or_a_state(tmp_path: Path) -> None:
    cfg = str(write_config(tmp_path, "http://127.0.0.1:9/v1/PUSH_SMS"))
    result = cli("messages", "retry", "-c", cfg)
    assert result.returncode == 2
    bad_since = cli("messages", "retry", "--state", "dropped", "--since", "soon", "-c", cfg)
    assert bad_since.returncode == 2
    assert "--since" in bad_since.stderr


def test_migrate_creates_the_store_and_is_idempotent(tmp_path: Path) -> None:
    cfg = str(write_config(tmp_path, "http://127.0.0.1:9/v1/PUSH_SMS"))
    assert cli("migrate", "-c", cfg).returncode == 0
    assert (tmp_path / "outbox.sqlite3").exists()
    assert cli("migrate", "-c", cfg).returncode == 0


def test_config_path_comes_from_the_environment(tmp_path: Path) -> None:
    cfg = str(write_config(tmp_path, "http://127.0.0.1:9/v1/PUSH_SMS"))
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "check-config"],
        capture_output=True,
        text=True,
        env={**os.environ, "SMS_GATEWAY_CONFIG": cfg},
        timeout=30,
    )
    assert result.returncode == 0
    assert INGEST_TOKEN not in result.stdout
    assert 'ingest_token = "********"' in result.stdout


async def test_a_second_daemon_on_the_same_store_refuses_to_start(
    daemon: DaemonProcess,
) -> None:
    second = subprocess.run(
        [sys.executable, "-m", "gateway", "run", "-c", str(daemon.config_path)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert second.returncode == 1
    assert "another sms-gateway daemon is running on this store" in second.stderr


async def test_watchdog_pings_when_systemd_asks_for_them(tmp_path: Path, standin: StandIn) -> None:
    d = DaemonProcess(write_config(tmp_path, standin.url), env={"WATCHDOG_USEC": "200000"})
    await d.start()
    try:
        await d.wait_notification("WATCHDOG=1", timeout=5)
        assert any("STATUS=" in n and "queued" in n for n in d.notifications)
    finally:
        assert await d.stop() == 0
