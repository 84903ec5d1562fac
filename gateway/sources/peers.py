"""The gateway boxes configured as peers: Dinstar and Ejoin push routes, GoIP servers and Yeastar
clients, built from the config, started and stopped together, each with its own /health check.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import structlog
from aiohttp import web
from prometheus_client import Counter, Gauge

from gateway.config import Config, HttpPeerConfig, SimConfig
from gateway.errors import ConfigError, DecodeError, GatewayError, StoreError
from gateway.health import Check
from gateway.http.app import bearer, json_response, read_json, token_matches
from gateway.intake import Intake
from gateway.metrics import Metrics
from gateway.outbox.models import Incoming
from gateway.sources import dinstar, ejoin
from gateway.sources.goip import GoipServer
from gateway.sources.sims import SourceStatus, phone_for
from gateway.sources.yeastar import YeastarClient

__all__ = ["PeerSources", "PushEndpoint"]

log = structlog.get_logger(__name__)
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class Parser(Protocol):
    def __call__(
        self, payload: Any, *, source: str, sims: Sequence[SimConfig], now: float
    ) -> list[Incoming]: ...


class PushEndpoint:
    """``POST /v1/inbound/<kind>/<name>``: address and token checked, the body parsed, every SMS
    committed, and only then the answer the device counts as success."""

    def __init__(
        self,
        kind: str,
        cfg: HttpPeerConfig,
        *,
        parse: Parser,
        success: dict[str, Any],
        intake: Intake,
        sims: Sequence[SimConfig],
        status: SourceStatus,
        clock: Callable[[], float] = time.time,
        where: str = "",
    ) -> None:
        self.kind = kind
        self.cfg = cfg
        self.source = f"{kind}:{cfg.name}"
        self.path = f"/v1/inbound/{kind}/{cfg.name}"
        self.status = status
        self._parse = parse
        self._success = success
        self._intake = intake
        self._sims = sims
        self._clock = clock
        self._allow = _networks(cfg.allow, where or f"{kind}.allow")

    def route(self) -> web.RouteDef:
        return web.post(self.path, self.handle)

    async def handle(self, request: web.Request) -> web.Response:
        if not self._allowed(request.remote):
            return self._refuse(request, 401, "address not allowed", "this address is not allowed")
        if not token_matches(request.query.get("token") or bearer(request), self.cfg.token):
            return self._refuse(request, 401, "missing or wrong token", "missing or wrong token")
        try:
            payload = await read_json(request)
        except web.HTTPException as e:
            self._rejected(request, e.text or e.reason)
            raise
        try:
            items = self._parse(payload, source=self.source, sims=self._sims, now=self._clock())
        except DecodeError as e:
            self._rejected(request, str(e))
            return json_response({"error": str(e)}, status=400)
        fresh = 0
        if items:
            try:
                accepted = await self._intake.accept(items)
            except StoreError as e:
                log.error(f"{self.kind}.store_unavailable", source=self.source, error=str(e))
                self.status.store_failed(str(e))
                return json_response(
                    {"error": "the store cannot commit; nothing was taken, try again"},
                    status=503,
                    headers={"Retry-After": "10"},
                )
            fresh = sum(1 for a in accepted if not a.duplicate)
        self.status.accepted(fresh)
        return json_response(self._success)

    def _allowed(self, remote: str | None) -> bool:
        if not self._allow:
            return True
        try:
            ip = ipaddress.ip_address(remote or "")
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip in net for net in self._allow)

    def _refuse(self, request: web.Request, status: int, reason: str, answer: str) -> web.Response:
        log.warning(f"{self.kind}.refused", source=self.source, reason=reason, peer=request.remote)
        self.status.rejected_input(reason)
        return json_response({"error": answer}, status=status)

    def _rejected(self, request: web.Request, reason: str) -> None:
        log.warning(
            f"{self.kind}.body_rejected", source=self.source, reason=reason, peer=request.remote
        )
        self.status.rejected_input(reason)


def _networks(entries: Sequence[str], where: str) -> list[Network]:
    networks = []
    for entry in entries:
        try:
            networks.append(ipaddress.ip_network(entry.strip(), strict=False))
        except ValueError:
            raise ConfigError(
                f"{where}: {entry!r} is not an IP address or network (e.g. 192.0.2.7 or "
                "192.0.2.0/24)"
            ) from None
    return networks


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
    ) -> None:
        self._cfg = cfg
        self._intake = intake
        self._clock = clock
        r = metrics.registry
        self._rejected = Counter(
            "sms_gateway_source_rejected",
            "Input a peer source sent that was refused (malformed, wrong token or password).",
            ["source"],
            registry=r,
        )
        self._up = Gauge(
            "sms_gateway_source_up",
            "1 while a connected peer (Yeastar TG logged in, GoIP keepalives) is there.",
            ["source"],
            registry=r,
        )
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
                        sims=cfg.sim,
                        status=self._status(f"{kind}:{peer.name}", up=False),
                        clock=clock,
                        where=f"{kind}[{i}].allow",
                    )
                )
        self.goip = [
            GoipServer(
                g, intake, cfg.sim, status=self._status(f"goip:{g.name}", up=True), clock=clock
            )
            for g in cfg.goip
        ]
        self.yeastar = [
            YeastarClient(
                y, intake, cfg.sim, status=self._status(f"yeastar:{y.name}", up=True), clock=clock
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
        await self._release_held()
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

    async def _release_held(self) -> None:
        """Messages held for want of a phone go out once a ``[[sim]]`` names the source's one
        phone. A source whose entries differ by port is left alone: which port a held message
        came from is not known here."""
        sims = self._cfg.sim
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
                await self._intake.release_held(source, phone)
            except StoreError as e:
                log.warning("peers.release_failed", source=source, error=str(e))
