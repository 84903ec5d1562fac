"""One ``[[modem]]`` port kept alive: open, start up, read every SMS into the outbox, delete it
from the SIM only once committed, and reopen (with backoff) whatever goes wrong.

The only code that writes to its port. Its state is published as a frozen :class:`ModemStatus`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import structlog
from tenacity import AsyncRetrying, RetryCallState, wait_exponential_jitter

from gateway.config import ModemConfig, ModemsConfig, NumberQueryConfig, SimConfig
from gateway.errors import DecodeError, StoreUnavailable
from gateway.intake import Intake
from gateway.inventory.sims import DISCOVERED, Inventory, Sighting, SimState
from gateway.metrics import Metrics
from gateway.outbox.models import Incoming
from gateway.sources.modem.answers import (
    parse_cmti,
    parse_creg_urc,
)
from gateway.sources.modem.channel import (
    AtChannel,
    AtError,
    AtTimeout,
    LinkClosed,
    Urc,
)
from gateway.sources.modem.discovery import Discovery, PendingAnswer, query_for
from gateway.sources.modem.keys import sim_identity
from gateway.sources.modem.phones import modem_source, resolve_phone_origin
from gateway.sources.modem.receiver import Receiver
from gateway.sources.modem.serial_link import LinkOpenError, open_serial_link
from gateway.sources.modem.session import Identity, Network, Session, SimNotReady, Storage
from gateway.sources.modem.ussd import parse_cusd
from gateway.tasks import cancel_and_wait

__all__ = ["NEARLY_FULL", "Modem", "ModemStatus"]

log = structlog.get_logger(__name__)
Clock = Callable[[], float]

NEARLY_FULL = 0.8  # SIM storage share that earns a warning
_CHECK_EVERY = 30.0  # signal, registration, storage (and proof of life) at least this often
_STORE_RETRY = 5.0  # rescan this soon after the store refused a commit
_HEALTHY_AFTER = 30.0  # a session that served this long starts the next backoff afresh


@dataclass(frozen=True)
class ModemStatus:
    """What operators see of one modem (``/health``, ``modems`` status)."""

    name: str
    port: str
    port_open: bool = False
    sim_ready: bool = False
    sim_state: str | None = None  # READY, SIM PIN, SIM PUK, NOT INSERTED...
    iccid: str | None = None
    imsi: str | None = None
    imei: str | None = None
    maker: str | None = None
    model: str | None = None
    phone: str | None = None  # resolved; None: messages are held until it is known
    phone_origin: str | None = None  # sim, config, cnum, phonebook, ussd or sms
    registered: bool = False
    registration: int | None = None  # +CREG stat
    operator: str | None = None
    signal_dbm: int | None = None
    storage_used: int | None = None
    storage_total: int | None = None
    last_sms_at: float | None = None
    last_error: str | None = None
    held_for_no_phone: bool = False

    @property
    def up(self) -> bool:
        return self.port_open and self.sim_ready

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class _Read:
    index: int


@dataclass(frozen=True)
class _Direct:
    pdu: str


@dataclass(frozen=True)
class _Scan:
    pass


@dataclass(frozen=True)
class _Restart:
    reason: str


@dataclass(frozen=True)
class _Discover:
    """Find the SIM's number (``sims discover``, or at start-up when nothing says it)."""

    waiter: asyncio.Future[Discovery] | None


@dataclass(frozen=True)
class _AskAgain:
    """The modem refused the USSD code as text: send it packed."""


@dataclass(frozen=True)
class _Found:
    outcome: Discovery


_Work = _Read | _Direct | _Scan | _Restart | _Discover | _AskAgain | _Found


class _ModemRestarted(Exception):
    """The modem announced a power-up on its own: its settings are gone, start over."""


class Modem:
    """One modem port; ``start()`` runs it in its own task until ``await stop()``."""

    def __init__(
        self,
        cfg: ModemConfig,
        settings: ModemsConfig,
        sims: Sequence[SimConfig],
        *,
        intake: Intake,
        metrics: Metrics | None = None,
        clock: Clock = time.time,
        inventory: Inventory | None = None,
        queries: Sequence[NumberQueryConfig] = (),
    ) -> None:
        self._cfg = cfg
        self._settings = settings
        self._sims = tuple(sims)
        self._inventory = inventory
        self._queries = tuple(queries)
        self._identified = False  # this session has read the SIM's identity
        self._discovered: dict[str, tuple[str, str]] = {}  # ICCID -> (number, ussd|sms)
        self._pending: PendingAnswer | None = None
        self._asked: set[str] = set()  # SIMs asked at start-up in this run (once each)
        self._intake = intake
        self._metrics = metrics
        self._clock = clock
        self._log = log.bind(modem=cfg.name)
        self._identity = Identity()
        self._status = ModemStatus(cfg.name, cfg.port)
        self._task: asyncio.Task[None] | None = None
        self._work: asyncio.Queue[_Work] = asyncio.Queue()
        self._storage_name: str | None = None
        self._rejected_pin: str | None = None
        self._released_for: str | None = None
        self._release_lock = asyncio.Lock()
        self._receiver = Receiver(
            intake,
            self.source,
            lambda: (self._sim(), self.phone),
            clock=clock,
            log=self._log,
            on_received=lambda: self._set(last_sms_at=self._clock()),
            on_late_phone=lambda: self._release_held(again=True),
            claim=self._claim_answer,
        )
        self._warned_used: int | None = None
        self._set(phone=self.phone, phone_origin=self.phone_origin)

    # -- public --------------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self._cfg.name

    @property
    def config(self) -> ModemConfig:
        return self._cfg

    @property
    def source(self) -> str:
        return modem_source(self._cfg)

    @property
    def phone(self) -> str | None:
        """The SIM's number from the config or the SIM, ``None`` while nothing says it."""
        found = self._resolved()
        return found[0] if found else None

    @property
    def phone_origin(self) -> str | None:
        found = self._resolved()
        return found[1] if found else None

    def _resolved(self) -> tuple[str, str] | None:
        i = self._identity
        return resolve_phone_origin(
            self._sims,
            self._cfg,
            iccid=i.iccid,
            imsi=i.imsi,
            cnum=i.cnum,
            phonebook=i.phonebook,
            discovered=self._discovered.get(i.iccid or ""),
        )

    def status(self) -> ModemStatus:
        return self._status

    def start(self) -> None:
        if self._task is not None:
            raise RuntimeError(f"modem {self.name} already started")
        self._task = asyncio.get_running_loop().create_task(
            self._supervise(), name=f"modem:{self.name}"
        )

    async def stop(self) -> None:
        """Close the port. A message committed but not yet deleted is re-read next time (and
        recognised as a duplicate)."""
        task, self._task = self._task, None
        try:
            if task is not None:
                await cancel_and_wait(task)  # one cancel suffices: nothing below swallows it
        finally:
            self._set(port_open=False, sim_ready=False)

    async def apply_config(self, cfg: ModemConfig, sims: Sequence[SimConfig]) -> None:
        """New ``phone`` / ``[[sim]]`` entries (SIGHUP); held messages go out once the phone
        becomes known. Port, baudrate and pin changes need a new Modem."""
        self._cfg = cfg
        self._sims = tuple(sims)
        self._set(
            phone=self.phone, phone_origin=self.phone_origin, held_for_no_phone=self._holding()
        )
        await self._release_held()

    # -- supervision ---------------------------------------------------------------------

    async def _supervise(self) -> None:
        try:
            await self._release_held()  # the phone may be known from the config alone
        except Exception:
            self._log.exception("modem.failed")
        while True:
            try:
                async for attempt in AsyncRetrying(wait=self._wait, before_sleep=self._reopening):
                    with attempt:
                        await self._session()
            except Exception:  # never reached while tenacity retries; a last guard
                self._log.exception("modem.failed")
                await asyncio.sleep(self._settings.reopen_max)

    def _wait(self, state: RetryCallState) -> float:
        failure = state.outcome.exception() if state.outcome is not None else None
        if isinstance(failure, SimNotReady):
            return self._settings.reopen_max  # a PIN or PUK problem: ask rarely
        strategy = wait_exponential_jitter(max=self._settings.reopen_max)
        return float(strategy(state))

    def _reopening(self, state: RetryCallState) -> None:
        delay = state.next_action.sleep if state.next_action is not None else None
        self._log.debug("modem.reopen_scheduled", attempt=state.attempt_number, delay=delay)

    async def _session(self) -> None:
        """Open, start up, serve until something breaks. Raises why it ended, except after a
        long healthy run (then the next backoff starts from the beginning)."""
        try:
            link = await open_serial_link(self._cfg.port, baudrate=self._cfg.baudrate)
        except LinkOpenError as exc:
            self._failure("modem.port_unavailable", exc, sim_state=None)
            raise
        channel = AtChannel(link, on_urc=self._on_urc)
        channel.start()
        self._work = asyncio.Queue()
        self._identified = False
        self._set(port_open=True)
        loop = asyncio.get_running_loop()
        serving_since: float | None = None
        try:
            session = Session(channel, timeout=self._settings.command_timeout)
            await self._start_up(session)
            serving_since = loop.time()
            await self._serve(session, channel)
        except Exception as exc:
            self._record(exc)
            if serving_since is None or loop.time() - serving_since < _HEALTHY_AFTER:
                raise
        finally:
            try:
                await channel.close()
            finally:
                self._identified = False
                self._set(port_open=False, sim_ready=False)

    def _record(self, exc: Exception) -> None:
        """Log why a session ended and show it in the status."""
        match exc:
            case AtTimeout():
                self._failure("modem.unresponsive", exc)
            case LinkClosed():
                self._failure("modem.port_lost", exc, sim_state=None)
            case SimNotReady():
                self._failure("modem.sim_not_ready", exc, sim_state=exc.state)
            case AtError():  # a command it must run (AT+CMGF=0...) was refused
                self._failure("modem.command_refused", exc)
            case _ModemRestarted():
                self._failure("modem.restarted", exc)
            case _:
                self._log.exception("modem.failed")
                self._set(last_error=f"{exc.__class__.__name__}: {exc}")

    def _failure(self, event: str, exc: BaseException, **fields: Any) -> None:
        error = str(exc)
        repeated = error == self._status.last_error
        (self._log.debug if repeated else self._log.warning)(event, error=error, **fields)
        self._set(last_error=error, **fields)

    # -- start-up ------------------------------------------------------------------------

    async def _start_up(self, session: Session) -> None:
        await session.wake()
        pin = "" if self._cfg.pin == self._rejected_pin else self._cfg.pin
        try:
            state = await session.unlock(pin)
        except SimNotReady as exc:
            if exc.pin_rejected:
                self._rejected_pin = self._cfg.pin
            elif exc.state == "SIM PIN" and self._cfg.pin and not pin:
                raise SimNotReady(
                    exc.state, "the SIM refused the configured pin before; fix pin and restart"
                ) from exc
            raise
        self._set(sim_state=state, sim_ready=True)
        self._log.info("modem.sim_ready", sim_state=state, pin_entered=bool(pin))
        storage, indications = await session.setup_sms()
        self._identity = await session.identify()
        self._remember_discovered(self._identity.iccid)
        self._identified = True
        network = await session.network()
        self._storage_name = storage.name if storage else None
        self._show(self._identity, network, storage)
        self._watch_storage(storage)
        self._log.info(
            "modem.identified",
            **self._identity.fields(),
            phone=self.phone,
            storage=self._storage_name,
            indications=indications,
            operator=network.operator,
            registered=network.registered,
            signal_dbm=network.signal_dbm,
        )
        if indications is None:
            self._log.warning("modem.indications_unavailable", relying_on="scans")
        if self.phone is None:
            self._log.warning(
                "modem.phone_unknown",
                iccid=self._identity.iccid,
                hint="messages are held; add a [[sim]] with this ICCID or set phone",
            )
            sim = self._sim()
            if sim not in self._asked and query_for(self._queries, self._identity.imsi):
                self._asked.add(sim)
                self._work.put_nowait(_Discover(None))  # ask the operator once per run
        self._set(last_error=None)
        await self._release_held()

    def _remember_discovered(self, iccid: str | None) -> None:
        """A number the operator gave for this ICCID before (this run, or one the inventory
        kept from an earlier run)."""
        if not iccid or iccid in self._discovered or self._inventory is None:
            return
        known = self._inventory.discovered(iccid)
        if known is not None:
            self._discovered[iccid] = known

    def _show(self, identity: Identity, network: Network | None, storage: Storage | None) -> None:
        changes: dict[str, Any] = {
            "iccid": identity.iccid,
            "imsi": identity.imsi,
            "imei": identity.imei,
            "maker": identity.maker,
            "model": identity.model,
            "phone": self.phone,
            "phone_origin": self.phone_origin,
            "held_for_no_phone": self._holding(),
        }
        if network is not None:
            changes.update(
                registered=network.registered,
                registration=network.stat,
                operator=network.operator,
                signal_dbm=network.signal_dbm,
            )
        if storage is not None:
            changes.update(storage_used=storage.used, storage_total=storage.total)
        self._set(**changes)

    # -- serving -------------------------------------------------------------------------

    async def _serve(self, session: Session, channel: AtChannel) -> None:
        loop = asyncio.get_running_loop()
        scan_every = self._settings.scan_interval
        check_every = min(scan_every, _CHECK_EVERY)
        closed = asyncio.ensure_future(channel.wait_closed())
        try:
            next_scan = loop.time()
            next_check = next_scan + check_every
            while True:
                now = loop.time()
                if now >= next_scan:
                    stored = await self._receiver.scan(session)
                    await self._check(session)
                    next_scan = now + (scan_every if stored else min(scan_every, _STORE_RETRY))
                    next_check = now + check_every
                    continue
                if now >= next_check:
                    await self._check(session)
                    next_check = now + check_every
                    continue
                work = await self._next_work(closed, min(next_scan, next_check) - now)
                if isinstance(work, _Scan):
                    next_scan = now
                elif isinstance(work, _Restart):
                    raise _ModemRestarted(work.reason)
                elif isinstance(work, _Read):
                    stored = await self._receiver.read(session, work.index)
                    if not stored:
                        next_scan = min(next_scan, now + min(scan_every, _STORE_RETRY))
                elif isinstance(work, _Direct):
                    await self._receiver.direct(session, work.pdu)
                elif isinstance(work, _Discover):
                    await self._start_discovery(session, work.waiter)
                elif isinstance(work, _AskAgain):
                    if self._pending is not None and not self._pending.done:
                        self._pending.packed = True
                        await self._ask(session, self._pending)
                elif isinstance(work, _Found):
                    await self._found(session, work.outcome)
        finally:
            await cancel_and_wait(closed)

    async def _next_work(self, closed: asyncio.Future[LinkClosed], timeout: float) -> _Work | None:
        """The next indication, ``None`` after ``timeout``; raises when the port is gone."""
        if not self._work.empty():
            return self._work.get_nowait()
        getter = asyncio.ensure_future(self._work.get())
        waiters: set[asyncio.Future[Any]] = {getter, closed}
        try:
            await asyncio.wait(
                waiters, timeout=max(0.0, timeout), return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            if not getter.done():
                getter.cancel()
        if getter.done() and not getter.cancelled():
            return getter.result()
        if closed.done():
            raise closed.result()
        return None

    async def _check(self, session: Session) -> None:
        """Signal, registration and storage use; the regular proof that the modem answers."""
        network = await session.network()
        storage = await session.storage(self._storage_name or "SM")
        self._show(self._identity, network, storage)
        self._watch_storage(storage)
        await self._release_held()

    def _watch_storage(self, storage: Storage | None) -> None:
        """Warn when the SIM fills up (messages we may not delete, a store that cannot commit),
        once per level reached: a full SIM makes the network hold back new SMS."""
        if storage is None or not storage.total:
            return
        if storage.fill < NEARLY_FULL:
            self._warned_used = None
        elif self._warned_used is None or storage.used > self._warned_used:
            self._warned_used = storage.used
            self._log.warning(
                "modem.storage_nearly_full",
                storage=storage.name,
                used=storage.used,
                total=storage.total,
            )

    # -- indications ---------------------------------------------------------------------

    def _on_urc(self, urc: Urc) -> None:
        name = urc.name.upper()
        if name in ("+CMTI", "+CDSI"):
            try:
                storage, index = parse_cmti(urc.args)
            except DecodeError:
                self._work.put_nowait(_Scan())
                return
            if self._storage_name is not None and storage != self._storage_name:
                self._log.info("modem.indication_other_storage", storage=storage, index=index)
                self._work.put_nowait(_Scan())
            else:
                self._work.put_nowait(_Read(index))
        elif name in ("+CMT", "+CDS"):
            self._work.put_nowait(_Direct(urc.pdu) if urc.pdu else _Scan())
        elif name in ("+CREG", "+CGREG"):
            with contextlib.suppress(DecodeError):
                stat = parse_creg_urc(urc.args)
                self._set(registration=stat, registered=stat in (1, 5))
        elif name == "RDY":
            self._work.put_nowait(_Restart("the modem powered up again (RDY)"))
        elif name == "+CUSD":
            self._on_cusd(f"+CUSD: {urc.args}")

    # -- own-number discovery ------------------------------------------------------------

    async def discover(self, timeout: float | None = None) -> Discovery:
        """Find this SIM's number now: what the SIM says (``AT+CNUM``, the own-number
        phonebook), else the operator's answer to its ``[[partner.number_query]]``. Runs in
        the modem's own task (the one writer of its port); waits ``timeout`` at most (default:
        the query's timeout plus a few commands)."""
        if not self._status.up:
            reason = self._status.last_error or "not open yet"
            return Discovery(None, None, f"the modem is not up: {reason}")
        waiter: asyncio.Future[Discovery] = asyncio.get_running_loop().create_future()
        self._work.put_nowait(_Discover(waiter))
        query = query_for(self._queries, self._identity.imsi)
        bound = timeout or (query.timeout if query else 0.0) + 6 * self._settings.command_timeout
        try:
            return await asyncio.wait_for(asyncio.shield(waiter), bound)
        except TimeoutError:
            return Discovery(None, None, f"no result within {bound:g}s")

    async def _start_discovery(
        self, session: Session, waiter: asyncio.Future[Discovery] | None
    ) -> None:
        pending = self._pending
        if pending is not None and not pending.done:  # one query at a time: wait for it
            if waiter is not None:
                _chain(pending.result, waiter)
            return
        cnum, phonebook = await session.own_number()
        self._identity = dataclasses.replace(self._identity, cnum=cnum, phonebook=phonebook)
        said = cnum or phonebook
        if said:
            origin = "cnum" if cnum else "phonebook"
            outcome = Discovery("".join(c for c in said if c.isdigit()), origin, "the SIM")
            await self._found(session, outcome)
            if waiter is not None and not waiter.done():
                waiter.set_result(outcome)
            return
        query = query_for(self._queries, self._identity.imsi)
        if query is None:
            outcome = Discovery(
                None,
                None,
                f"the SIM does not say its number and no [[partner.number_query]] matches its"
                f" network (IMSI {self._identity.imsi or 'unknown'})",
            )
            if waiter is not None and not waiter.done():
                waiter.set_result(outcome)
            return
        pending = PendingAnswer(query, packed=query.request == "packed")
        self._pending = pending
        if waiter is not None:
            _chain(pending.result, waiter)
        timer = asyncio.get_running_loop().call_later(query.timeout, pending.expire)
        work = self._work

        def resolved(result: asyncio.Future[Discovery]) -> None:
            timer.cancel()
            work.put_nowait(_Found(result.result()))

        pending.result.add_done_callback(resolved)
        self._log.info(
            "modem.number_query_sent", network=query.network, code=query.code, answer=query.answer
        )
        await self._ask(session, pending)

    async def _ask(self, session: Session, pending: PendingAnswer) -> None:
        try:
            answer = await session.send_ussd(pending.query.code, packed=pending.packed)
        except ValueError as exc:
            pending.finish(Discovery(None, None, str(exc)))
            return
        except AtError as exc:
            if not pending.packed and pending.query.request == "auto":
                pending.packed = True  # some modems take the code only GSM-7 packed
                await self._ask(session, pending)
                return
            pending.finish(Discovery(None, None, f"the modem refused the USSD request: {exc}"))
            return
        for line in answer.lines:
            if line.upper().startswith("+CUSD"):
                self._on_cusd(line)

    def _on_cusd(self, line: str) -> None:
        pending = self._pending
        if pending is None or pending.done:
            self._log.info("modem.ussd_unexpected", line=line[:200])
            return
        try:
            reply = parse_cusd(line)
        except DecodeError as exc:
            pending.finish(Discovery(None, None, f"unreadable USSD answer: {exc}"))
            return
        if pending.on_cusd(reply) == "retry_packed":
            self._work.put_nowait(_AskAgain())

    def _claim_answer(self, item: Incoming) -> Incoming | None:
        pending = self._pending
        return pending.claim(item) if pending is not None else None

    async def _found(self, session: Session, outcome: Discovery) -> None:
        if outcome.phone is None:
            self._log.warning("modem.number_not_found", detail=outcome.detail)
            return
        if outcome.origin in DISCOVERED and self._identity.iccid:
            assert outcome.origin is not None
            self._discovered[self._identity.iccid] = (outcome.phone, outcome.origin)
        self._log.info(
            "modem.number_found",
            number=outcome.phone,
            origin=outcome.origin,
            used=self.phone,
            used_origin=self.phone_origin,
        )
        self._set(
            phone=self.phone, phone_origin=self.phone_origin, held_for_no_phone=self._holding()
        )
        await self._release_held()

    # -- state ---------------------------------------------------------------------------

    def _sim(self) -> str:
        return sim_identity(self._identity.iccid, self._identity.imsi, self.name)

    def _holding(self) -> bool:
        return self.phone is None and self._status.sim_ready

    async def _release_held(self, *, again: bool = False) -> None:
        """Once per phone (or ``again``): messages held while no phone was known are queued."""
        phone = self.phone
        if phone is None or (phone == self._released_for and not again):
            return
        async with self._release_lock:
            if phone == self._released_for and not again:
                return
            try:
                released = await self._intake.release_held(self.source, phone)
            except StoreUnavailable as exc:
                self._log.warning("modem.release_failed", phone=phone, error=str(exc))
                return
            self._released_for = phone
        self._set(phone=phone, phone_origin=self.phone_origin, held_for_no_phone=False)
        if released:
            self._log.info(
                "modem.held_released", phone=phone, sms_ids=released, count=len(released)
            )

    def _set(self, **changes: Any) -> None:
        status = dataclasses.replace(self._status, **changes)
        self._status = status
        if self._metrics is not None:
            self._metrics.observe_modem(
                status.name,
                up=status.up,
                registered=status.registered,
                signal_dbm=status.signal_dbm if status.port_open else None,
                storage_used=status.storage_used,
                storage_total=status.storage_total,
            )
        if self._inventory is not None:
            self._report(status)

    def _report(self, status: ModemStatus) -> None:
        """Tell the inventory what this modem's SIM is now (a closed or restarting port: gone)."""
        assert self._inventory is not None
        sim_trouble = status.sim_state not in (None, "READY") and not status.sim_ready
        if not status.port_open or not (self._identified or sim_trouble):
            self._inventory.gone(self.source, self.name)
            return
        if sim_trouble:
            state = SimState.ABSENT if status.sim_state == "NOT INSERTED" else SimState.SIM_ERROR
        elif not status.registered:
            state = SimState.NOT_REGISTERED
        elif status.signal_dbm is None:
            state = SimState.NO_SIGNAL
        else:
            state = SimState.READY
        i = self._identity
        self._inventory.report(
            Sighting(
                source=self.source,
                location=self.name,
                state=state,
                iccid=i.iccid,
                imsi=i.imsi,
                phone=status.phone or "",
                phone_origin=status.phone_origin,
                signal=status.signal_dbm,
                network_name=status.operator or "",
                last_sms=status.last_sms_at,
            )
        )


def _chain(source: asyncio.Future[Discovery], target: asyncio.Future[Discovery]) -> None:
    """Resolve ``target`` with ``source``'s result once it has one."""

    def copy(done: asyncio.Future[Discovery]) -> None:
        if not target.done() and not done.cancelled():
            target.set_result(done.result())

    source.add_done_callback(copy)
