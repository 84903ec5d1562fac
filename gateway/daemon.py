"""The daemon's supervisor: starts every part in order, watches them, stops them in reverse."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import signal
import threading
import time
from dataclasses import dataclass
from typing import Any

import structlog

from gateway import __version__, config
from gateway.activity import Activity
from gateway.auth import GuardedToken
from gateway.config import Config
from gateway.delivery import DeliveryWorker
from gateway.delivery.worker import default_rent_url
from gateway.errors import ConfigError, GatewayError, StoreError
from gateway.health import Health
from gateway.housekeeper import Housekeeper
from gateway.http import HttpServer
from gateway.http.guard import FD_RESERVE, connection_cap
from gateway.http.sims import sims_routes
from gateway.http.status import SnapshotSources, StatusPage
from gateway.intake import Intake
from gateway.inventory.sims import Inventory
from gateway.metrics import Metrics
from gateway.outbox import Outbox
from gateway.outbox.partner import PartnerBook
from gateway.partner.service import PartnerService
from gateway.peers import PeerSources
from gateway.sdnotify import Notifier
from gateway.sources.modem.bank import ModemBank
from gateway.sources.sim_match import SimTable
from gateway.sources.smpp import SmppSources

log = structlog.get_logger(__name__)
SHUTDOWN_BUDGET = 5.0  # seconds from SIGTERM to exit (CONTRACT section 2)
PUSH_GRACE = 3.5  # of which in-flight pushes may use this much
EXIT_MARGIN = 0.2  # the forced exit comes this much before the budget ends


def _exit_now(event: str, **fields: Any) -> None:
    """Leave at once, skipping every cleanup: the budget ran out or the operator insisted.
    Nothing is lost: the store's commits are durable, leases run out, the lock dies with us."""
    log.error(event, action="exiting now without finishing the shutdown", code=1, **fields)
    os._exit(1)


class StoreLocked(GatewayError):
    """Another daemon already runs on this store."""


@dataclass
class Components:
    """Everything the daemon runs, built by `build` and started by `Daemon.start`."""

    outbox: Outbox
    metrics: Metrics
    intake: Intake
    worker: DeliveryWorker
    housekeeper: Housekeeper
    health: Health
    http: HttpServer
    modems: ModemBank
    peers: PeerSources
    sims: SimTable  # the [[sim]] entries the boxes and SMPP read; a SIGHUP replaces them
    partner: PartnerService | None = None  # [partner] on: Onlinesim's calls on their listener
    activity: Activity | None = None  # the status page's last hour, sampled from the metrics
    inventory: Inventory | None = None  # every SIM the sources know (on with or without [partner])
    smpp: SmppSources | None = None  # [smpp_server] and [[smpp_client]] binds


def lock_store(path: str) -> int:
    """Hold an exclusive lock beside the store for the daemon's life: one daemon per store."""
    try:
        fd = os.open(f"{path}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as e:
        raise StoreError(
            f"{path}.lock: cannot create the lock file beside the store ({e.strerror}); "
            "check that store.path's directory exists and is writable by this user"
        ) from e
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise StoreLocked(f"{path}: another sms-gateway daemon is running on this store") from None
    return fd


def listener_cap(cfg: Config, *, event: str, max_connections: int, beside: int = 0) -> int:
    """A listener's `max_connections`, lowered so HTTP clients can never take the descriptors the
    store, the sources and the upstream client need: the cap is what is left of RLIMIT_NOFILE
    after those and after `beside` (the connections another listener may already hold).
    Logged as `event`, a warning when it had to be lowered."""
    sources = len(cfg.modem) + len(cfg.goip) + len(cfg.yeastar)
    reserve = FD_RESERVE + cfg.upstream.concurrency + 2 * sources + beside
    cap, nofile, open_now = connection_cap(max_connections, reserve=reserve)
    (log.info if cap == max_connections else log.warning)(
        event,
        max_connections=max_connections,
        cap=cap,
        open_files_limit=nofile,
        open_now=open_now,
        reserved=reserve,
    )
    return cap


def build(cfg: Config, outbox: Outbox) -> Components:
    """Wire every part to the open store; nothing starts here (no task, socket or port)."""
    metrics = Metrics()
    http_cap = listener_cap(
        cfg, event="http.connection_cap", max_connections=cfg.http.max_connections
    )
    partner = None
    if cfg.partner is not None:
        partner = PartnerService(
            cfg.partner,
            upstream_key=cfg.upstream.api_key,
            outbox=outbox,
            metrics=metrics,
            max_connections=listener_cap(
                cfg,
                event="partner.connection_cap",
                max_connections=cfg.partner.max_connections,
                beside=http_cap,  # the two listeners together stay within the limit
            ),
        )
    # [partner] on: delivery follows activations (the desk's), rent pushes to their own URL.
    intake = Intake(
        outbox,
        metrics,
        activation_for=partner.activation_for if partner is not None else None,
        push_without_activation=cfg.partner is not None and cfg.partner.push_without_activation,
    )
    rent_url = None
    if cfg.partner is not None:
        rent_url = cfg.partner.rent_push_url or default_rent_url(cfg.upstream.url)
    worker = DeliveryWorker(outbox, cfg.upstream, metrics, rent_url=rent_url)
    housekeeper = Housekeeper(
        outbox,
        intake,
        max_age=cfg.upstream.max_age,
        keep_finished=cfg.store.keep_finished,
        multipart_timeout=cfg.modems.multipart_timeout,
    )
    health = Health(outbox, worker, degraded_after=cfg.upstream.circuit_after, metrics=metrics)
    names = cfg.partner.names if cfg.partner is not None else {}
    inventory = Inventory(PartnerBook(outbox, read_mark=False), names=names)
    modems = ModemBank(intake, cfg, metrics, inventory=inventory)
    sims = SimTable(cfg.sim)
    peers = PeerSources(cfg, intake, metrics, inventory=inventory, sims=sims)
    if cfg.modem:
        health.add_check("modems", modems.health_check)
    for name, check in peers.check_functions().items():
        health.add_check(name, check)
    smpp = SmppSources(cfg, intake, metrics, sims=sims)
    for name, check in smpp.check_functions().items():
        health.add_check(name, check)
    if partner is not None:
        health.add_check("partner", partner.health_check)
        inventory.on_change(partner.on_inventory)
    activity = Activity(metrics)
    status_guard = GuardedToken(cfg.http.status_token)  # one lockout for every status door
    status_page = StatusPage(
        SnapshotSources(
            health=health,
            outbox=outbox,
            activity=activity,
            modems=modems.statuses,
            boxes=peers.health_checks,
            sims=lambda: [s.record for s in inventory.records() if s.live],
            partner=(lambda: partner.desk) if partner is not None else (lambda: None),
            show_text=cfg.http.status_show_text,
        ),
        token=cfg.http.status_token,
        guard=status_guard,
    )
    http = HttpServer(
        host=cfg.http.host,
        port=cfg.http.port,
        outbox=outbox,
        intake=intake,
        health=health,
        metrics=metrics,
        ingest_token=cfg.http.ingest_token,
        status_token=cfg.http.status_token,
        status_guard=status_guard,
        allow=cfg.http.allow,
        request_timeout=cfg.http.request_timeout,
        keepalive_timeout=cfg.http.keepalive_timeout,
        max_connections=http_cap,
        extra_routes=[
            *peers.routes(),
            *status_page.routes(),
            *sims_routes(modems.discover, cfg.http.status_token, status_guard),
        ],
    )
    return Components(
        outbox, metrics, intake, worker, housekeeper, health, http, modems, peers, sims,
        partner, activity, inventory, smpp,
    )  # fmt: skip


class Daemon:
    def __init__(self, cfg: Config, *, notifier: Notifier | None = None) -> None:
        self.cfg = cfg
        self.notifier = notifier or Notifier()
        self.parts: Components | None = None
        self._lock_fd: int | None = None
        self._stop = asyncio.Event()
        self._stop_signals = 0
        self._tasks: set[asyncio.Task[None]] = set()  # reloads: awaited or cancelled at stop
        self._budget: threading.Timer | None = None

    async def start(self) -> Components:
        """Lock the store, open it, build the parts and start them (input last)."""
        cfg = self.cfg
        self._lock_fd = lock_store(cfg.store.path)
        try:
            outbox = await Outbox.open(cfg.store.path, node=cfg.ids.node, nodes=cfg.ids.nodes)
        except BaseException:
            self._unlock()
            raise
        try:
            self.parts = parts = build(cfg, outbox)
        except BaseException:
            await outbox.close()
            self._unlock()
            raise
        try:
            await self._start_parts(parts)
        except BaseException:
            await self.stop()
            raise
        log.info(
            "daemon.started",
            version=__version__,
            store=cfg.store.path,
            upstream=cfg.upstream.url,
            listen=f"{cfg.http.host}:{parts.http.bound_port}",
        )
        return parts

    async def _start_parts(self, p: Components) -> None:
        await p.worker.start()
        if p.partner is not None:
            # After the store (the desk loads from it), before any input: intake asks the
            # desk's open activations about every SMS (a part flush by the housekeeper too).
            await p.partner.start()
        await p.housekeeper.start()
        if p.activity is not None:
            await p.activity.start()
        if p.inventory is not None:  # the last known SIMs (not live) before any source reports
            await p.inventory.start()
        p.modems.start()
        await p.peers.start()
        if p.smpp is not None:
            await p.smpp.start()
        try:
            await p.http.start()
        except OSError as e:
            raise GatewayError(
                f"http.listen: cannot listen on {self.cfg.http.listen}: {e.strerror or e}"
            ) from e

    def request_stop(self) -> None:
        self._stop.set()

    async def stop(self) -> None:
        """Stop input first, then delivery (in-flight pushes get PUSH_GRACE), then the store."""
        if self.parts is None:
            return
        p, self.parts = self.parts, None
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await p.http.stop_accepting()
        if p.partner is not None:  # no new call; those in flight are answered (1 s at most)
            await p.partner.stop()
        if p.smpp is not None:  # unbind; PDUs committing are answered first
            await p.smpp.stop()
        await p.peers.stop()
        await p.modems.stop()
        if p.inventory is not None:  # every SIM absent now; written before the store closes
            await p.inventory.stop()
        await p.worker.stop(grace=PUSH_GRACE)
        await p.housekeeper.stop()
        if p.activity is not None:
            await p.activity.stop()
        await p.http.stop()
        await p.outbox.close()
        self._unlock()
        log.info("daemon.stopped")

    def _unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    async def run(self) -> int:
        """Run until SIGTERM/SIGINT (exit 0) or until a vital part dies (exit 1). The stop
        takes SHUTDOWN_BUDGET at most: past it, or on a second SIGTERM/SIGINT, the process
        exits 1 at once, whatever part still hangs."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_signal, sig)
        loop.add_signal_handler(signal.SIGHUP, self._on_hangup)
        try:
            parts = await self.start()
            self.notifier.notify(READY="1", STATUS="delivering")
            code = await self._watch(parts)
            self.notifier.notify(STOPPING="1", STATUS="stopping")
            deadline = time.monotonic() + SHUTDOWN_BUDGET
            self._arm_budget()
            await self.stop()
            self._disarm_budget()
            log.info("daemon.exit", code=code, shutdown_left=round(deadline - time.monotonic(), 3))
            return code
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(sig)

    def _arm_budget(self) -> None:
        # A thread, not the event loop: it must fire even if a part blocks the loop.
        if self._budget is None:
            self._budget = threading.Timer(
                SHUTDOWN_BUDGET - EXIT_MARGIN, _exit_now, ("daemon.shutdown_overran",)
            )
            self._budget.daemon = True
            self._budget.start()

    def _disarm_budget(self) -> None:
        if self._budget is not None:
            self._budget.cancel()
            self._budget = None

    def _on_signal(self, sig: signal.Signals) -> None:
        self._stop_signals += 1
        if self._stop_signals > 1:
            _exit_now("daemon.forced_exit", signal=sig.name)
        log.info("daemon.stop_requested", signal=sig.name)
        self._stop.set()
        self._arm_budget()

    def _on_hangup(self) -> None:
        """SIGHUP: re-read the config; phone numbers ([[sim]] for every source, modem phone)
        take effect."""
        if self.parts is None:
            return
        try:
            fresh = config.load(self.cfg.source_path)
        except ConfigError as e:
            log.error("daemon.reload_refused", error=str(e), action="keeping the running config")
            return
        for warning in fresh.warnings:  # at start they go to stderr; a reload has only the log
            log.warning("config.warning", warning=warning)
        task = asyncio.create_task(self._apply_reload(fresh), name="reload")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _apply_reload(self, fresh: Config) -> None:
        """The new [[sim]] entries go in force for every source at once (the boxes and SMPP
        read the shared table at each lookup), then what they let go out is released: the
        boxes' held messages a whole-source entry now resolves, and the modems'."""
        parts = self.parts
        if parts is None:
            return
        parts.sims.replace(fresh.sim)
        try:
            released = await parts.peers.release_held()
            await parts.modems.reload(fresh)
        except Exception as e:
            # the [[sim]] entries are in force already: say so, the operator must not think
            # the old ones still are
            log.error("daemon.reload_failed", error=str(e), sims_applied=len(fresh.sim))
            return
        log.info(
            "daemon.reloaded",
            what="[[sim]] entries (every source) and modem phone numbers",
            sims=len(fresh.sim),
            released_from_boxes=released,
            restart_needed_for="everything else",
        )

    async def _watch(self, parts: Components) -> int:
        interval = self.notifier.watchdog_interval()
        tick = min(interval, 5.0) if interval else 5.0
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), tick)
            if not parts.worker.alive and not self._stop.is_set():
                log.error("daemon.worker_died", action="exiting so systemd restarts us")
                return 1
            if interval:
                self.notifier.notify(WATCHDOG="1", STATUS=await self._status_line(parts))
        return 0

    async def _status_line(self, parts: Components) -> str:
        try:
            queued = await parts.outbox.queued_count()
        except Exception as e:
            return f"store unreadable: {e}"
        up = parts.worker.status()
        return f"{queued} queued, upstream circuit {up.pacer.circuit.value}"


__all__ = ["Components", "Daemon", "StoreError", "StoreLocked", "build"]
