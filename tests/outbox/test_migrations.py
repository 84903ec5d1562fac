"""Schema migrations: numbered SQL files, each applied whole or not at all, and recorded."""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.errors import StoreError, StoreTooNew
from gateway.outbox import Outbox, migrate
from gateway.outbox.migrate import Migration, applied_version, apply_pending, available

BROKEN_SQL = (
    "CREATE TABLE half_done (x INTEGER);\nINSERT INTO half_done VALUES (1);\nNOT SQL AT ALL;"
)


@pytest.fixture
def conn(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    c = sqlite3.connect(str(tmp_path / "migrated.sqlite3"), isolation_level=None)
    yield c
    c.close()


def _normalise(sql: str | None) -> str | None:
    return None if sql is None else re.sub(r"\s+", " ", sql).strip()


def schema(c: sqlite3.Connection) -> list[tuple[str, str, str, str | None]]:
    """Tables and indexes (not SQLite's own, nor the migration log), SQL whitespace-normalised."""
    cur = c.execute(
        "SELECT type, name, tbl_name, sql FROM sqlite_master"
        " WHERE type IN ('table', 'index') AND name NOT LIKE 'sqlite_%'"
        " AND name != 'schema_migrations' ORDER BY type, name"
    )
    return [(t, n, tbl, _normalise(sql)) for t, n, tbl, sql in cur.fetchall()]


def recorded(c: sqlite3.Connection) -> list[tuple[int, str]]:
    cur = c.execute("SELECT version, name FROM schema_migrations ORDER BY version")
    return [(int(v), str(n)) for v, n in cur.fetchall()]


def test_migration_files_are_numbered_one_to_n() -> None:
    found = available()
    assert found, "no migrations found"
    assert [m.version for m in found] == list(range(1, len(found) + 1))
    for m in found:
        assert re.fullmatch(r"\d{4}_[a-z0-9_]+", m.name)
        assert int(m.name[:4]) == m.version
        assert m.sql.strip()
    assert found[0].name == "0001_outbox"


def test_one_by_one_gives_the_same_schema_as_all_at_once(
    conn: sqlite3.Connection, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    every = available()
    for n in range(1, len(every) + 1):
        monkeypatch.setattr(migrate, "available", lambda n=n: every[:n])
        assert apply_pending(conn) == [every[n - 1].name]
        assert applied_version(conn) == n
    monkeypatch.undo()

    fresh = sqlite3.connect(str(tmp_path / "fresh.sqlite3"), isolation_level=None)
    try:
        fresh.executescript("\n;\n".join(m.sql for m in every))
        expected = schema(fresh)
    finally:
        fresh.close()

    assert schema(conn) == expected
    names = {name for _, name, _, _ in expected}
    assert {"messages", "attempts", "id_sequence", "messages_due"} <= names


def test_apply_pending_records_every_migration(conn: sqlite3.Connection) -> None:
    every = available()
    assert applied_version(conn) == 0

    assert apply_pending(conn) == [m.name for m in every]

    assert applied_version(conn) == len(every)
    assert recorded(conn) == [(m.version, m.name) for m in every]
    assert not conn.in_transaction


def test_running_apply_pending_again_changes_nothing(conn: sqlite3.Connection) -> None:
    apply_pending(conn)
    before = (schema(conn), recorded(conn), applied_version(conn))
    stamps = conn.execute("SELECT applied_at FROM schema_migrations").fetchall()

    assert apply_pending(conn) == []
    assert apply_pending(conn) == []

    assert (schema(conn), recorded(conn), applied_version(conn)) == before
    assert conn.execute("SELECT applied_at FROM schema_migrations").fetchall() == stamps


def test_the_first_migration_seeds_the_id_sequence(conn: sqlite3.Connection) -> None:
    apply_pending(conn)
    assert conn.execute("SELECT only_row, last_seq FROM id_sequence").fetchall() == [(1, 0)]


def test_a_failing_migration_leaves_nothing_half_applied(
    conn: sqlite3.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    every = available()
    apply_pending(conn)
    before = (schema(conn), recorded(conn))
    broken = Migration(len(every) + 1, f"{len(every) + 1:04d}_broken", BROKEN_SQL)
    monkeypatch.setattr(migrate, "available", lambda: [*every, broken])

    with pytest.raises(sqlite3.OperationalError):
        apply_pending(conn)

    assert not conn.in_transaction
    assert applied_version(conn) == len(every)
    assert (schema(conn), recorded(conn)) == before
    assert conn.execute("SELECT name FROM sqlite_master WHERE name = 'half_done'").fetchall() == []


def test_a_failing_first_migration_leaves_an_empty_database(
    conn: sqlite3.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(migrate, "available", lambda: [Migration(1, "0001_broken", BROKEN_SQL)])
    with pytest.raises(sqlite3.OperationalError):
        apply_pending(conn)
    assert applied_version(conn) == 0
    assert conn.execute("SELECT name FROM sqlite_master").fetchall() == []


def test_a_migration_can_be_applied_after_an_earlier_attempt_failed(
    conn: sqlite3.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    every = available()
    apply_pending(conn)
    n = len(every) + 1
    monkeypatch.setattr(
        migrate, "available", lambda: [*every, Migration(n, f"{n:04d}_extra", BROKEN_SQL)]
    )
    with pytest.raises(sqlite3.OperationalError):
        apply_pending(conn)

    fixed = Migration(n, f"{n:04d}_extra", "CREATE TABLE extra (x INTEGER);")
    monkeypatch.setattr(migrate, "available", lambda: [*every, fixed])
    assert apply_pending(conn) == [fixed.name]
    assert applied_version(conn) == n
    assert (recorded(conn))[-1] == (n, fixed.name)


def test_a_database_newer_than_the_known_migrations_is_refused(
    conn: sqlite3.Connection,
) -> None:
    apply_pending(conn)
    newer = len(available()) + 1
    conn.execute(f"PRAGMA user_version = {newer}")
    with pytest.raises(StoreTooNew, match=f"schema version {newer} but this gateway knows only"):
        apply_pending(conn)
    assert applied_version(conn) == newer


async def test_opening_the_store_with_a_broken_migration_is_a_store_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(migrate, "available", lambda: [Migration(1, "0001_broken", BROKEN_SQL)])
    path = tmp_path / "outbox.sqlite3"
    with pytest.raises(StoreError, match="cannot open the store"):
        await Outbox.open(str(path))
    with sqlite3.connect(path) as c:
        assert c.execute("PRAGMA user_version").fetchone() == (0,)
        assert c.execute("SELECT COUNT(*) FROM sqlite_master").fetchone() == (0,)


async def test_migration_files_with_a_gap_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "0001_a.sql").write_text("CREATE TABLE a (x);", encoding="utf-8")
    (tmp_path / "0003_c.sql").write_text("CREATE TABLE c (x);", encoding="utf-8")
    monkeypatch.setattr(migrate, "migrations_dir", lambda: tmp_path)
    with pytest.raises(StoreError, match=r"numbered 1\.\.n without gaps, found \[1, 3\]"):
        available()


async def test_a_badly_named_migration_file_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "1_first.sql").write_text("CREATE TABLE a (x);", encoding="utf-8")
    monkeypatch.setattr(migrate, "migrations_dir", lambda: tmp_path)
    with pytest.raises(StoreError, match=r"NNNN_what\.sql"):
        available()


async def test_migration_3_moves_waiting_messages_expiry_to_their_acceptance(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = str(tmp_path / "outbox.sqlite3")
    every = available()
    monkeypatch.setattr(migrate, "available", lambda: every[:2])
    old = await Outbox.open(path, clock=lambda: 2_000.0)
    await old.close()
    with sqlite3.connect(path) as c:  # as version 2 stored it: expiry from the network's time
        c.execute(
            "INSERT INTO messages (sms_id, source, phone, phone_from, text, received_at,"
            " expiry_base, accepted_at, state, due_at) VALUES"
            " (1, 'http', '79001234567', 'X', 'queued', 10, 10, 2000, 'queued', 2000),"
            " (2, 'http', '79001234567', 'X', 'retried', 10, 3000, 2000, 'queued', 3000),"
            " (3, 'http', '79001234567', 'X', 'done', 10, 10, 2000, 'delivered', 2000)"
        )
    monkeypatch.undo()
    outbox = await Outbox.open(path, clock=lambda: 2_000.0)
    await outbox.close()
    with sqlite3.connect(path) as c:
        rows = c.execute("SELECT sms_id, expiry_base FROM messages ORDER BY sms_id").fetchall()
    assert rows == [(1, 2000.0), (2, 3000.0), (3, 10.0)]
