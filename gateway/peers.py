"""The gateway boxes configured as peers: Dinstar and Ejoin push routes, GoIP servers and Yeastar
clients, built from the config, started and stopped together, each with its own /health check,
each telling the SIM inventory (when given one) what it knows of its ports.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import structlog
from aiohttp import web

from gateway.config import Config
from gateway.errors import GatewayError, StoreError
from gateway.health import Check
from gateway.http.peers import PushEndpoint
from gateway.intake import Intake
from gateway.inventory.sims import Inventory
from gateway.metrics import Metrics
from gateway.sources import dinstar, ejoin
from gateway.sources.goip import GoipServer
from gateway.sources.sim_match import SimTable, phone_for
from gateway.sources.status import SourceStatus
from gateway.sources.yeastar import YeastarClient

__all__ = ["PeerSources"]

log = structlog.get_logger(__name__)


class PeerSources:
    """Every configured Dinstar, Ejoin, GoIP and Yeastar peer; the daemon adds ``routes()`` to its
    HTTP app, calls ``start()`` / ``stop()`` and registers ``check_functions()`` with /health."""

    def __init__(
        self,
        cfg: Config,
        intake: Intake,
        metrics: Metrics,
        *,
        clock: Callable[[], float] = time.time,
        inventory: Inventory | None = None,
        sims: SimTable | None = None,
    ) -> None:
        # `sims`: the daemon's table, which a SIGHUP replaces in place; every box reads it at
        # each lookup, so new [[sim]] entries apply to the next message.
        self._sims = sims if sims is not None else SimTable(cfg.sim)
        self._intake = intake
        self._clock = clock
        self._rejected = metrics.source_rejected
        self._up = metrics.source_up
        self._metrics = metrics
        self.endpoints: list[PushEndpoint] = []
        for kind, module, peers in (
            (dinstar.KIND, dinstar, cfg.dinstar),
            (ejoin.KIND, ejoin, cfg.ejoin),
        ):
            for i, peer in enumerate(peers):
                self.endpoints.append(
                    PushEndpoint(
                        kind,
                        peer,
                        parse=module.parse_push,
                        success=module.SUCCESS,
                        intake=intake,
                        sims=self._sims,
                        status=self._status(f"{kind}:{peer.name}", up=False),
                        clock=clock,
                        where=f"{kind}[{i}].allow",
                        ports=module.sightings,
                        inventory=inventory,
                    )
                )
        self.goip = [
            GoipServer(
                g,
                intake,
                self._sims,
                status=self._status(f"goip:{g.name}", up=True),
                clock=clock,
                inventory=inventory,
            )
            for g in cfg.goip
        ]
        self.yeastar = [
            YeastarClient(
                y,
                intake,
                self._sims,
                status=self._status(f"yeastar:{y.name}", up=True),
                clock=clock,
                inventory=inventory,
            )
            for y in cfg.yeastar
        ]

    def _status(self, source: str, *, up: bool) -> SourceStatus:
        self._metrics.received.labels(source)  # every configured source shows, even at 0
        self._metrics.duplicates.labels(source)
        return SourceStatus(
            source,
            clock=self._clock,
            rejected=self._rejected.labels(source),
            up=self._up.labels(source) if up else None,
        )

    def routes(self) -> list[web.RouteDef]:
        return [e.route() for e in self.endpoints]

    async def start(self) -> None:
        """Release what waited for a phone the config now gives, bind the GoIP ports, connect."""
        await self.release_held()
        started: list[GoipServer] = []
        for server in self.goip:
            try:
                await server.start()
            except OSError as e:
                for s in started:
                    await s.stop()
                raise GatewayError(
                    f"goip {server.cfg.name}: cannot listen on {server.cfg.listen}: {e.strerror}"
                ) from e
            started.append(server)
        for client in self.yeastar:
            await client.start()

    async def stop(self) -> None:
        for client in self.yeastar:
            await client.stop()
        for server in self.goip:
            await server.stop()

    def check_functions(self) -> dict[str, Callable[[], Check]]:
        """Name -> check, for ``Health.add_check``."""
        checks: dict[str, Callable[[], Check]] = {}
        for e in self.endpoints:
            checks[e.source] = e.status.check
        for g in self.goip:
            checks[g.source] = g.check
        for y in self.yeastar:
            checks[y.source] = y.check
        return checks

    def health_checks(self) -> dict[str, Check]:
        """Each source's check as of now."""
        return {name: fn() for name, fn in self.check_functions().items()}

    async def release_held(self) -> int:
        """Messages held for want of a phone go out once a ``[[sim]]`` names the source's one
        phone (at start, and after a SIGHUP replaced the table); how many went out. A source
        whose entries differ by port is left alone: which port a held message came from is not
        known here."""
        sims = self._sims
        released = 0
        targets: list[tuple[str, str | None]] = [(e.source, None) for e in self.endpoints]
        targets += [(y.source, None) for y in self.yeastar]
        targets += [(g.source, g.cfg.id) for g in self.goip]
        for source, port in targets:
            bare = source.split(":", 1)[1]
            if port is None and any(s.port for s in sims if s.source in (source, bare)):
                continue
            phone = phone_for(sims, source=source, port=port)
            if phone is None:
                continue
            try:
                released += len(await self._intake.release_held(source, phone))
            except StoreError as e:
                log.warning("peers.release_failed", source=source, error=str(e))
        return released
