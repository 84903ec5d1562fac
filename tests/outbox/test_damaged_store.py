"""A damaged, lost or unreadable store, as an operator meets it: every command says so and exits.

Real subprocesses (`python -m gateway ...`) on real files, each under a timeout: a command that
prints the right error and then hangs (a connection's thread left running) fails here.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.errors import StoreError
from gateway.outbox import Incoming, Outbox
from gateway.outbox.idmark import BLOCK
from tests.fakes.daemon import write_config

PROMPTLY = 20  # seconds; a hang is a failure, not a slow pass
COMMANDS = {
    "run": ["run"],
    "status": ["status"],
    "messages": ["messages", "list"],
    "migrate": ["migrate"],
    "ingest": ["ingest", "--phone", "79001234567", "--from", "X", "--text", "t"],
}


def cli(*args: str, user: int | None = None) -> subprocess.CompletedProcess[str]:
    prefix = (
        [] if user is None else ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups"]
    )
    return subprocess.run(
        [*prefix, sys.executable, "-m", "gateway", *args],
        capture_output=True,
        text=True,
        timeout=PROMPTLY,
    )


def ingest(cfg: Path) -> subprocess.CompletedProcess[str]:
    return cli(*COMMANDS["ingest"], "-c", str(cfg))


@pytest.fixture
def cfg(tmp_path: Path) -> Path:
    return write_config(tmp_path, "http://127.0.0.1:9/v1/PUSH_SMS")


@pytest.mark.parametrize("command", list(COMMANDS))
def test_a_store_of_random_bytes_makes_every_command_exit_1_promptly(
    cfg: Path, tmp_path: Path, command: str
) -> None:
    store = tmp_path / "outbox.sqlite3"
    store.write_bytes(os.urandom(64 * 1024))
    result = cli(*COMMANDS[command], "-c", str(cfg))
    assert result.returncode == 1, result
    assert f"{store}: cannot open the store: file is not a database" in result.stderr
    assert "Traceback" not in result.stderr
    assert store.stat().st_size == 64 * 1024  # left as it was, for a person to look at


@pytest.mark.parametrize("command", ["status", "migrate", "ingest"])
def test_a_store_truncated_mid_page_makes_the_command_exit_1_promptly(
    cfg: Path, tmp_path: Path, command: str
) -> None:
    for _ in range(3):
        assert ingest(cfg).returncode == 0
    store = tmp_path / "outbox.sqlite3"
    with open(store, "r+b") as f:
        f.truncate(4096 + 1000)  # the first page whole, the second cut
    result = cli(*COMMANDS[command], "-c", str(cfg))
    assert result.returncode == 1, result
    assert f"{store}: " in result.stderr
    assert "Traceback" not in result.stderr


# -- a lost store never restarts smsIds ------------------------------------------------------


def lose(store: Path, how: str) -> None:
    if how == "truncated":
        os.truncate(store, 0)
    else:
        store.unlink()


@pytest.mark.parametrize("how", ["truncated", "removed"])
@pytest.mark.parametrize("command", ["ingest", "run", "migrate", "status"])
def test_a_lost_store_is_refused_naming_the_path_and_the_way_out(
    cfg: Path, tmp_path: Path, how: str, command: str
) -> None:
    store = tmp_path / "outbox.sqlite3"
    assert ingest(cfg).stdout.strip() == "1"
    lose(store, how)
    result = cli(*COMMANDS[command], "-c", str(cfg))
    assert result.returncode == 1, result
    assert f"{store}: the store is {'empty' if how == 'truncated' else 'missing'}" in result.stderr
    assert "sms-gateway migrate --new-store" in result.stderr
    assert (store.stat().st_size == 0) if how == "truncated" else not store.exists()


@pytest.mark.parametrize("how", ["truncated", "removed"])
def test_a_new_store_after_a_lost_one_continues_above_every_id_handed_out(
    cfg: Path, tmp_path: Path, how: str
) -> None:
    store = tmp_path / "outbox.sqlite3"
    assert [ingest(cfg).stdout.strip() for _ in range(2)] == ["1", "2"]
    lose(store, how)
    made = cli("migrate", "--new-store", "-c", str(cfg))
    assert made.returncode == 0, made.stderr
    assert "store.created" in made.stderr  # loud: a warning naming the path and first id
    assert str(store) in made.stderr
    after = int(ingest(cfg).stdout)
    assert after > 2
    assert after == BLOCK + 1  # above the whole block the mark had reserved
    again = cli("migrate", "--new-store", "-c", str(cfg))
    assert again.returncode == 1
    assert "a store is there, left alone" in again.stderr


def test_a_first_store_is_created_loudly_and_a_restart_keeps_the_sequence(
    cfg: Path, tmp_path: Path
) -> None:
    first = ingest(cfg)
    assert first.stdout.strip() == "1"
    assert "store.created" in first.stderr and "first_sms_id=1" in first.stderr
    second = ingest(cfg)
    assert second.stdout.strip() == "2"  # reopening an existing store keeps its own sequence
    assert "store.created" not in second.stderr
    mark = json.loads((tmp_path / "outbox.sqlite3.ids").read_text())
    assert mark == {"max_id": BLOCK, "node": 0, "nodes": 1}  # a block reserved at creation


async def test_ids_past_the_mark_write_it_before_they_are_handed_out(tmp_path: Path) -> None:
    path = str(tmp_path / "outbox.sqlite3")
    outbox = await Outbox.open(path)
    try:
        item = Incoming("http", "79001234567", "X", "t", 0.0)
        await outbox.accept([item] * (BLOCK + 5))
        mark = json.loads(Path(f"{path}.ids").read_text())
        assert mark["max_id"] >= BLOCK + 5
    finally:
        await outbox.close()


async def test_an_old_backup_put_back_continues_above_the_mark(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite3"
    item = Incoming("http", "79001234567", "X", "t", 0.0)
    outbox = await Outbox.open(str(path))
    await outbox.accept([item])
    await outbox.close()
    shutil.copy(path, tmp_path / "backup.sqlite3")
    outbox = await Outbox.open(str(path))
    await outbox.accept([item] * (BLOCK + 5))  # moves the mark past the backup's last id
    await outbox.close()
    shutil.copy(tmp_path / "backup.sqlite3", path)
    outbox = await Outbox.open(str(path))
    try:
        (accepted,) = await outbox.accept([item])
        assert accepted.sms_id > BLOCK + 6
    finally:
        await outbox.close()


async def test_new_ids_settings_continue_above_the_mark(tmp_path: Path) -> None:
    path = str(tmp_path / "outbox.sqlite3")
    item = Incoming("http", "79001234567", "X", "t", 0.0)
    outbox = await Outbox.open(path)
    await outbox.accept([item] * 3)
    await outbox.close()
    outbox = await Outbox.open(path, node=1, nodes=4)
    try:
        (accepted,) = await outbox.accept([item])
        assert accepted.sms_id > BLOCK
        assert accepted.sms_id % 4 == 1
    finally:
        await outbox.close()


async def test_a_damaged_mark_file_is_an_error_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite3"
    await (await Outbox.open(str(path))).close()
    Path(f"{path}.ids").write_text("garbage")
    with pytest.raises(StoreError, match=r"outbox\.sqlite3\.ids: the smsId mark file is damaged"):
        await Outbox.open(str(path))


# -- modes and readers -------------------------------------------------------------------------


async def test_store_wal_shm_and_mark_are_private_whatever_the_umask(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite3"
    old = os.umask(0)
    try:
        outbox = await Outbox.open(str(path))
        await outbox.accept([Incoming("http", "79001234567", "X", "t", 0.0)])
        modes = {
            p.name: stat.S_IMODE(p.stat().st_mode)
            for p in tmp_path.iterdir()
            if p.name.startswith("outbox")
        }
        await outbox.close()
    finally:
        os.umask(old)
    assert modes == {
        "outbox.sqlite3": 0o600,
        "outbox.sqlite3-wal": 0o600,
        "outbox.sqlite3-shm": 0o600,
        "outbox.sqlite3.ids": 0o600,
    }


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory another user can enter (pytest's own tmp_path is root-only)."""
    d = Path(tempfile.mkdtemp(prefix="sms-gateway-ro-"))
    d.chmod(0o755)
    yield d
    shutil.rmtree(d)


NOBODY = 65534
needs_root = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("setpriv") is None, reason="needs root and setpriv"
)


@needs_root
async def test_status_by_a_user_who_may_only_read_the_store(shared_dir: Path) -> None:
    cfg = write_config(shared_dir, "http://127.0.0.1:9/v1/PUSH_SMS")
    cfg.chmod(0o644)
    assert ingest(cfg).returncode == 0
    store = shared_dir / "outbox.sqlite3"
    store.chmod(0o640)
    os.chown(store, 0, NOBODY)  # the readers' group

    # With nobody holding the store open there is no -shm to read: said clearly, exit 1.
    cold = await asyncio.to_thread(cli, "status", "-c", str(cfg), user=NOBODY)
    assert cold.returncode == 1
    assert "a reader of a WAL store needs its -shm and -wal files" in cold.stderr
    assert "Traceback" not in cold.stderr

    # While the daemon (here: an open Outbox) runs, -wal and -shm exist with the store's mode.
    outbox = await Outbox.open(str(store))
    try:
        os.chown(f"{store}-shm", 0, NOBODY)
        os.chown(f"{store}-wal", 0, NOBODY)
        warm = await asyncio.to_thread(cli, "status", "--json", "-c", str(cfg), user=NOBODY)
        assert warm.returncode == 0, warm.stderr
        assert json.loads(warm.stdout)["messages"]["queued"] == 1
    finally:
        await outbox.close()
