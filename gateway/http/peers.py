"""``POST /v1/inbound/<kind>/<name>``: the route a gateway box (Dinstar, Ejoin) pushes received
SMS to. The box's format parser turns the body into messages; this is the HTTP around it."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import structlog
from aiohttp import web

from gateway.auth import Network, address_allowed, parse_networks, token_matches
from gateway.config import HttpPeerConfig, SimConfig
from gateway.errors import ConfigError, DecodeError, StoreError
from gateway.fields import FieldError
from gateway.http.wire import bearer, json_response, read_json
from gateway.intake import Intake
from gateway.inventory.sims import Inventory, Sighting
from gateway.outbox.models import Incoming
from gateway.sources.status import SourceStatus

__all__ = ["Parser", "PortParser", "PushEndpoint"]

log = structlog.get_logger(__name__)


class Parser(Protocol):
    def __call__(
        self, payload: Any, *, source: str, sims: Sequence[SimConfig], now: float
    ) -> list[Incoming]: ...


class PortParser(Protocol):
    """The ports a push names, for the SIM inventory (``dinstar.sightings``)."""

    def __call__(
        self, payload: Any, *, source: str, sims: Sequence[SimConfig], now: float
    ) -> list[Sighting]: ...


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
        ports: PortParser | None = None,
        inventory: Inventory | None = None,
    ) -> None:
        self.kind = kind
        self.cfg = cfg
        self.source = f"{kind}:{cfg.name}"
        self.path = f"/v1/inbound/{kind}/{cfg.name}"
        self.status = status
        self._parse = parse
        self._success = success
        self._intake = intake
        self._sims = sims  # read at each lookup: the daemon's SimTable, replaced on SIGHUP
        self._clock = clock
        self._allow = _networks(cfg.allow, where or f"{kind}.allow")
        self._ports = ports
        self._inventory = inventory

    def route(self) -> web.RouteDef:
        return web.post(self.path, self.handle)

    async def handle(self, request: web.Request) -> web.Response:
        if not address_allowed(self._allow, request.remote):
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
        except FieldError as e:
            return self._bad_field(request, e)
        except DecodeError as e:
            self._rejected(request, str(e))
            return json_response({"error": str(e)}, status=400)
        fresh = 0
        if items:
            try:
                accepted = await self._intake.accept(items)
            except FieldError as e:  # a rule the format parser left to the accept path
                return self._bad_field(request, e)
            except StoreError as e:
                log.error(f"{self.kind}.store_unavailable", source=self.source, error=str(e))
                self.status.store_failed(str(e))
                return json_response(
                    {"error": "the store cannot commit; nothing was taken, try again"},
                    status=503,
                    headers={"Retry-After": "10"},
                )
            fresh = sum(1 for a in accepted if not a.duplicate)
        self._list_ports(payload)  # after the commit; a push without SMS (Ejoin status) too
        self.status.accepted(fresh)
        return json_response(self._success)

    def _list_ports(self, payload: Any) -> None:
        """Every SMS in the push is committed (or it carried none): tell the inventory what the
        push says of the box's ports (``ports``: the ports SMS came in on, not live; for Ejoin
        also its status pushes, live)."""
        if self._ports is None or self._inventory is None:
            return
        for sighting in self._ports(
            payload, source=self.source, sims=self._sims, now=self._clock()
        ):
            self._inventory.report(sighting)

    def _refuse(self, request: web.Request, status: int, reason: str, answer: str) -> web.Response:
        log.warning(f"{self.kind}.refused", source=self.source, reason=reason, peer=request.remote)
        self.status.rejected_input(reason)
        return json_response({"error": answer}, status=status)

    def _bad_field(self, request: web.Request, e: FieldError) -> web.Response:
        self._rejected(request, str(e))
        return json_response({"error": str(e), "field": e.field}, status=400)

    def _rejected(self, request: web.Request, reason: str) -> None:
        log.warning(
            f"{self.kind}.body_rejected", source=self.source, reason=reason, peer=request.remote
        )
        self.status.rejected_input(reason)


def _networks(entries: Sequence[str], where: str) -> tuple[Network, ...]:
    try:
        return parse_networks(entries)
    except ValueError:
        bad = next(e for e in entries if not _is_network(e))
        raise ConfigError(
            f"{where}: {bad!r} is not an IP address or network (e.g. 192.0.2.7 or 192.0.2.0/24)"
        ) from None


def _is_network(entry: str) -> bool:
    try:
        parse_networks([entry])
    except ValueError:
        return False
    return True
