"""The outbox, the only code that runs SQL; a message is committed before its source is answered.

Its fixed statements are named blocks of queries.sql (loaded by gateway/outbox/queries.py);
what stays written here is SQL shaped by each call (the multi-row INSERT, the dedup and smsId
lists, optional filters) and the connection PRAGMAs, each listed with why in queries.py.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import structlog

from gateway.errors import StoreError, StoreUnavailable
from gateway.outbox import migrate as migrations
from gateway.outbox import parts
from gateway.outbox.connection import StoreConnection
from gateway.outbox.idmark import BLOCK, IdMark
from gateway.outbox.models import (
    Accepted,
    Attempt,
    AttemptRecord,
    Drop,
    Hold,
    Incoming,
    Message,
    Outcome,
    Part,
    PartResult,
    State,
    StoreSummary,
)
from gateway.outbox.queries import query
from gateway.outbox.writer import GroupWriter

log = structlog.get_logger(__name__)
Clock = Callable[[], float]
T = TypeVar("T")
BODY_LIMIT = 4096
# For list_messages, whose filter is built per call; claim_due and get_message return the same
# columns (tests/outbox/test_queries.py holds them to it), all read by _message().
_MESSAGE_COLUMNS = (
    "sms_id, source, source_ref, phone, phone_from, text, received_at, accepted_at, "
    "state, due_at, attempts, finished_at, final_code, hold_reason, raw, partial,"
    " activation_id, rent_service"
)
_CHUNK = 400  # pairs per dedup lookup, well below SQLite's variable limit
_INSERT_COLUMNS = (
    "sms_id, source, source_ref, phone, phone_from, text, received_at, expiry_base,"
    " accepted_at, state, due_at, hold_reason, raw, partial, activation_id, rent_service"
)
_COLUMNS = 16
_INSERT_ROWS = 64  # rows per INSERT at most (64 * 16 variables); chunks of 64, 32, ..., 1
_LAST_SMS_SEQ = query("last_sms_seq")
_SET_SMS_SEQ = query("set_sms_seq")
_ALLOCATE_SMS_SEQS = query("allocate_sms_seqs")
_TOUCH_SMS_SEQ = query("touch_sms_seq")
_RELEASE_HELD = query("release_held")
_CLAIM_DUE = query("claim_due")
_INSERT_ATTEMPT = query("insert_attempt")
_RECORD_DECISION = query("record_decision")
_RELEASE_LEASE = query("release_lease")
_RELEASE_STALE_LEASES = query("release_stale_leases")
_EXPIRE_OLD = query("expire_old")
_PURGE_FINISHED = query("purge_finished")
_PURGE_HELD = query("purge_held")
_PURGE_JOINED_PARTS = query("purge_joined_parts")
_NEXT_DUE_AT = query("next_due_at")
_COUNT_BY_STATE = query("count_by_state")
_LAST_DELIVERED_AT = query("last_delivered_at")
_QUEUED_COUNT = query("queued_count")
_OLDEST_QUEUED_RECEIVED_AT = query("oldest_queued_received_at")
_RECENT_DROPS = query("recent_drops")
_GET_MESSAGE = query("get_message")
_ATTEMPTS_FOR = query("attempts_for")
# Decides, for each message a multi-part join makes, whether and where it is pushed (Intake's
# activation rule, from a snapshot: it runs on the store's thread).
Route = Callable[[Incoming], Incoming]
# The same for a held message given its phone by hand (`give_phone`): the message as it would
# be committed with that phone, and when it was accepted (the moment the rule looks at).
PhoneRoute = Callable[[Incoming, float], Incoming]
_IDS_PER_STATEMENT = 500  # smsIds in one `IN (...)` list, well below SQLite's variable limit


@dataclasses.dataclass(frozen=True)
class PhoneGiven:
    """What `Outbox.give_phone` did with each smsId it was given, by smsId in order."""

    # Held `no_phone` before; as they are now: with the phone, queued or held `no_activation`.
    released: dict[int, Message]
    # Left as they are: not held `no_phone` (the message as it is), or no such message (None).
    left: dict[int, Message | None]


def _prepare(conn: sqlite3.Connection, busy_timeout_ms: int, *, readonly: bool) -> None:
    """Connection settings and an integrity check; on the store's thread."""
    conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
    if not readonly:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = FULL")
    conn.execute("PRAGMA foreign_keys = ON")


def _quick_check(conn: sqlite3.Connection, path: str) -> None:
    row = conn.execute("PRAGMA quick_check").fetchone()
    if not row or row[0] != "ok":
        raise StoreError(f"{path}: integrity check failed: {row[0] if row else '?'}")


def _file_size(path: str) -> int | None:
    try:
        return os.stat(path).st_size
    except FileNotFoundError:
        return None


def _create_private(path: str) -> None:
    """Create the store file 0600 whatever the umask; SQLite gives its -wal and -shm the mode
    of the database file."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        os.fchmod(fd, 0o600)
    finally:
        os.close(fd)


def _set_aside_lost(path: str) -> None:
    """Before a new store replaces a lost (missing or empty) one: an empty file goes, and a WAL
    left from the old store is renamed aside (never replayed onto the new one) for a person."""
    if _file_size(path) == 0:
        os.unlink(path)
    for suffix in ("-wal", "-shm"):
        old = f"{path}{suffix}"
        if _file_size(old) is None:
            continue
        if suffix == "-wal" and _file_size(old):
            aside = f"{old}.lost-{int(time.time())}"
            os.replace(old, aside)
            log.warning("store.wal_set_aside", path=old, kept_as=aside)
        else:
            os.unlink(old)


class Outbox:
    """Durable queue of SMS awaiting PUSH_SMS, with their attempt history."""

    def __init__(
        self,
        path: str,
        writer_conn: StoreConnection | None,
        reader_conn: StoreConnection,
        *,
        node: int,
        nodes: int,
        clock: Clock,
        mark: IdMark,
    ) -> None:
        self.path = path
        self._conn = writer_conn
        self._reader = reader_conn
        self._node = node
        self._nodes = nodes
        self._clock = clock
        self._mark = mark
        self._writer = GroupWriter(writer_conn) if writer_conn is not None else None
        self._accepted_listeners: list[Callable[[], None]] = []

    @classmethod
    async def open(
        cls,
        path: str,
        *,
        node: int = 0,
        nodes: int = 1,
        clock: Clock = time.time,
        create: bool = True,
        migrate: bool = True,
        readonly: bool = False,
        new_store: bool = False,
        busy_timeout_ms: int = 5000,
    ) -> Outbox:
        """Open (and migrate) the store; `create=False` refuses a path that does not exist.

        `migrate=False` only checks the schema is the one this code knows; `readonly` opens
        for reading alone (no write connection, nothing created, the file opened read-only).
        A store that is missing or empty while its smsId mark file exists was lost: refused,
        unless `new_store` (`migrate --new-store`) asks for a new one above the mark's ids.
        """
        parent = Path(path).parent
        if not parent.is_dir():
            raise StoreError(f"{parent}: directory does not exist; create it or fix store.path")
        mark = IdMark.beside(path, read=not readonly)
        size = _file_size(path)
        lost = mark.exists and not size
        if lost and not new_store:
            state = "missing" if size is None else "empty (0 bytes)"
            raise StoreError(
                f"{path}: the store is {state}, but {mark.path} shows one existed"
                + (f" (smsIds up to {mark.max_id} may have been handed out)" if mark.max_id else "")
                + ". Restore the store file (a backup),"
                " or start an empty store whose smsIds continue above those with"
                " `sms-gateway migrate --new-store`"
            )
        if new_store and not lost:
            raise StoreError(
                f"{path}: --new-store replaces only a lost store (missing or empty, with its"
                f" {mark.path} beside it); "
                + ("a store is there, left alone" if size else "there is none: run `migrate`")
            )
        if size is None and (not create or readonly):
            raise StoreError(f"{path}: no store there (has the daemon or `migrate` run?)")
        creating = not size
        try:
            if new_store:
                _set_aside_lost(path)
            if size is None or new_store:
                _create_private(path)
        except OSError as e:
            raise StoreError(f"{path}: cannot create the store: {e.strerror}") from e

        def setup(conn: sqlite3.Connection) -> list[str]:
            _prepare(conn, busy_timeout_ms, readonly=readonly)
            _quick_check(conn, path)
            if not migrate or readonly:
                migrations.require_current(conn)
                return []
            applied = migrations.apply_pending(conn)
            first_id.append(_continue_ids(conn, mark, node, nodes, creating=creating))
            return applied

        applied: list[str] = []
        first_id: list[int] = []

        def setup_and_keep(conn: sqlite3.Connection) -> None:
            applied.extend(setup(conn))

        writer: StoreConnection | None = None
        try:
            try:
                if readonly:
                    reader = await StoreConnection.open(
                        path, name="outbox-reader", readonly=True, setup=setup_and_keep
                    )
                else:
                    writer = await StoreConnection.open(
                        path, name="outbox-writer", setup=setup_and_keep
                    )
                    reader = await StoreConnection.open(
                        path,
                        name="outbox-reader",
                        setup=lambda c: _prepare(c, busy_timeout_ms, readonly=False),
                    )
            except BaseException:
                if writer is not None:
                    await writer.close()
                raise
        except sqlite3.Error as e:
            raise StoreError(f"{path}: cannot open the store: {e}{_hint(e, readonly)}") from e
        except OSError as e:
            raise StoreError(f"{path}: cannot keep the smsId mark: {e}") from e
        if applied:
            log.info("store.migrated", path=path, applied=applied)
        if creating and not readonly:
            # Loud on purpose: a store created where one was expected means messages are
            # elsewhere (a wrong store.path, an unmounted volume).
            log.warning("store.created", path=path, first_sms_id=first_id[0], mark_file=mark.path)
        outbox = cls(path, writer, reader, node=node, nodes=nodes, clock=clock, mark=mark)
        if outbox._writer is not None:
            outbox._writer.start()
        return outbox

    async def close(self) -> None:
        if self._writer is not None:
            await self._writer.stop()
        await self._reader.close()
        if self._conn is not None:
            await self._conn.close()

    @property
    def _write(self) -> GroupWriter:
        if self._writer is None:
            raise StoreUnavailable("the store is open read-only")
        return self._writer

    @property
    def ids(self) -> tuple[int, int]:
        """(ids.node, ids.nodes): ids made here are `seq * nodes + node`."""
        return self._node, self._nodes

    async def write(self, op: Callable[[sqlite3.Connection], T]) -> T:
        """Run `op` in the next group-commit transaction; returns once it is on disk.

        For the other tables of this store (gateway/outbox/partner.py), which share its writer.
        """
        return await self._write.submit(op)

    async def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn` on the reading connection."""
        return await self._reader.call(fn)

    @property
    def last_write_error(self) -> str | None:
        return self._writer.last_error if self._writer is not None else None

    def on_accepted(self, listener: Callable[[], None]) -> None:
        """Call `listener` after new messages are committed (the delivery worker wakes on it)."""
        self._accepted_listeners.append(listener)

    # -- accepting -----------------------------------------------------------------------

    async def accept(self, items: Sequence[Incoming]) -> list[Accepted]:
        """Commit `items` atomically; a source_ref seen before gives back the existing smsId.

        Callers arriving together share one INSERT and one transaction (group commit).
        """
        if not items:
            return []
        result = await self._write.submit_items(self._insert, items)
        if any(not a.duplicate for a in result):
            self._notify()
        return result

    def _notify(self) -> None:
        for listener in self._accepted_listeners:
            listener()

    async def accept_part(self, part: Part, route: Route | None = None) -> PartResult:
        """Commit one part of a concatenated SMS; the joined message comes with the last part
        (passed through `route` first, when given)."""
        now = self._clock()
        insert = self._routed_insert(route)

        def op(conn: sqlite3.Connection) -> PartResult:
            return parts.add_part(conn, part, now, insert)

        result = await self._write.submit(op)
        if result.joined is not None and not result.joined.duplicate:
            self._notify()
        return result

    async def close_group(
        self, source: str, group_key: str, route: Route | None = None
    ) -> Accepted | None:
        """Join an open-ended group (parts with total 0) with what arrived, now."""
        insert = self._routed_insert(route)

        def op(conn: sqlite3.Connection) -> Accepted | None:
            return parts.close_group(conn, source, group_key, insert)

        joined = await self._write.submit(op)
        if joined is not None and not joined.duplicate:
            self._notify()
        return joined

    async def flush_stale_parts(
        self, older_than: float, route: Route | None = None
    ) -> list[Accepted]:
        """Join multi-part messages still incomplete after `older_than` seconds, gaps marked."""
        cutoff = self._clock() - older_than
        insert = self._routed_insert(route)

        def op(conn: sqlite3.Connection) -> list[Accepted]:
            return parts.flush_stale(conn, cutoff, insert)

        joined = await self._write.submit(op)
        if joined:
            self._notify()
        return joined

    async def release_held(self, source: str, phone: str, *, hold: Hold | None = None) -> list[int]:
        """Held-for-no-phone messages of `source` get `phone` and join the queue; or, with
        `hold`, stay held for that reason instead (no open activation, [partner] on)."""
        now = self._clock()
        state = State.QUEUED.value if hold is None else State.HELD.value
        reason = None if hold is None else hold.value

        def op(conn: sqlite3.Connection) -> list[int]:
            rows = conn.execute(_RELEASE_HELD, (state, phone, reason, now, now, source)).fetchall()
            return sorted(int(r[0]) for r in rows)

        released = await self._write.submit(op)
        if released and hold is None:
            self._notify()
        return released

    async def give_phone(
        self, sms_ids: Iterable[int], phone: str, route: PhoneRoute | None = None
    ) -> PhoneGiven:
        """Messages named by smsId that are held for want of a phone (`no_phone`) get `phone`
        and join the queue, same smsId; or stay held for the reason `route` gives them
        (`no_activation`, [partner] on). Any other message named is left as it is. One
        transaction: every message it changes gets its phone and its new state together, or,
        when the commit fails, none does."""
        ids = sorted(set(sms_ids))
        now = self._clock()

        def op(conn: sqlite3.Connection) -> PhoneGiven:
            found: dict[int, Message] = {}
            for chunk in _chunks(ids):
                rows = conn.execute(
                    f"SELECT {_MESSAGE_COLUMNS} FROM messages"  # noqa: S608
                    f" WHERE sms_id IN ({','.join('?' * len(chunk))})",
                    chunk,
                ).fetchall()
                found.update((int(r[0]), _message(r)) for r in rows)
            released: dict[int, Message] = {}
            left: dict[int, Message | None] = {}
            # smsIds by what they become: one UPDATE per outcome, not per message.
            outcomes: dict[tuple[str, str | None, int | None, str | None], list[int]] = {}
            for sms_id in ids:
                m = found.get(sms_id)
                if m is None or m.state is not State.HELD or m.hold_reason is not Hold.NO_PHONE:
                    left[sms_id] = m
                    continue
                item = Incoming(
                    m.source,
                    phone,
                    m.phone_from,
                    m.text,
                    m.received_at,
                    source_ref=m.source_ref,
                    raw=m.raw,
                    partial=m.partial,
                )
                if route is not None:
                    item = route(item, m.accepted_at)
                state = State.QUEUED if item.hold is None else State.HELD
                released[sms_id] = dataclasses.replace(
                    m,
                    phone=phone,
                    state=state,
                    due_at=now,
                    hold_reason=item.hold,
                    activation_id=item.activation_id,
                    rent_service=item.rent_service,
                )
                hold = None if item.hold is None else item.hold.value
                key = (state.value, hold, item.activation_id, item.rent_service)
                outcomes.setdefault(key, []).append(sms_id)
            for (state_value, hold, activation_id, rent_service), group in outcomes.items():
                for chunk in _chunks(group):
                    # max_age counts from now, as for a retry; received_at stays.
                    conn.execute(
                        "UPDATE messages SET state = ?, phone = ?, hold_reason = ?,"  # noqa: S608
                        " activation_id = ?, rent_service = ?, due_at = ?, leased = 0,"
                        " expiry_base = MAX(expiry_base, ?)"
                        f" WHERE sms_id IN ({','.join('?' * len(chunk))})"
                        " AND state = ? AND hold_reason = ?",
                        [
                            state_value,
                            phone,
                            hold,
                            activation_id,
                            rent_service,
                            now,
                            now,
                            *chunk,
                            State.HELD.value,
                            Hold.NO_PHONE.value,
                        ],
                    )
            return PhoneGiven(released, left)

        given = await self._write.submit(op)
        if any(m.state is State.QUEUED for m in given.released.values()):
            self._notify()
        return given

    async def waiting_part_phones(
        self, source: str | None = None, group_key: str | None = None
    ) -> set[str]:
        """The phones of parts waiting for their group (of one group, when given)."""
        sql = "SELECT DISTINCT phone FROM parts WHERE sms_id IS NULL"
        params: list[str] = []
        if source is not None:
            sql += " AND source = ? AND group_key = ?"
            params += [source, group_key or ""]
        return {str(r[0]) for r in await self._all(sql, params)}

    def _routed_insert(self, route: Route | None) -> parts.Insert:
        if route is None:
            return self._insert
        return lambda conn, items: self._insert(conn, [route(i) for i in items])

    def _insert(self, conn: sqlite3.Connection, items: list[Incoming]) -> list[Accepted]:
        """Runs on the store's thread, inside the transaction (see GroupWriter)."""
        now = self._clock()
        if any(item.source_ref is not None for item in items):
            return self._insert_deduplicated(conn, items, now)
        return [Accepted(sms_id, False) for sms_id in self._insert_fresh(conn, items, now)]

    def _insert_deduplicated(
        self, conn: sqlite3.Connection, items: list[Incoming], now: float
    ) -> list[Accepted]:
        known = _existing_refs(conn, items)
        result: list[Accepted] = []
        fresh: list[Incoming] = []
        for item in items:
            key = (item.source, item.source_ref)
            found = known.get(key) if item.source_ref is not None else None
            if found is None and item.earlier_ref is not None:
                found = known.get((item.source, item.earlier_ref))
            if found is not None:
                result.append(Accepted(found, duplicate=True))
                continue
            if item.source_ref is not None:
                known[key] = -len(fresh) - 1  # placeholder until the id is allocated
                if item.earlier_ref is not None:
                    # a copy of the period before later in this batch is this one too
                    known.setdefault((item.source, item.earlier_ref), known[key])
            result.append(Accepted(-len(fresh) - 1, duplicate=False))
            fresh.append(item)
        if not fresh:
            return result
        ids = self._insert_fresh(conn, fresh, now)
        # Resolve placeholders: fresh ones and in-batch duplicates pointing at them.
        by_placeholder = {-i - 1: sid for i, sid in enumerate(ids)}
        return [
            Accepted(by_placeholder.get(a.sms_id, a.sms_id), a.duplicate) if a.sms_id < 0 else a
            for a in result
        ]

    def _insert_fresh(
        self, conn: sqlite3.Connection, items: list[Incoming], now: float
    ) -> list[int]:
        """Allocate smsIds for `items` and insert them; returns the ids, in order."""
        row = conn.execute(_ALLOCATE_SMS_SEQS, (len(items),)).fetchone()
        assert row is not None
        first_seq = int(row[0]) - len(items) + 1
        nodes, node = self._nodes, self._node
        ids = [(first_seq + i) * nodes + node for i in range(len(items))]
        self._mark.cover(ids[-1], node, nodes)  # on disk before any of these ids is handed out
        queued = State.QUEUED.value
        params: list[Any] = []
        for sid, m in zip(ids, items, strict=True):
            params += (
                sid,
                m.source,
                m.source_ref,
                m.phone,
                m.phone_from,
                m.text,
                m.received_at,
                now,  # expiry_base: max_age counts from when we got it, not the network's clock
                now,
                queued if m.hold is None else State.HELD.value,
                now,
                None if m.hold is None else m.hold.value,
                m.raw,
                int(m.partial),
                m.activation_id,
                m.rent_service,
            )
        # Multi-row INSERTs rather than executemany: one statement step per chunk instead of
        # one per row, and each step lets go of (and must win back) the GIL.
        done = 0
        while done < len(items):
            rows = _INSERT_ROWS
            while rows > len(items) - done:
                rows //= 2
            conn.execute(_insert_sql(rows), params[done * _COLUMNS : (done + rows) * _COLUMNS])
            done += rows
        return ids

    # -- delivering ----------------------------------------------------------------------

    async def claim_due(self, *, limit: int, lease: float, max_age: float) -> list[Message]:
        """Lease up to `limit` due messages, oldest due first; expired leases count as due."""
        now = self._clock()
        cutoff = now - max_age if max_age > 0 else float("-inf")

        def op(conn: sqlite3.Connection) -> list[Message]:
            rows = conn.execute(_CLAIM_DUE, (now + lease, now, cutoff, limit)).fetchall()
            return [_message(r) for r in rows]

        claimed = await self._write.submit(op)
        claimed.sort(key=lambda m: m.sms_id)
        return claimed

    async def record(self, records: Sequence[AttemptRecord]) -> None:
        """Write attempts and the decisions they led to; concurrent callers share a statement."""
        if records:
            await self._write.submit_items(self._write_records, records)

    def _write_records(self, conn: sqlite3.Connection, records: list[AttemptRecord]) -> list[None]:
        now = self._clock()
        conn.executemany(_INSERT_ATTEMPT, [_attempt_row(r.attempt) for r in records])
        conn.executemany(
            _RECORD_DECISION,
            [
                (
                    r.new_state.value,
                    r.next_due if r.next_due is not None else now,
                    None if r.new_state is State.QUEUED else now,
                    r.attempt.code if r.new_state is State.DROPPED else None,
                    r.attempt.sms_id,
                )
                for r in records
            ],
        )
        return [None] * len(records)

    async def release(self, sms_ids: Iterable[int]) -> None:
        """Give leased messages back (shutdown abandoned them): due again right away."""
        ids = list(sms_ids)
        now = self._clock()

        def op(conn: sqlite3.Connection) -> None:
            conn.executemany(_RELEASE_LEASE, [(now, i) for i in ids])

        if ids:
            await self._write.submit(op)

    async def release_stale_leases(self) -> int:
        """At start, with the store locked by this process, every lease is a dead process's."""
        now = self._clock()
        return await self._write_rowcount(_RELEASE_STALE_LEASES, (now,))

    async def expire_old(self, max_age: float) -> list[int]:
        """Mark queued messages older than `max_age` as expired; returns their smsIds."""
        if max_age <= 0:
            return []
        now = self._clock()

        def op(conn: sqlite3.Connection) -> list[int]:
            rows = conn.execute(_EXPIRE_OLD, (now, now - max_age, now)).fetchall()
            return [int(r[0]) for r in rows]

        return await self._write.submit(op)

    async def purge_finished(self, keep: float, *, batch: int = 5000) -> int:
        """Delete finished messages (and their attempts) older than `keep` seconds."""
        cutoff = self._clock() - keep
        total = 0
        while True:
            n = await self._write_rowcount(_PURGE_FINISHED, (cutoff, batch))
            total += n
            if n < batch:
                break
        # Records that were never going to be pushed age out like finished messages;
        # held-for-no-phone ones never do (they are waiting, not finished); every other hold
        # reason (undecodable, refused, not_text, operator_answer, no_activation) does.
        total += await self._write_rowcount(_PURGE_HELD, (Hold.NO_PHONE.value, cutoff))
        await self._write_rowcount(_PURGE_JOINED_PARTS, (cutoff,))
        return total

    async def requeue(
        self, *, sms_ids: Sequence[int] = (), state: State | None = None, since: float | None = None
    ) -> list[int]:
        """Put dropped or expired messages back in the queue, keeping their smsId.

        Messages named by smsId may also be held for want of an activation (pushed by hand,
        without one); no other held message is ever queued by this.
        """
        now = self._clock()
        where = "state IN ('dropped', 'expired')"
        params: list[Any] = []
        if sms_ids:
            if state is None:
                where = f"({where} OR (state = 'held' AND hold_reason = 'no_activation'))"
            where += f" AND sms_id IN ({','.join('?' for _ in sms_ids)})"
            params.extend(sms_ids)
        if state is not None:
            where += " AND state = ?"
            params.append(state.value)
        if since is not None:
            where += " AND finished_at >= ?"
            params.append(now - since)

        def op(conn: sqlite3.Connection) -> list[int]:
            # max_age counts from now, so it does not expire again at once; received_at stays.
            rows = conn.execute(
                "UPDATE messages SET state = 'queued', due_at = ?, finished_at = NULL,"  # noqa: S608
                " final_code = NULL, hold_reason = NULL, leased = 0, expiry_base = ?"
                f" WHERE {where}"
                " RETURNING sms_id",
                [now, now, *params],
            ).fetchall()
            return sorted(int(r[0]) for r in rows)

        ids = await self._write.submit(op)
        if ids:
            self._notify()
        return ids

    async def check_writable(self, timeout: float = 2.0) -> str | None:
        """None when a write transaction commits within `timeout`, else why not."""

        def op(conn: sqlite3.Connection) -> None:
            conn.execute(_TOUCH_SMS_SEQ)

        try:
            await asyncio.wait_for(self._write.submit(op), timeout)
        except TimeoutError:
            return f"no commit within {timeout:g} s (locked or slow disk)"
        except StoreUnavailable as e:
            return str(e)
        return None

    async def _write_rowcount(self, sql: str, params: Sequence[Any]) -> int:
        def op(conn: sqlite3.Connection) -> int:
            return int(conn.execute(sql, params).rowcount)

        return await self._write.submit(op)

    # -- reading -------------------------------------------------------------------------

    async def next_due_at(self, max_age: float = 0) -> float | None:
        """When the next claimable message is due (the same filter as claim_due)."""
        cutoff = self._clock() - max_age if max_age > 0 else float("-inf")
        row = await self._one(_NEXT_DUE_AT, (cutoff,))
        return float(row[0]) if row else None

    async def summary(self) -> StoreSummary:
        counts = {s: 0 for s in State}
        for state, n in await self._all(_COUNT_BY_STATE):
            counts[State(state)] = int(n)
        last = await self._one(_LAST_DELIVERED_AT)
        return StoreSummary(
            counts=counts,
            oldest_queued_received_at=await self.oldest_queued_received_at(),
            last_delivered_at=_float_or_none(last),
        )

    async def queued_count(self) -> int:
        row = await self._one(_QUEUED_COUNT)
        return int(row[0]) if row else 0

    async def oldest_queued_received_at(self) -> float | None:
        return _float_or_none(await self._one(_OLDEST_QUEUED_RECEIVED_AT))

    async def recent_drops(self, limit: int = 10) -> list[Drop]:
        rows = await self._all(_RECENT_DROPS, (limit,))
        return [Drop(int(r[0]), r[1], r[2], r[3], float(r[4]), State(r[5])) for r in rows]

    async def list_messages(
        self, *, state: State | None = None, phone: str | None = None, limit: int = 50
    ) -> list[Message]:
        where, params = ["1 = 1"], []
        if state is not None:
            where.append("state = ?")
            params.append(state.value)
        if phone is not None:
            where.append("phone = ?")
            params.append(phone)
        rows = await self._all(
            f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE {' AND '.join(where)}"  # noqa: S608
            " ORDER BY sms_id DESC LIMIT ?",
            (*params, limit),
        )
        return [_message(r) for r in rows]

    async def get_message(self, sms_id: int) -> Message | None:
        row = await self._one(_GET_MESSAGE, (sms_id,))
        return _message(row) if row else None

    async def attempts_for(self, sms_id: int) -> list[Attempt]:
        rows = await self._all(_ATTEMPTS_FOR, (sms_id,))
        return [Attempt(int(r[0]), r[1], r[2], Outcome(r[3]), r[4], r[5], r[6], r[7]) for r in rows]

    async def _all(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        """Every row of one query on the reading connection, in one thread round trip."""
        return await self._reader.call(lambda conn: conn.execute(sql, params).fetchall())

    async def _one(self, sql: str, params: Sequence[Any] = ()) -> Any:
        return await self._reader.call(lambda conn: conn.execute(sql, params).fetchone())


def _chunks(items: Sequence[T], size: int = _IDS_PER_STATEMENT) -> Iterable[list[T]]:
    """`items` in lists of at most `size`: one statement each, below SQLite's variable limit."""
    for start in range(0, len(items), size):
        yield list(items[start : start + size])


def _continue_ids(
    conn: sqlite3.Connection, mark: IdMark, node: int, nodes: int, *, creating: bool
) -> int:
    """Keep smsIds above every id the mark file remembers; returns the next smsId.

    A new store (replacing a lost one) or new `ids` settings start above the mark; otherwise
    the store's own sequence is the authority and the mark is only brought up to it.
    """
    row = conn.execute(_LAST_SMS_SEQ).fetchone()
    last_seq = int(row[0])
    # The mark is written a block ahead of the id that made it grow; a store whose last id is
    # below that id is older than ids already handed out (a backup restored over it).
    behind = mark.exists and last_seq * nodes + node < mark.max_id - BLOCK * (mark.nodes or 1)
    if behind and not creating:
        log.warning("store.behind_mark", path=mark.store_path, mark_max_id=mark.max_id)
    if mark.exists and (creating or behind or (mark.node, mark.nodes) != (node, nodes)):
        start = mark.first_seq_above(node, nodes)
        if start - 1 > last_seq:
            last_seq = start - 1
            conn.execute(_SET_SMS_SEQ, (last_seq,))
    mark.cover(last_seq * nodes + node, node, nodes)
    return (last_seq + 1) * nodes + node


def _hint(e: sqlite3.Error, readonly: bool) -> str:
    """What to do about an open that failed, where the SQLite message alone does not say."""
    code = getattr(e, "sqlite_errorcode", 0) & 0xFF
    if readonly and code in (sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_READONLY):
        return (
            "; a reader of a WAL store needs its -shm and -wal files (created by the daemon"
            " while it runs, or by any user who may write the store's directory): start the"
            " daemon, or run this as the service user"
        )
    if code in (sqlite3.SQLITE_NOTADB, sqlite3.SQLITE_CORRUPT):
        return "; the file is damaged: restore it from a backup (docs/operations.md, backup)"
    if code in (sqlite3.SQLITE_READONLY, sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_PERM):
        return "; check that this user may write the store file and its directory"
    return ""


@functools.cache
def _insert_sql(rows: int) -> str:
    values = ",".join(["(" + ",".join("?" * _COLUMNS) + ")"] * rows)
    return f"INSERT INTO messages ({_INSERT_COLUMNS}) VALUES {values}"  # noqa: S608


def _existing_refs(
    conn: sqlite3.Connection, items: Sequence[Incoming]
) -> dict[tuple[str, str | None], int]:
    pairs = list(
        {(i.source, ref) for i in items for ref in (i.source_ref, i.earlier_ref) if ref is not None}
    )
    known: dict[tuple[str, str | None], int] = {}
    for chunk in _chunks(pairs, _CHUNK):
        params = [v for pair in chunk for v in pair]
        for source, ref, sms_id in conn.execute(existing_refs_sql(len(chunk)), params):
            known[(source, ref)] = int(sms_id)
    return known


def existing_refs_sql(pairs: int) -> str:
    """The dedup lookup of `pairs` (source, source_ref) pairs.

    A join, not `(source, source_ref) IN (VALUES ...)`: SQLite 3.40 runs that row-value IN
    as a scan of the whole index, once per batch, slower as the store grows; the join is one
    index search per pair (tests/outbox/test_store.py checks the plan).
    """
    values = ",".join("(?,?)" for _ in range(pairs))
    return (
        f"SELECT m.source, m.source_ref, m.sms_id FROM (VALUES {values}) AS v"  # noqa: S608
        " JOIN messages AS m ON m.source = v.column1 AND m.source_ref = v.column2"
    )


def _message(r: Any) -> Message:
    return Message(
        sms_id=int(r[0]),
        source=r[1],
        source_ref=r[2],
        phone=r[3],
        phone_from=r[4],
        text=r[5],
        received_at=float(r[6]),
        accepted_at=float(r[7]),
        state=State(r[8]),
        due_at=float(r[9]),
        attempts=int(r[10]),
        finished_at=_float_or_none((r[11],)),
        final_code=r[12],
        hold_reason=Hold(r[13]) if r[13] else None,
        raw=r[14],
        partial=bool(r[15]),
        activation_id=None if r[16] is None else int(r[16]),
        rent_service=r[17],
    )


def _attempt_row(a: Attempt) -> tuple[Any, ...]:
    body = a.body
    if body is not None and len(body.encode("utf-8")) > BODY_LIMIT:
        body = body.encode("utf-8")[:BODY_LIMIT].decode("utf-8", "ignore")
    return (
        a.sms_id,
        a.started_at,
        a.duration,
        a.outcome.value,
        a.http_status,
        a.code,
        a.error,
        body,
    )


def _float_or_none(row: Any) -> float | None:
    if row is None or row[0] is None:
        return None
    return float(row[0])
