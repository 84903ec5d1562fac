"""Parts of concatenated SMS: each committed as it arrives, joined into one message when complete.

A part with total 0 belongs to an open-ended group (a peer that sends a long SMS as packets with
no header, e.g. GoIP): it never completes by itself; the source closes it (close_group), or the
multi-part timeout joins it with what arrived, gaps marked only below the highest part seen.

A group of ``total`` parts is complete when its sequence numbers are ``1..total`` (3GPP's
numbering, and most peers') or ``0..total-1`` (some Yeastar firmware), and is joined in that
order. Every complete set holds ``0`` or ``total``, and no set holds both, so the numbering is
read off the parts in the store: nothing about it lives in memory, a restart loses nothing.

A part is kept (with the smsId of its joined message) after the join, so a part read again
(a crash between commit and SIM delete) is recognised as a duplicate, not a new message.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Any

from gateway.outbox.models import Accepted, Hold, Incoming, Part, PartResult
from gateway.outbox.queries import query

# Everything here runs on the store's thread, inside the writer's transaction.
Insert = Callable[[sqlite3.Connection, list[Incoming]], list[Accepted]]
_UNITS = "utf-16-le"
_FIND_PART = query("find_part")
_INSERT_PART = query("insert_part")
# Rows of id, source, group_key, seq, total, text, phone, phone_from, received_at, units, raw.
_WAITING_PARTS = query("waiting_parts")
_STALE_GROUPS = query("stale_groups")
_MARK_PART_JOINED = query("mark_part_joined")


def gap_marker(seq: int, total: int) -> str:
    return f"[part {seq}/{total} missing]"


def add_part(conn: sqlite3.Connection, part: Part, now: float, insert: Insert) -> PartResult:
    row = conn.execute(_FIND_PART, (part.source, part.source_ref)).fetchone()
    if row is None and part.earlier_ref is not None:
        row = conn.execute(_FIND_PART, (part.source, part.earlier_ref)).fetchone()
    if row is not None:
        joined = Accepted(int(row[0]), duplicate=True) if row[0] is not None else None
        return PartResult(duplicate=True, joined=joined)
    text, units = _storable(part.text)
    conn.execute(
        _INSERT_PART,
        (part.source, part.group_key, part.source_ref, part.seq, part.total, text,
         part.phone, part.phone_from, part.received_at, now, part.raw, units),
    )  # fmt: skip
    if part.total == 0:
        return PartResult(duplicate=False, joined=None)  # open-ended: the source closes it
    rows = _waiting(conn, part.source, part.group_key)
    chosen = _one_per_seq(rows)
    if set(chosen) not in (set(range(1, part.total + 1)), set(range(part.total))):
        return PartResult(duplicate=False, joined=None)
    return PartResult(duplicate=False, joined=_join(conn, chosen, part.total, insert))


def close_group(
    conn: sqlite3.Connection, source: str, group_key: str, insert: Insert
) -> Accepted | None:
    """Join an open-ended group now, with the parts that arrived; None if nothing waits."""
    rows = _waiting(conn, source, group_key)
    if not rows:
        return None
    chosen = _one_per_seq(rows)
    return _join(conn, chosen, _expected(rows), insert)


def _expected(rows: list[Any]) -> int:
    """How many parts a group should have: its declared total, or the highest seen if open."""
    totals = [int(r[4]) for r in rows]
    return max(totals) if all(totals) else max(int(r[3]) for r in rows)


def flush_stale(conn: sqlite3.Connection, cutoff: float, insert: Insert) -> list[Accepted]:
    """Join every group waiting since before `cutoff` with what arrived, gaps marked."""
    groups = conn.execute(_STALE_GROUPS, (cutoff,)).fetchall()
    joined = []
    for source, group_key in groups:
        rows = _waiting(conn, source, group_key)
        joined.append(_join(conn, _one_per_seq(rows), _expected(rows), insert))
    return joined


def _waiting(conn: sqlite3.Connection, source: str, group_key: str) -> list[Any]:
    return conn.execute(_WAITING_PARTS, (source, group_key)).fetchall()


def _one_per_seq(rows: list[Any]) -> dict[int, Any]:
    """The first part for each sequence number (a reused reference leaves the rest waiting)."""
    chosen: dict[int, Any] = {}
    for r in rows:
        chosen.setdefault(int(r[3]), r)
    return chosen


def _storable(text: str) -> tuple[str, bytes | None]:
    """(text SQLite can hold, its UTF-16 code units if it holds a lone surrogate, else None)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        units = text.encode(_UNITS, "surrogatepass")
        return units.decode(_UNITS, "replace"), units
    return text, None


def _units(row: Any) -> bytes:
    return bytes(row[9]) if row[9] is not None else str(row[5]).encode(_UNITS)


def _join(conn: sqlite3.Connection, chosen: dict[int, Any], total: int, insert: Insert) -> Accepted:
    first = chosen[min(chosen)]
    # Numbered from 0 when a part 0 came, else from 1. A part outside that range (a set that
    # mixes both numberings) still goes in, in order: no part is left behind.
    base = 0 if 0 in chosen else 1
    places = sorted(set(range(base, base + total)) | set(chosen))
    missing = [s for s in places if s not in chosen]
    # Joined as UTF-16 code units: the halves of a pair split between parts meet again; a half
    # whose partner never came becomes U+FFFD.
    units = b"".join(
        _units(chosen[s]) if s in chosen else gap_marker(s - base + 1, total).encode(_UNITS)
        for s in places
    )
    phone = next((r[6] for r in chosen.values() if r[6]), "")
    # Held for want of a phone: the first part's raw says where it came from (a modem's PDU,
    # an SMPP destination_addr), so a person can give it its number.
    raw = None if phone else next((r[10] for s, r in sorted(chosen.items()) if r[10]), None)
    message = Incoming(
        source=first[1],
        phone=phone,
        phone_from=first[7],
        text=units.decode(_UNITS, "replace"),
        received_at=min(float(r[8]) for r in chosen.values()),
        source_ref=f"parts:{first[2]}:{first[0]}",
        hold=None if phone else Hold.NO_PHONE,
        raw=raw,
        partial=bool(missing),
    )
    (accepted,) = insert(conn, [message])
    conn.executemany(
        _MARK_PART_JOINED,
        [(accepted.sms_id, r[0]) for r in chosen.values()],
    )
    return accepted
