"""The partner side in the daemon: the desk loaded from the store, fed by the SIM inventory, and
Onlinesim's calls served on a listener of its own (`[partner] listen`), behind the same
connection guard as the main listener, with TLS when `tls_cert`/`tls_key` are set.

Start: the store's partner tables (activation id mark) → the desk loaded with every activation
and the ledger → the stale sweep → the listener. Stop: the listener stops accepting → calls in
flight finish (up to `grace`; a GET_NUMBER whose commit has begun is recorded even if cut) →
the sweep stops. The store closes after this, so every commit begun here lands.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Protocol

import structlog
from aiohttp import web

from gateway.config import PartnerConfig
from gateway.errors import ConfigError, GatewayError
from gateway.health import Check, Level
from gateway.http.guard import ConnectionGuard
from gateway.inventory.sims import SimState
from gateway.metrics import Metrics
from gateway.outbox import Outbox
from gateway.outbox.partner import Activation, PartnerBook, SimRecord
from gateway.partner.api import ApiLimits, CallStats, partner_app
from gateway.partner.desk import Desk, SimView
from gateway.tasks import cancel_and_wait

__all__ = [
    "QUIET_AFTER",
    "STOP_GRACE",
    "SWEEP_EVERY",
    "PartnerService",
    "local_address",
    "server_tls",
    "sim_view",
]

log = structlog.get_logger(__name__)

SWEEP_EVERY = 2.0  # seconds between looks for stale activations
# /health's partner check turns degraded when Onlinesim has not called for this long
# (GET_SERVICES comes every 2 minutes while the partner is connected).
QUIET_AFTER = 600.0
STOP_GRACE = 1.0  # calls in flight at stop get this long to be answered
KEEPALIVE = 15.0  # seconds an idle kept-alive partner connection is held


class LiveSim(Protocol):
    """What the inventory's `on_change` listeners get (`gateway.inventory.sims.LiveSim`)."""

    @property
    def record(self) -> SimRecord: ...

    @property
    def live(self) -> bool: ...


def server_tls(cfg: PartnerConfig) -> ssl.SSLContext | None:
    """The listener's TLS context from `tls_cert`/`tls_key`; None for plain HTTP."""
    if not cfg.tls_cert and not cfg.tls_key:
        return None
    if not (cfg.tls_cert and cfg.tls_key):
        raise ConfigError("partner.tls_cert and partner.tls_key: give both or neither")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cfg.tls_cert, cfg.tls_key)
    except (OSError, ssl.SSLError) as e:
        # The reason only: never the key file's contents.
        reason = getattr(e, "strerror", None) or getattr(e, "reason", None) or type(e).__name__
        raise ConfigError(
            f"partner.tls_cert/tls_key: cannot load {cfg.tls_cert} with {cfg.tls_key}: {reason}"
        ) from e
    return context


def local_address(listen: str) -> tuple[str, int]:
    """Where a process on this host reaches `[partner] listen` (a wildcard means loopback)."""
    host, _, port = listen.rpartition(":")
    host = host.strip("[]")
    if host in ("", "0.0.0.0"):  # noqa: S104 - a wildcard turned into loopback, not bound
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    return host, int(port)


class PartnerService:
    """Builds and runs the partner side; `start`/`stop_accepting`/`stop` from the daemon."""

    def __init__(
        self,
        cfg: PartnerConfig,
        *,
        upstream_key: str,
        outbox: Outbox,
        metrics: Metrics,
        max_connections: int,
        clock: Callable[[], float] = time.time,
        sweep_every: float = SWEEP_EVERY,
    ) -> None:
        self.cfg = cfg
        self._metrics = metrics
        self._clock = clock
        self._sweep_every = sweep_every
        self.book = PartnerBook(outbox)
        self.desk = Desk(
            store=self.book,
            services=cfg.services,
            cancel_retries=cfg.cancel_retries,
            activation_time=cfg.activation_time,
            rent_time=cfg.rent_period,
            stale_after=cfg.stale_after,
            clock=clock,
            on_closed=self._closed,
        )
        self.stats = CallStats(on_call=self._called)
        self.guard = ConnectionGuard(
            allow=cfg.allow,
            max_connections=max_connections,
            request_timeout=cfg.request_timeout,
            keepalive_timeout=KEEPALIVE,
            max_body=cfg.max_body,
            table="partner",
        )
        self.app = partner_app(
            self.desk,
            key=cfg.key or upstream_key,
            limits=ApiLimits(max_body=cfg.max_body, rate=cfg.rate, burst=max(1, int(2 * cfg.rate))),
            stats=self.stats,
            middlewares=[self.guard.middleware()],
        )
        self._runner: web.AppRunner | None = None
        self._listener: asyncio.Server | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._started_at: float | None = None
        self.bound_port: int | None = None

    # --- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        tls = server_tls(self.cfg)
        await self.book.start()
        self.desk.load(await self.book.activations(), await self.book.ledger())
        self._metrics.partner_on()
        self._metrics.partner_open.set(self.desk.open_count)
        self._sweeper = asyncio.create_task(self._sweep(), name="partner.sweep")
        self._runner = web.AppRunner(
            self.app,
            access_log=None,
            handle_signals=False,
            shutdown_timeout=STOP_GRACE,
            keepalive_timeout=KEEPALIVE,
        )
        await self._runner.setup()
        assert self._runner.server is not None
        self.guard.factory = self._runner.server
        host, port = _split_listen(self.cfg.listen)
        try:
            self._listener = await asyncio.get_running_loop().create_server(
                self.guard,
                host,
                port,
                reuse_address=True,
                ssl=tls,
                # The guard's deadline starts after the handshake; this bounds the handshake.
                ssl_handshake_timeout=self.cfg.request_timeout if tls else None,
            )
        except OSError as e:
            raise GatewayError(
                f"partner.listen: cannot listen on {self.cfg.listen}: {e.strerror or e}"
            ) from e
        self.bound_port = self._listener.sockets[0].getsockname()[1]
        self._started_at = self._clock()
        log.info(
            "partner.listening",
            host=host,
            port=self.bound_port,
            tls=tls is not None,
            services=list(self.cfg.services),
            open_activations=self.desk.open_count,
        )

    async def stop_accepting(self) -> None:
        """Close the listening socket: no new call while the rest shuts down."""
        if self._listener is not None:
            self._listener.close()

    async def stop(self) -> None:
        """Answer the calls in flight (up to STOP_GRACE), then stop the sweep."""
        await self.stop_accepting()
        self._listener = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        task, self._sweeper = self._sweeper, None
        if task is not None:
            await cancel_and_wait(task)

    @property
    def listening(self) -> bool:
        return self._listener is not None and self._listener.is_serving()

    # --- for the daemon's other parts ------------------------------------------------------

    def activation_for(self, phone: str) -> Activation | None:
        """The open activation on this number (digits), if any: what an SMS is pushed with."""
        return self.desk.open_activation_for(phone)

    def on_inventory(self, changed: Iterable[LiveSim]) -> None:
        """The inventory's `on_change` listener: its records, as the desk's SimViews."""
        self.sims_changed(sim_view(s) for s in changed)

    def sims_changed(self, changed: Iterable[SimView], removed: Iterable[str] = ()) -> None:
        """The inventory's news: SIMs new or changed, and keys of SIMs gone."""
        self.desk.update_sims(changed)
        for key in removed:
            self.desk.remove_sim(key)
        self._metrics.set_sims(
            Counter((s.country, s.operator, s.state.value) for s in self.desk.sims())
        )

    def health_check(self) -> Check:
        now = self._clock()
        last = self.stats.last_call_at
        quiet_since = last if last is not None else self._started_at
        stale = len(self.desk.stale_activations())
        level = Level.OK
        if quiet_since is not None and now - quiet_since > QUIET_AFTER:
            level = Level.DEGRADED
        if not self.listening:
            level = Level.FAILING
        return Check(
            level,
            {
                "listening": self.listening,
                "listen": self.cfg.listen,
                "last_call_age": round(now - last, 3) if last is not None else None,
                "last_method": self.stats.last_action,
                "open_activations": self.desk.open_count,
                "stale_activations": stale,
                "sims_usable": self.desk.usable_count,
            },
        )

    # --- inside ----------------------------------------------------------------------------

    def _called(self, method: str, answer: str, seconds: float) -> None:
        self._metrics.count_partner_call(method, answer, seconds)
        if self.stats.last_call_at is not None:
            self._metrics.partner_last_call.set(self.stats.last_call_at)
        self._metrics.partner_open.set(self.desk.open_count)

    def _closed(self, how: str) -> None:
        self._metrics.partner_finished.labels(how).inc()
        self._metrics.partner_open.set(self.desk.open_count)

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(self._sweep_every)
            try:
                await self.desk.sweep_stale()
            except Exception as e:  # the store's trouble shows on /health; try again later
                log.error("partner.sweep_failed", error=str(e))


def sim_view(sim: LiveSim) -> SimView:
    """One inventory record as the desk sees it (an unknown state is not ready)."""
    r = sim.record
    try:
        state = SimState(r.state)
    except ValueError:
        state = SimState.SIM_ERROR
    return SimView(r.sim_key, r.phone, r.country, r.operator, state, sim.live)


def _split_listen(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    return host.strip("[]"), int(port)
