"""The partner side's tables: SIM inventory, activations and the per-SIM, per-service ledger.

Like the rest of the outbox, every write goes through the group-commit writer and returns once
it is on disk; `open_activation` allocates the activationId and commits the activation in one
transaction, so an id Onlinesim has been given is always in the store.
"""

from __future__ import annotations

import enum
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from gateway.outbox.idmark import BLOCK, IdMark
from gateway.outbox.queries import query
from gateway.outbox.store import Outbox

__all__ = [
    "Activation",
    "ActivationState",
    "FinishStatus",
    "LedgerEntry",
    "PartnerBook",
    "SimRecord",
]


class FinishStatus(enum.IntEnum):
    NOT_FOR_SERVICE = 1  # do not offer this number for this service any more
    SOLD = 3
    CANCELLED = 4
    REFUNDED = 5


class ActivationState(enum.Enum):
    OPEN = "open"
    FINISHED = "finished"
    STALE = "stale"  # no FINISH long after its end: its SIM was freed


@dataclass(frozen=True)
class Activation:
    activation_id: int
    sim_key: str
    phone: str
    service: str  # "rent" for rent operations
    rent: bool
    opened_at: float
    ends_at: float  # when Onlinesim's operation ends (15 minutes, or the rent period)
    state: ActivationState = ActivationState.OPEN
    status: FinishStatus | None = None
    finished_at: float | None = None


@dataclass(frozen=True)
class LedgerEntry:
    sold: bool = False
    blocked: bool = False  # status 1
    cancels: int = 0  # statuses 4 and 5
    refunds: int = 0  # status 5, for the record


@dataclass(frozen=True)
class SimRecord:
    """One row of the inventory."""

    sim_key: str
    source: str
    location: str
    state: str
    last_seen: float
    iccid: str | None = None
    imsi: str | None = None
    mcc: str | None = None
    mnc: str | None = None
    country: str = ""
    operator: str = ""
    phone: str = ""
    phone_origin: str | None = None
    signal: int | None = None
    last_sms: float | None = None


# For activations(), whose filter is built per call; get_activation returns the same columns.
_ACTIVATION_COLUMNS = (
    "activation_id, sim_key, phone, service, rent, opened_at, ends_at, state, status, finished_at"
)
_LAST_ACTIVATION_SEQ = query("last_activation_seq")
_SET_ACTIVATION_SEQ = query("set_activation_seq")
_NEXT_ACTIVATION_SEQ = query("next_activation_seq")
_INSERT_ACTIVATION = query("insert_activation")
_FINISH_ACTIVATION = query("finish_activation")
_GET_ACTIVATION = query("get_activation")
_SAVE_LEDGER_ENTRY = query("save_ledger_entry")
_LEDGER = query("ledger")
_SAVE_SIM = query("save_sim")
_LIST_SIMS = query("list_sims")


class PartnerBook:
    """The partner tables of one store (it implements the desk's `DeskStore`).

    activationIds are made like smsIds (`seq * ids.nodes + ids.node`) and kept above a mark
    file of their own beside the store (`<store>.activation-ids`), so a lost store never makes
    one again.
    """

    def __init__(self, outbox: Outbox, *, read_mark: bool = True) -> None:
        self._outbox = outbox
        self._mark = IdMark.beside(outbox.path, suffix=".activation-ids", read=read_mark)

    async def start(self) -> None:
        """Bring the activation sequence above the mark (a replaced store) and the mark up to it."""
        node, nodes = self._outbox.ids
        mark = self._mark

        def op(conn: sqlite3.Connection) -> None:
            (last_seq,) = conn.execute(_LAST_ACTIVATION_SEQ).fetchone()
            # A new store (last_seq 0) beside a mark replaced a lost one; a store whose last
            # id is below the one that last moved the mark is an old backup put back.
            behind = int(last_seq) * nodes + node < mark.max_id - BLOCK * nodes
            if mark.exists and (last_seq == 0 or behind):
                last_seq = mark.first_seq_above(node, nodes) - 1
                conn.execute(_SET_ACTIVATION_SEQ, (last_seq,))
            mark.cover(int(last_seq) * nodes + node, node, nodes)

        await self._outbox.write(op)

    # --- activations -----------------------------------------------------------------------

    async def open_activation(
        self, sim_key: str, phone: str, service: str, rent: bool, opened_at: float, ends_at: float
    ) -> int:
        node, nodes = self._outbox.ids
        mark = self._mark

        def op(conn: sqlite3.Connection) -> int:
            (seq,) = conn.execute(_NEXT_ACTIVATION_SEQ).fetchone()
            activation_id = int(seq) * nodes + node
            mark.cover(activation_id, node, nodes)  # on disk before the id reaches anyone
            conn.execute(
                _INSERT_ACTIVATION,
                (activation_id, sim_key, phone, service, int(rent), opened_at, ends_at),
            )
            return activation_id

        return await self._outbox.write(op)

    async def finish_activation(self, activation: Activation, entry: LedgerEntry | None) -> None:
        def op(conn: sqlite3.Connection) -> None:
            conn.execute(
                _FINISH_ACTIVATION,
                (
                    activation.state.value,
                    int(activation.status) if activation.status is not None else None,
                    activation.finished_at,
                    activation.activation_id,
                ),
            )
            if entry is not None:
                conn.execute(
                    _SAVE_LEDGER_ENTRY,
                    (
                        activation.sim_key,
                        activation.service,
                        int(entry.sold),
                        int(entry.blocked),
                        entry.cancels,
                        entry.refunds,
                    ),
                )

        await self._outbox.write(op)

    async def activations(
        self, *, open_only: bool = False, limit: int | None = None
    ) -> list[Activation]:
        sql = f"SELECT {_ACTIVATION_COLUMNS} FROM activations"  # noqa: S608 - constants only
        if open_only:
            sql += " WHERE state = 'open'"
        sql += " ORDER BY activation_id DESC"
        params: tuple[Any, ...] = ()
        if limit is not None:
            sql += " LIMIT ?"
            params = (limit,)
        rows = await self._outbox.read(lambda conn: conn.execute(sql, params).fetchall())
        return [_activation(r) for r in rows]

    async def activation(self, activation_id: int) -> Activation | None:
        row = await self._outbox.read(
            lambda conn: conn.execute(_GET_ACTIVATION, (activation_id,)).fetchone()
        )
        return _activation(row) if row is not None else None

    async def ledger(self) -> dict[tuple[str, str], LedgerEntry]:
        rows = await self._outbox.read(lambda conn: conn.execute(_LEDGER).fetchall())
        return {
            (r[0], r[1]): LedgerEntry(bool(r[2]), bool(r[3]), int(r[4]), int(r[5])) for r in rows
        }

    # --- inventory -------------------------------------------------------------------------

    async def save_sims(self, sims: Sequence[SimRecord]) -> None:
        if not sims:
            return
        rows = [
            (
                s.sim_key, s.source, s.location, s.state, s.last_seen, s.iccid, s.imsi, s.mcc,
                s.mnc, s.country, s.operator, s.phone, s.phone_origin, s.signal, s.last_sms,
            )
            for s in sims
        ]  # fmt: skip

        def op(conn: sqlite3.Connection) -> None:
            conn.executemany(_SAVE_SIM, rows)

        await self._outbox.write(op)

    async def sims(self) -> list[SimRecord]:
        rows = await self._outbox.read(lambda conn: conn.execute(_LIST_SIMS).fetchall())
        return [SimRecord(*r) for r in rows]


def _activation(r: Iterable[Any]) -> Activation:
    (aid, sim_key, phone, service, rent, opened, ends, state, status, finished) = tuple(r)
    return Activation(
        activation_id=int(aid),
        sim_key=sim_key,
        phone=phone,
        service=service,
        rent=bool(rent),
        opened_at=float(opened),
        ends_at=float(ends),
        state=ActivationState(state),
        status=FinishStatus(status) if status is not None else None,
        finished_at=float(finished) if finished is not None else None,
    )
