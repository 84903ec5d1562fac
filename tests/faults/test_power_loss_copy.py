"""The store files as a crash would leave them, taken mid-load: they open and hold every 201."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gateway.outbox import Outbox
from gateway.play.standin import Answer, StandIn
from tests.fakes.daemon import DaemonProcess

SNAPSHOTS = 6


class Loader:
    def __init__(self, daemon: DaemonProcess) -> None:
        self.daemon = daemon
        self.acknowledged: set[int] = set()
        self.statuses: list[int] = []

    async def run(self) -> None:
        n = 0
        while True:
            batch = [
                {"phone": "79001234567", "phoneFrom": "Load", "text": f"m{n}-{i}"}
                for i in range(20)
            ]
            status, answers = await self.daemon.post_sms(batch)
            self.statuses.append(status)
            if status == 201:
                self.acknowledged.update(a["smsId"] for a in answers)
            n += 1


def snapshot(store: Path, into: Path) -> Path:
    """Copy the database, -wal and -shm as they are at one instant (the daemon is stopped)."""
    into.mkdir()
    copy = into / store.name
    for suffix in ("", "-wal", "-shm"):
        source = Path(f"{store}{suffix}")
        if source.exists():
            shutil.copyfile(source, f"{copy}{suffix}")
    return copy


async def test_crash_copies_taken_mid_load_open_and_hold_every_acknowledged_message(
    daemon_factory: Callable[..., Any], standin: StandIn, tmp_path: Path
) -> None:
    standin.default = Answer(delay=0.02)
    daemon: DaemonProcess = await daemon_factory(upstream={"retry_interval": 0.2, "timeout": 1.0})
    store = daemon.dir / "outbox.sqlite3"
    loader = Loader(daemon)
    task = asyncio.create_task(loader.run())
    copies: list[tuple[Path, set[int]]] = []
    try:
        for k in range(SNAPSHOTS):
            floor = len(loader.acknowledged) + 100
            await standin.wait_for(lambda s, floor=floor: len(loader.acknowledged) >= floor, 15)
            before = set(loader.acknowledged)
            # SIGSTOP freezes the daemon between two system calls: the files are exactly what
            # kill -9 at that instant would leave (every committed write is in the page cache).
            daemon.signal(signal.SIGSTOP)
            try:
                copies.append((snapshot(store, tmp_path / f"crash-{k}"), before))
            finally:
                daemon.signal(signal.SIGCONT)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert set(loader.statuses) == {201}
    assert standin.delivered_count > 0  # delivery was writing too while we copied

    for copy, acknowledged in copies:
        outbox = await Outbox.open(str(copy), create=False, migrate=False)
        try:
            held = {m.sms_id for m in await outbox.list_messages(limit=1_000_000)}
        finally:
            await outbox.close()
        missing = acknowledged - held
        assert missing == set(), f"{copy}: {len(missing)} acknowledged messages missing"
    assert await daemon.stop() == 0
