"""Disk full during ingest (RLIMIT_FSIZE on the running daemon): 503, never a false 201."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from gateway.outbox import Outbox
from gateway.play.standin import StandIn
from tests.fakes.daemon import DaemonProcess

PRLIMIT = shutil.which("prlimit")
BIG_TEXT = 60_000  # characters: each message adds ~15 pages to the WAL
HEADROOM = 1_500_000  # bytes above the biggest file the daemon writes


def files_of(store: Path, log: Path) -> list[Path]:
    return [store, Path(f"{store}-wal"), Path(f"{store}-shm"), log]


def set_fsize(pid: int, soft: int | str) -> None:
    assert PRLIMIT is not None
    subprocess.run([PRLIMIT, f"--pid={pid}", f"--fsize={soft}:unlimited"], check=True)


@pytest.mark.skipif(PRLIMIT is None, reason="prlimit (util-linux) is not installed")
async def test_full_disk_refuses_with_503_and_recovers_by_itself(
    daemon_factory: Callable[..., Any], standin: StandIn
) -> None:
    daemon: DaemonProcess = await daemon_factory(upstream={"retry_interval": 0.2, "timeout": 1.0})
    assert daemon.proc is not None
    pid = daemon.proc.pid
    store = daemon.dir / "outbox.sqlite3"
    _, first = await daemon.post_sms({"phone": "79001234567", "phoneFrom": "S", "text": "warm-up"})
    await standin.wait_for(lambda s: first["smsId"] in s.delivered_ids(), timeout=10)

    biggest = max(p.stat().st_size for p in files_of(store, daemon.stderr_path) if p.exists())
    set_fsize(pid, biggest + HEADROOM)
    taken: dict[str, int] = {"warm-up": first["smsId"]}
    refused: list[str] = []
    statuses: list[int] = []
    for n in range(120):
        text = f"{n:04d} " + "x" * BIG_TEXT
        status, body = await daemon.post_sms(
            {"phone": "79001234567", "phoneFrom": "S", "text": text}
        )
        statuses.append(status)
        if status == 201:
            taken[text] = body["smsId"]
        elif status == 503:
            refused.append(text)
            if len(refused) >= 3:
                break
        else:
            pytest.fail(f"ingest answered {status} {body!r} on a full disk")
    assert set(statuses) == {201, 503}, statuses  # some fit, then the disk was full
    assert statuses.index(503) > 0
    assert daemon.proc.poll() is None, "the daemon died of a full disk"

    set_fsize(pid, "unlimited")
    async with asyncio.timeout(20):
        while True:  # nobody restarts it: ingest must come back by itself
            status, body = await daemon.post_sms(
                {"phone": "79001234567", "phoneFrom": "S", "text": "after the disk was freed"}
            )
            if status == 201:
                taken["after the disk was freed"] = body["smsId"]
                break
            assert status == 503, (status, body)
            await asyncio.sleep(0.2)

    wanted = set(taken.values())
    await standin.wait_for(lambda s: s.delivered_ids() >= wanted, timeout=30)
    outbox = await Outbox.open(str(store), create=False, migrate=False)
    try:
        for text, sms_id in taken.items():
            message = await outbox.get_message(sms_id)
            assert message is not None and message.text == text
        stored_texts = {m.text for m in await outbox.list_messages(limit=100_000)}
    finally:
        await outbox.close()
    # "Nothing was taken": a 503-refused message is neither stored nor pushed.
    pushed_texts = {p.body["text"] for p in standin.pushes if p.body}
    for text in refused:
        assert text not in stored_texts
        assert text not in pushed_texts
    assert await daemon.stop() == 0
