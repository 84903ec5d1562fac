"""The live SIM inventory: one record per SIM, kept current by every source that knows its SIMs.

Sources call in (this module imports no source and nothing of ``gateway.partner``):

* ``report(Sighting(...))``: what a source knows of the SIM at one location right now (a
  modem's identity, registration and signal; a box's port). The record's key is the ICCID, or
  ``"<source>:<port>"`` (``"<source>"`` for a modem) when the source reports none.
* ``gone(source, location)``: nothing usable sits there now (port lost, modem resetting, box
  down): its SIM becomes ``absent`` and not live.
* ``sms(source, location, at)``: an SMS arrived there (``last_sms``).

A sighting with ``live=False`` is listed but never live: a source that only says a port exists
when an SMS arrives on it (Dinstar, Ejoin SMS pushes) cannot prove the SIM is in a working module,
and counting such a SIM toward GET_SERVICES gets the partner blocked.

Evidence that ages: a sighting with ``fresh_for`` (seconds) keeps its SIM live only that long
unless the source reports it again (a box that pushes its ports' state now and then and has no
connection whose loss would say it is gone: Ejoin's ``dev-status`` / ``port-status``). When the
time passes with no news the SIM becomes ``absent`` (``inventory.sim_stale``). A later report
never shortens a deadline an earlier one gave. While a location's SIM is live on such evidence, a
listed-only sighting there (an SMS push naming the port) only sets that SIM's ``last_sms``: it
does not replace the SIM the status named, nor make it not live. ``stop()`` makes every SIM held
live this way ``absent``: nothing listens for the next report any more.

Records are ``gateway.outbox.partner.SimRecord`` values (country and operator by
``networks.identify`` and ``Names([partner.names])``; plain slugs without a mapping; ``signal``
in dBm). ``live`` is not part of the record: a SIM is live when *this run* has seen it and it is
not ``absent``; records loaded from the store at start are shown (``sms-gateway sims``) but never
live until a source reports them again.

Listeners: ``on_change(callback)`` registers ``callback(list[LiveSim])``; it is called at once
with every record, then with the records whose content or liveness changed (a new
``last_seen`` alone is no change), synchronously, in the event loop. ``LiveSim`` is a
``(record: SimRecord, live: bool)`` named tuple; the partner desk turns these into its
``SimView``s. A callback that raises is logged and kept.

Persistence: changed records are written through ``SimStore.save_sims`` in batches, at most one
write per ``save_delay`` (1 s), and once more at ``stop()``; a store that refuses a write keeps
the batch for the next one.
"""

from __future__ import annotations

import asyncio
import enum
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import NamedTuple, Protocol

import structlog

from gateway.errors import StoreUnavailable
from gateway.inventory.networks import Names, identify
from gateway.outbox.partner import SimRecord

__all__ = [
    "DISCOVERED",
    "Inventory",
    "LiveSim",
    "PhoneOrigin",
    "Sighting",
    "SimState",
    "SimStore",
]

log = structlog.get_logger(__name__)


class SimState(enum.StrEnum):
    READY = "ready"
    NO_SIGNAL = "no_signal"
    NOT_REGISTERED = "not_registered"
    SIM_ERROR = "sim_error"
    ABSENT = "absent"


class PhoneOrigin(enum.StrEnum):
    """Where a SIM's number came from (``SimRecord.phone_origin``)."""

    SIM = "sim"  # a [[sim]] entry
    CONFIG = "config"  # the [[modem]] phone key
    CNUM = "cnum"  # AT+CNUM
    PHONEBOOK = "phonebook"  # the SIM's own-number phonebook (AT+CPBS="ON")
    USSD = "ussd"  # the operator's USSD answer ([[partner.number_query]])
    SMS = "sms"  # the operator's SMS answer to that query
    SOURCE = "source"  # a gateway box said it


#: Origins of numbers found by asking the operator: remembered by ICCID across restarts.
DISCOVERED = frozenset({PhoneOrigin.USSD, PhoneOrigin.SMS})


class LiveSim(NamedTuple):
    record: SimRecord
    live: bool


class SimStore(Protocol):
    """Where the inventory is kept (``gateway.outbox.partner.PartnerBook``)."""

    async def save_sims(self, sims: Sequence[SimRecord]) -> None: ...

    async def sims(self) -> list[SimRecord]: ...


@dataclass(frozen=True)
class Sighting:
    """What a source knows of the SIM at ``location`` now; ``None``/"" for what it does not."""

    source: str  # "modem:m1", "goip:box1", ...
    location: str  # the modem's name, or the box's port
    state: SimState
    port: str = ""  # for the key when there is no ICCID: "<source>:<port>"
    iccid: str | None = None
    imsi: str | None = None
    phone: str = ""
    phone_origin: str | None = None
    signal: int | None = None  # dBm
    network_name: str = ""  # what the network calls itself (AT+COPS): the operator fallback
    last_sms: float | None = None
    # False: the source cannot prove the SIM sits in a working module now (a box that only
    # pushes when an SMS arrives): the record is listed for operators but never live.
    live: bool = True
    # Seconds this evidence stays good: live until then unless reported again, then absent
    # (module docstring). None: live until the source says otherwise (gone(), another SIM).
    fresh_for: float | None = None

    @property
    def key(self) -> str:
        if self.iccid:
            return self.iccid
        return f"{self.source}:{self.port}" if self.port else self.source


def _same(a: SimRecord, b: SimRecord) -> bool:
    return replace(a, last_seen=0.0) == replace(b, last_seen=0.0)


class Inventory:
    """Every SIM any source has told about; see the module docstring."""

    def __init__(
        self,
        store: SimStore | None = None,
        *,
        names: Mapping[str, str] | None = None,
        clock: Callable[[], float] = time.time,
        save_delay: float = 1.0,
    ) -> None:
        self._store = store
        self._names = Names(dict(names or {}))
        self._clock = clock
        self._save_delay = save_delay
        self._records: dict[str, SimRecord] = {}
        self._live: set[str] = set()
        self._at: dict[tuple[str, str], str] = {}  # (source, location) -> key
        self._listeners: list[Callable[[list[LiveSim]], None]] = []
        self._dirty: dict[str, SimRecord] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        # key -> (deadline in loop time, its timer): SIMs live on evidence that ages
        self._fresh: dict[str, tuple[float, asyncio.TimerHandle]] = {}

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        """Load the last known records (not live) and start the writer."""
        if self._store is not None:
            try:
                loaded = await self._store.sims()
            except StoreUnavailable as exc:
                log.warning("inventory.load_failed", error=str(exc))
                loaded = []
            for record in loaded:
                self._records.setdefault(record.sim_key, record)
            log.info("inventory.loaded", sims=len(loaded))
            self._task = asyncio.get_running_loop().create_task(
                self._write_loop(), name="inventory"
            )

    async def stop(self) -> None:
        """Stop the writer and write what is left; SIMs live on evidence that ages are absent
        now (nothing will hear the next report)."""
        changed: list[str] = []
        for key in list(self._fresh):
            changed.extend(self._mark_absent(key, self._clock()))
        self._publish(changed)
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        await self.flush()

    async def flush(self) -> None:
        """Write every changed record now."""
        if self._store is None or not self._dirty:
            return
        batch, self._dirty = self._dirty, {}
        try:
            await self._store.save_sims(list(batch.values()))
        except StoreUnavailable as exc:
            log.warning("inventory.save_failed", sims=len(batch), error=str(exc))
            for key, record in batch.items():
                self._dirty.setdefault(key, record)

    async def _write_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            await self.flush()
            await asyncio.sleep(self._save_delay)  # at most one write per save_delay

    # -- what sources say ----------------------------------------------------------------

    def report(self, s: Sighting) -> SimRecord:
        """The SIM at ``s.location`` as ``s.source`` sees it now; returns its record."""
        key = s.key
        now = self._clock()
        previous_key = self._at.get((s.source, s.location))
        if not s.live and previous_key is not None and previous_key in self._fresh:
            # the source's own status says which SIM is here, and it is fresh: this (an SMS
            # push naming the port) only tells when an SMS came
            if s.last_sms is not None:
                self.sms(s.source, s.location, s.last_sms)
            return self._records[previous_key]
        changed: list[str] = []
        if previous_key is not None and previous_key != key:
            changed.extend(self._mark_absent(previous_key, now))  # another SIM sits there now
        self._at[(s.source, s.location)] = key
        old = self._records.get(key)
        net = identify(s.imsi, s.network_name)
        record = SimRecord(
            sim_key=key,
            source=s.source,
            location=s.location,
            state=s.state.value,
            last_seen=now,
            iccid=s.iccid,
            imsi=s.imsi or (old.imsi if old and s.iccid else None),
            mcc=net.mcc if net else None,
            mnc=net.mnc if net else None,
            country=self._names.country(net) if net else "",
            operator=self._names.operator(net) if net else "",
            phone=s.phone,
            phone_origin=s.phone_origin if s.phone else None,
            signal=s.signal,
            last_sms=s.last_sms if s.last_sms is not None else (old.last_sms if old else None),
        )
        if record.mcc is None and old is not None and old.mcc is not None and s.iccid:
            # a box that reports no IMSI: keep what an earlier sighting of this SIM said
            record = replace(
                record, imsi=old.imsi, mcc=old.mcc, mnc=old.mnc, country=old.country,
                operator=old.operator,
            )  # fmt: skip
        live = s.live and s.state is not SimState.ABSENT
        was_live = key in self._live
        self._records[key] = record
        (self._live.add if live else self._live.discard)(key)
        self._keep_fresh(key, s.fresh_for if live else None)
        self._dirty[key] = record
        self._wake.set()
        if old is None or not _same(old, record) or was_live != live:
            changed.append(key)
            if old is None or old.state != record.state or was_live != live:
                event = "inventory.sim_seen" if live else "inventory.sim_absent"
                log.info(
                    event if s.live else "inventory.sim_listed",
                    sim=key, source=s.source, location=s.location, state=record.state,
                    phone=record.phone or None,
                )  # fmt: skip
        self._publish(changed)
        return record

    def gone(self, source: str, location: str) -> None:
        """Nothing usable is at ``location`` now: its SIM is absent (not live)."""
        key = self._at.get((source, location))
        if key is not None:
            self._publish(self._mark_absent(key, self._clock()))

    def sms(self, source: str, location: str, at: float) -> None:
        """An SMS arrived at ``location``."""
        key = self._at.get((source, location))
        record = self._records.get(key) if key is not None else None
        if key is None or record is None:
            return
        self._records[key] = replace(record, last_sms=at)
        self._dirty[key] = self._records[key]
        self._wake.set()
        self._publish([key])

    def _keep_fresh(self, key: str, fresh_for: float | None) -> None:
        """Live until ``fresh_for`` seconds from now (or a later deadline already given);
        ``None``: no deadline (not live, or a source that says when it is gone)."""
        old = self._fresh.pop(key, None)
        if old is not None:
            old[1].cancel()
        if fresh_for is None:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(0.0, fresh_for)
        if old is not None and old[0] > deadline:
            deadline = old[0]
        self._fresh[key] = (deadline, loop.call_at(deadline, self._stale, key))

    def _stale(self, key: str) -> None:
        """The evidence that kept ``key`` live has aged out with no new report."""
        self._fresh.pop(key, None)
        record = self._records.get(key)
        if record is None or key not in self._live:
            return
        log.warning(
            "inventory.sim_stale", sim=key, source=record.source, location=record.location,
            seen_ago=round(self._clock() - record.last_seen, 1),
        )  # fmt: skip
        self._publish(self._mark_absent(key, self._clock()))

    def _mark_absent(self, key: str, now: float) -> list[str]:
        fresh = self._fresh.pop(key, None)
        if fresh is not None:
            fresh[1].cancel()
        record = self._records.get(key)
        if record is None:
            return []
        was_live = key in self._live
        self._live.discard(key)
        if record.state == SimState.ABSENT.value and not was_live:
            return []
        self._records[key] = replace(record, state=SimState.ABSENT.value, last_seen=now)
        self._dirty[key] = self._records[key]
        self._wake.set()
        log.info("inventory.sim_absent", sim=key, source=record.source, location=record.location)
        return [key]

    # -- what others ask -----------------------------------------------------------------

    def discovered(self, iccid: str | None) -> tuple[str, str] | None:
        """The number the operator told for this ICCID in this or an earlier run, with its
        origin (``ussd`` or ``sms``); ``None`` when none is known."""
        record = self._records.get(iccid) if iccid else None
        if record is None or not record.phone or record.phone_origin not in DISCOVERED:
            return None
        return record.phone, record.phone_origin

    def records(self) -> list[LiveSim]:
        return [LiveSim(r, r.sim_key in self._live) for r in self._records.values()]

    def record(self, key: str) -> LiveSim | None:
        r = self._records.get(key)
        return LiveSim(r, key in self._live) if r is not None else None

    def live_count(self) -> int:
        return len(self._live)

    def on_change(self, callback: Callable[[list[LiveSim]], None]) -> None:
        """Call ``callback`` with every record now, then with each change (module docstring)."""
        self._listeners.append(callback)
        self._call(callback, self.records())

    def _publish(self, keys: Iterable[str]) -> None:
        unique = list(dict.fromkeys(keys))
        if not unique or not self._listeners:
            return
        batch = [LiveSim(self._records[k], k in self._live) for k in unique if k in self._records]
        for callback in list(self._listeners):
            self._call(callback, batch)

    @staticmethod
    def _call(callback: Callable[[list[LiveSim]], None], batch: list[LiveSim]) -> None:
        try:
            callback(batch)
        except Exception:
            log.exception("inventory.listener_failed")
