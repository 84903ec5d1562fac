"""The partner desk: answers Onlinesim's GET_SERVICES, GET_NUMBER and FINISH_ACTIVATION.

It is the one owner of activations. It keeps the live SIM inventory, the open activations and
the per-SIM, per-service ledger in memory (loaded from the store at start) and writes every
change through the store *before* answering, so an activation Onlinesim has been told about is
never lost or handed to a second order. asyncio runs one call at a time between awaits: a SIM
is reserved in memory before the commit is awaited, so two concurrent GET_NUMBERs can never
take the same SIM.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol, TypeVar

import structlog

from gateway.inventory.sims import SimState  # the one SIM state (inner code; re-exported)
from gateway.outbox.partner import (
    Activation,
    ActivationState,
    LedgerEntry,
)
from gateway.partner.requests import FinishActivation, GetNumber, GetServices
from gateway.partner.rules import after_finish, excluded, offerable

__all__ = [
    "Desk",
    "DeskStore",
    "SimState",
    "SimView",
]

log = structlog.get_logger(__name__)
T = TypeVar("T")
ANY = "any"
RENT = "rent"


@dataclass(frozen=True)
class SimView:
    """What the desk needs of one SIM in the inventory."""

    key: str  # ICCID, or "source:port" for boxes that do not report one
    phone: str  # digits with country code; "" while unknown
    country: str  # Onlinesim's names
    operator: str
    state: SimState
    live: bool  # sits in a working module right now


class DeskStore(Protocol):
    """Where the desk's changes are committed; each call returns once on disk."""

    async def open_activation(
        self, sim_key: str, phone: str, service: str, rent: bool, opened_at: float, ends_at: float
    ) -> int:
        """Allocate an activation id (never reused) and commit the open activation."""
        ...

    async def finish_activation(self, activation: Activation, entry: LedgerEntry | None) -> None:
        """Commit the finished (or stale) activation and, if given, the new ledger entry."""
        ...


@dataclass
class _Counts:
    """GET_SERVICES counts, kept until something changes."""

    services: dict[str, Any] | None = None
    rent: dict[str, Any] | None = None


@dataclass
class Desk:
    store: DeskStore
    services: Sequence[str]
    cancel_retries: int = 3
    activation_time: float = 15 * 60.0
    rent_time: float = 24 * 3600.0  # when GET_NUMBER (rent) does not say
    stale_after: float = 15 * 60.0
    clock: Callable[[], float] = field(default=lambda: 0.0)
    # Told how each activation closed: "1", "3", "4", "5" (FINISH status) or "stale".
    on_closed: Callable[[str], None] | None = None
    _sims: dict[str, SimView] = field(default_factory=dict)
    _open: dict[int, Activation] = field(default_factory=dict)  # by activation id
    _busy: set[str] = field(default_factory=set)  # SIM keys with an open (or opening) activation
    _ledger: dict[tuple[str, str], LedgerEntry] = field(default_factory=dict)
    _finished: dict[int, Activation] = field(default_factory=dict)  # for idempotent FINISH
    _last_used: dict[str, float] = field(default_factory=dict)
    _counts: _Counts = field(default_factory=_Counts)
    # Usable SIMs by (country, operator), least recently ordered first (dicts keep insertion
    # order): GET_NUMBER looks at the first few, not at every SIM.
    _free: dict[tuple[str, str], dict[str, SimView]] = field(default_factory=dict)
    _by_phone: dict[str, Activation] = field(default_factory=dict)  # open ones
    # FINISH and the stale sweep read, commit and update the ledger one at a time: two
    # finishes of one (SIM, service) must not both start from the same entry.
    _closing: asyncio.Lock = field(default_factory=asyncio.Lock)

    # --- state from outside -----------------------------------------------------------------

    def load(
        self,
        activations: Iterable[Activation],
        ledger: Mapping[tuple[str, str], LedgerEntry],
    ) -> None:
        """The store's view at start: every known activation and the ledger."""
        for a in activations:
            if a.state is ActivationState.OPEN:
                self._open[a.activation_id] = a
                self._by_phone[a.phone] = a
                self._busy.add(a.sim_key)  # indexed below
            else:
                self._finished[a.activation_id] = a
            self._last_used[a.sim_key] = max(self._last_used.get(a.sim_key, 0.0), a.opened_at)
        self._ledger.update(ledger)
        for key in list(self._sims):
            self._reindex(key)
        self._changed()

    def update_sims(self, sims: Iterable[SimView]) -> None:
        """The inventory's current view of some SIMs (new or changed)."""
        for sim in sims:
            if self._sims.get(sim.key) != sim:
                self._sims[sim.key] = sim
                self._reindex(sim.key)
                self._changed()

    def remove_sim(self, key: str) -> None:
        if self._sims.pop(key, None) is not None:
            self._reindex(key)
            self._changed()

    def open_activation_for(self, phone: str) -> Activation | None:
        """The open activation on this number, if any (what an SMS to it is pushed for)."""
        return self._by_phone.get(phone)

    def activation(self, activation_id: int) -> Activation | None:
        return self._open.get(activation_id) or self._finished.get(activation_id)

    def stale_activations(self) -> list[Activation]:
        """Activations freed for want of a FINISH and not settled since (an operator's job)."""
        return [a for a in self._finished.values() if a.state is ActivationState.STALE]

    def open_activations(self) -> list[Activation]:
        return sorted(self._open.values(), key=lambda a: a.activation_id)

    @property
    def open_count(self) -> int:
        return len(self._open)

    @property
    def usable_count(self) -> int:
        """SIMs that could be ordered now for some service (live, ready, known phone, free)."""
        return sum(len(members) for members in self._free.values())

    def sims(self) -> list[SimView]:
        return list(self._sims.values())

    def ledger(self) -> dict[tuple[str, str], LedgerEntry]:
        return dict(self._ledger)

    # --- the calls --------------------------------------------------------------------------

    def get_services(self, request: GetServices) -> dict[str, Any]:
        if request.rent:
            if self._counts.rent is None:
                self._counts.rent = self._count(rent=True)
            return self._counts.rent
        if self._counts.services is None:
            self._counts.services = self._count(rent=False)
        return self._counts.services

    async def get_number(self, request: GetNumber) -> dict[str, Any]:
        service = RENT if request.rent else request.service
        if not request.rent and service not in self.services:
            return {"status": "NO_NUMBERS"}
        sim = self._pick(request.country, request.operator, service, request.exceptions)
        if sim is None:
            return {"status": "NO_NUMBERS"}
        now = self.clock()
        length = (
            (request.period * 3600.0 if request.period else self.rent_time)
            if request.rent
            else self.activation_time
        )
        self._set_busy(sim.key, True)  # reserved before the await: no second order takes it
        # The commit goes on if the caller is cancelled (its client went away, the listener
        # stops): the writer commits it anyway, so the desk must record it anyway.
        opening = asyncio.ensure_future(
            self._open_activation(sim, service, request.rent, now, length)
        )
        activation = await asyncio.shield(opening)
        return {
            "number": int(activation.phone),
            "activationId": activation.activation_id,
            "status": "SUCCESS",
        }

    async def _open_activation(
        self, sim: SimView, service: str, rent: bool, now: float, length: float
    ) -> Activation:
        try:
            activation_id = await self.store.open_activation(
                sim.key, sim.phone, service, rent, now, now + length
            )
        except BaseException:
            self._set_busy(sim.key, False)
            raise
        activation = Activation(activation_id, sim.key, sim.phone, service, rent, now, now + length)
        self._open[activation_id] = activation
        self._by_phone[activation.phone] = activation
        self._last_used[sim.key] = now
        log.info(
            "partner.activation_opened",
            activation_id=activation_id,
            phone=sim.phone,
            service=service,
            rent=rent,
        )
        return activation

    async def finish(self, request: FinishActivation) -> dict[str, Any]:
        # A close begun is carried through (commit and memory) even if the caller is cancelled.
        return await asyncio.shield(asyncio.ensure_future(self._locked(self._finish(request))))

    async def _finish(self, request: FinishActivation) -> dict[str, Any]:
        activation = self._open.get(request.activation_id)
        if activation is None:
            done = self._finished.get(request.activation_id)
            if done is None:
                return {"status": "ERROR", "error": "NO_ACTIVATION"}
            if done.state is ActivationState.FINISHED:
                if done.status is not request.status:
                    log.warning(
                        "partner.finish_repeated_with_another_status",
                        activation_id=done.activation_id,
                        status=int(request.status),
                        kept=int(done.status) if done.status else None,
                    )
                return {"status": "SUCCESS"}
            activation = done  # stale: its SIM is already free; the status still counts
        key = (activation.sim_key, activation.service)
        entry = after_finish(self._ledger.get(key, LedgerEntry()), request.status)
        finished = replace(
            activation,
            state=ActivationState.FINISHED,
            status=request.status,
            finished_at=self.clock(),
        )
        await self.store.finish_activation(finished, entry)
        self._ledger[key] = entry
        self._forget_open(activation)
        self._finished[activation.activation_id] = finished
        self._changed()  # the ledger entry may change what is offerable
        self._closed(str(int(request.status)))
        log.info(
            "partner.activation_finished",
            activation_id=activation.activation_id,
            phone=activation.phone,
            service=activation.service,
            status=int(request.status),
        )
        return {"status": "SUCCESS"}

    async def sweep_stale(self) -> list[Activation]:
        """Free the SIMs of activations that got no FINISH long after their end."""
        return await asyncio.shield(asyncio.ensure_future(self._locked(self._sweep_stale())))

    async def _locked(self, step: Awaitable[T]) -> T:
        async with self._closing:
            return await step

    async def _sweep_stale(self) -> list[Activation]:
        now = self.clock()
        stale: list[Activation] = []
        for a in list(self._open.values()):
            if now < a.ends_at + self.stale_after:
                continue
            marked = replace(a, state=ActivationState.STALE, finished_at=now)
            await self.store.finish_activation(marked, None)
            self._forget_open(a)
            self._finished[a.activation_id] = marked
            self._closed("stale")
            stale.append(marked)
            log.warning(
                "partner.activation_stale",
                activation_id=a.activation_id,
                phone=a.phone,
                service=a.service,
                ended_ago=round(now - a.ends_at, 1),
            )
        return stale

    # --- inside -----------------------------------------------------------------------------

    def _changed(self) -> None:
        self._counts = _Counts()

    def _closed(self, how: str) -> None:
        if self.on_closed is not None:
            self.on_closed(how)

    def _forget_open(self, activation: Activation) -> None:
        """`activation` is no longer open: free its SIM unless a newer activation holds it
        (a late FINISH of a stale activation must not free the SIM's current order)."""
        if self._open.pop(activation.activation_id, None) is None:
            return
        if self._by_phone.get(activation.phone) is activation:
            del self._by_phone[activation.phone]
        self._set_busy(activation.sim_key, False)

    def _set_busy(self, key: str, busy: bool) -> None:
        if busy:
            self._busy.add(key)
        else:
            self._busy.discard(key)
        self._reindex(key)
        self._changed()

    def _reindex(self, key: str) -> None:
        """Keep `_free` true for one SIM: in its group iff usable right now."""
        for members in self._free.values():
            if members.pop(key, None) is not None:
                break
        sim = self._sims.get(key)
        if sim is not None and self._usable(sim):
            self._free.setdefault((sim.country, sim.operator), {})[key] = sim

    def _usable(self, sim: SimView) -> bool:
        return (
            sim.live
            and sim.state is SimState.READY
            and sim.phone != ""
            and sim.key not in self._busy
        )

    def _offerable(self, sim: SimView, service: str) -> bool:
        return offerable(self._ledger.get((sim.key, service)), self.cancel_retries)

    def _pick(
        self, country: str, operator: str, service: str, exceptions: Sequence[str]
    ) -> SimView | None:
        groups = (
            [m for (c, _), m in self._free.items() if c == country]
            if operator == ANY
            else [self._free.get((country, operator), {})]
        )
        best: SimView | None = None
        best_used = 0.0
        for members in groups:
            for sim in members.values():  # least recently ordered first
                if not self._offerable(sim, service):
                    continue
                if exceptions and excluded(sim.phone, exceptions):
                    continue
                used = self._last_used.get(sim.key, 0.0)
                if best is None or used < best_used:
                    best, best_used = sim, used
                break
        return best

    def _count(self, *, rent: bool) -> dict[str, Any]:
        names = [*self.services, RENT] if rent else list(self.services)
        refused: dict[str, set[str]] = defaultdict(set)  # service -> SIM keys not offerable
        for (key, service), entry in self._ledger.items():
            if not offerable(entry, self.cancel_retries):
                refused[service].add(key)
        countries: dict[str, dict[str, dict[str, int]]] = defaultdict(dict)
        for (country, operator), members in sorted(self._free.items()):
            if not members:
                continue
            keys = members.keys()
            countries[country][operator] = {
                s: len(members) - len(refused[s] & keys) if s in refused else len(members)
                for s in names
            }
        country_list = []
        for country, operators in countries.items():
            total = {s: sum(op[s] for op in operators.values()) for s in names}
            country_list.append({"country": country, "operatorMap": {ANY: total, **operators}})
        return {"countryList": country_list, "status": "SUCCESS"}
