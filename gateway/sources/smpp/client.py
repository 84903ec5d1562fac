"""The ESME side: one `[[smpp_client]]` bind to an SMSC that sends MO as deliver_sm, each
answered after its commit; reconnects with backoff, rebinds after an unbind or a nack storm."""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Callable

import structlog
from tenacity import AsyncRetrying, retry_if_exception_type, wait_exponential_jitter

from gateway.config import SmppClientConfig
from gateway.health import Check, Level
from gateway.metrics import Metrics
from gateway.tasks import cancel_and_wait

from .counters import BindCounters
from .inbound import Inbound, PeerRules
from .pdu import Bind, Command, FrameError, Status, bind_body, encode, read_pdu
from .session import BindStatus, Link

__all__ = ["SmppClient"]

# A bound session shorter than this counts as a failed attempt, so an SMSC that unbinds or
# drops every session at once is retried with the growing backoff, not in a tight loop.
STEADY = 10.0

log = structlog.get_logger(__name__)


class _NotBound(Exception):
    """A connection or bind attempt failed: try again after the backoff."""


class SmppClient:
    def __init__(
        self,
        cfg: SmppClientConfig,
        inbound: Inbound,
        metrics: Metrics,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.cfg = cfg
        self.source = f"smpp-client:{cfg.name}"
        self._inbound = inbound
        self._metrics = metrics
        self._clock = clock
        self.status = BindStatus(self.source, f"{cfg.host}:{cfg.port}")
        # One client is one connection: its bind label is its name.
        self.counters = BindCounters(metrics, self.source, cfg.name)
        self.counters.watch(self.status)
        self._task: asyncio.Task[None] | None = None
        self._link: Link | None = None
        self._stopping = False
        self._seq = 0
        self.binds = 0  # sessions bound since start
        metrics.smpp_binds.labels(self.source).set(0)
        metrics.received.labels(self.source)
        metrics.duplicates.labels(self.source)

    def _next_seq(self) -> int:
        self._seq = self._seq % 0x7FFFFFFF + 1
        return self._seq

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        self._stopping = True
        if self._link is not None:
            await self._link.close(timeout=2.0)
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), 5)
            except TimeoutError:
                await cancel_and_wait(self._task)

    async def _run(self) -> None:
        while not self._stopping:
            retrying = AsyncRetrying(
                wait=wait_exponential_jitter(multiplier=0.2, max=self.cfg.reconnect_max),
                retry=retry_if_exception_type(_NotBound),
                reraise=True,
            )
            try:
                async for attempt in retrying:
                    with attempt:
                        if self._stopping:
                            return
                        started = time.monotonic()
                        await self._session()  # returns after a bound session ended
                        if not self._stopping and time.monotonic() - started < STEADY:
                            raise _NotBound
            except _NotBound:  # pragma: no cover - the retry never stops
                return
            except Exception as e:  # a bug must not end the client for good, silently
                log.exception("smpp.client_failed", source=self.source)
                self.status.state = "closed"
                self.status.error(f"internal error: {type(e).__name__}")
                self.counters.error("internal")
                await asyncio.sleep(min(self.cfg.reconnect_max, 5.0))

    async def _session(self) -> None:
        cfg = self.cfg
        self.status.state = "connecting"
        try:
            context = ssl.create_default_context() if cfg.tls else None
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(cfg.host, cfg.port, ssl=context), cfg.response_timeout
            )
        except (OSError, TimeoutError) as e:
            self._failed("connect", f"connect: {e}")
            raise _NotBound from e
        command = Command.BIND_TRANSCEIVER if cfg.bind == "transceiver" else Command.BIND_RECEIVER
        bind = Bind(
            command, cfg.system_id, cfg.password, cfg.system_type, address_range=cfg.address_range
        )
        seq = self._next_seq()
        writer.write(encode(command, seq, 0, bind_body(bind)))
        try:
            header, _ = await asyncio.wait_for(read_pdu(reader), cfg.response_timeout)
        except (OSError, TimeoutError, asyncio.IncompleteReadError, FrameError) as e:
            writer.close()
            self._failed("connect", f"no bind_resp: {type(e).__name__}")
            raise _NotBound from e
        if header.command_id != command | 0x80000000 or header.status != Status.ROK:
            writer.close()
            self._failed("bind_refused", f"bind refused: status {header.status:#x}")
            raise _NotBound
        link = Link(
            reader,
            writer,
            rules=PeerRules(self.source, cfg.alphabet, retransmit_window=cfg.retransmit_window),
            inbound=self._inbound,
            status=self.status,
            counters=self.counters,
            window=cfg.window,
            enquire_every=cfg.enquire_link,
            response_timeout=cfg.response_timeout,
            takes=frozenset({Command.DELIVER_SM, Command.DATA_SM}),
            next_seq=self._next_seq,
            clock=self._clock,
        )
        self._link = link
        self.binds += 1
        self.status.state = "bound"
        self.status.bound_at = self._clock()
        self._metrics.smpp_binds.labels(self.source).set(1)
        log.info("smpp.bound", source=self.source, bind=cfg.name, mode=cfg.bind)
        try:
            reason = await link.run()
        finally:
            self._link = None
            self.status.state = "closed"
            self._metrics.smpp_binds.labels(self.source).set(0)
        # an unbind is polite; silence was counted as "silent" already
        expected = ("unbound", "unbound by peer", "no answer to enquire_link")
        if not self._stopping and reason not in expected:
            self.status.error(f"session ended: {reason}")
            self.counters.error("session_lost")
        log.info("smpp.unbound", source=self.source, bind=cfg.name, reason=reason)

    def _failed(self, kind: str, what: str) -> None:
        self.status.state = "closed"
        self.status.error(what)
        self.counters.error(kind)
        log.warning("smpp.client_failed", source=self.source, error=what)

    def check(self) -> Check:
        level = Level.OK if self.status.state == "bound" else Level.DEGRADED
        return Check(level, {"bind": self.cfg.name, **self.status.details(), "binds": self.binds})
