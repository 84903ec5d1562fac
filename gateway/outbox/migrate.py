"""Apply the numbered SQL files in migrations/, each in one transaction, and record them."""

from __future__ import annotations

import re
import sqlite3
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import structlog

from gateway.errors import StoreError, StoreTooNew

log = structlog.get_logger(__name__)
_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def migrations_dir() -> Path:
    """Installed wheels carry the files inside the package; a checkout has them at the top."""
    packaged = Path(str(resources.files("gateway"))) / "_migrations"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[2] / "migrations"


def available() -> list[Migration]:
    found = []
    for path in sorted(migrations_dir().glob("*.sql")):
        m = _NAME.match(path.name)
        if not m:
            raise StoreError(f"{path}: migration files are named NNNN_what.sql")
        found.append(Migration(int(m.group(1)), path.stem, path.read_text(encoding="utf-8")))
    versions = [m.version for m in found]
    if versions != list(range(1, len(found) + 1)):
        raise StoreError(f"migrations must be numbered 1..n without gaps, found {versions}")
    return found


# These run on the store's thread (StoreConnection.call), with the plain connection.


def applied_version(conn: sqlite3.Connection) -> int:
    row = conn.execute("PRAGMA user_version").fetchone()
    return int(row[0]) if row else 0


def require_current(conn: sqlite3.Connection) -> None:
    """For readers that must not migrate: the schema must be exactly the one we know."""
    known = len(available())
    current = applied_version(conn)
    if current > known:
        raise StoreTooNew(
            f"the store is at schema version {current} but this gateway knows only {known}; "
            "use the newer gateway version"
        )
    if current < known:
        raise StoreError(
            f"the store is at schema version {current}, this gateway needs {known}; "
            "run `sms-gateway migrate` (or start the daemon) first"
        )


def apply_pending(conn: sqlite3.Connection) -> list[str]:
    """Bring the schema up to date; refuse a database written by a newer version."""
    todo = available()
    current = applied_version(conn)
    if current > len(todo):
        raise StoreTooNew(
            f"the store is at schema version {current} but this gateway knows only "
            f"{len(todo)}; run the newer gateway version or restore a backup"
        )
    done = []
    for m in todo[current:]:
        script = (
            "BEGIN IMMEDIATE;\n"  # noqa: S608 - our own migration files, not input
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at REAL NOT NULL);\n"
            f"{m.sql}\n;"
            f"INSERT INTO schema_migrations VALUES ({m.version}, '{m.name}', {time.time()!r});\n"
            f"PRAGMA user_version = {m.version};\n"
            "COMMIT;"
        )
        try:
            conn.executescript(script)
        except Exception:
            if conn.in_transaction:
                conn.rollback()
            raise
        log.info("store.migration_applied", version=m.version, name=m.name)
        done.append(m.name)
    return done
