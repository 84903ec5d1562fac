"""`POST /v1/sims/discover` on `http.listen`: own-number discovery on the running daemon's modems
(what `sms-gateway sims discover` asks while the daemon holds the ports).

Only with `http.status_token` set, and only with it (`Authorization: Bearer <token>`, compared
in constant time): discovery sends USSD codes on the operator's network. Body: `{"ports":
["m1", "/dev/ttyUSB0", ...]}` (modem names or ports; empty or absent: every modem). Answer:
`{"results": {"<modem>": {"phone", "origin", "detail"}}}` once every asked modem is done (each
waits its query's timeout at most).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from aiohttp import web

from gateway.auth import GuardedToken, Verdict
from gateway.http.wire import bearer, json_response, read_json
from gateway.sources.modem.discovery import Discovery

__all__ = ["DISCOVER_PATH", "sims_routes"]

DISCOVER_PATH = "/v1/sims/discover"
_MAX_PORTS = 256
_MAX_NAME = 256

Discover = Callable[[Sequence[str]], Awaitable[dict[str, Discovery]]]


def sims_routes(
    discover: Discover, status_token: str, guard: GuardedToken | None = None
) -> list[web.RouteDef]:
    """The discovery route, or none without a status token. `guard` (shared with the status
    page and /health) locks out an address after too many wrong tokens."""
    if not status_token:
        return []
    checked = guard if guard is not None else GuardedToken(status_token)

    async def post(request: web.Request) -> web.Response:
        verdict = checked.check(bearer(request), request.remote)
        if verdict is Verdict.LOCKED:
            return json_response(
                {"error": GuardedToken.LOCKED_OUT},
                429,
                headers={"Retry-After": checked.retry_after},
            )
        if verdict is not Verdict.OK:
            return json_response({"error": "Authorization: Bearer <http.status_token>"}, 401)
        body = await read_json(request) if request.can_read_body else {}
        ports = body.get("ports", []) if isinstance(body, dict) else None
        if (
            not isinstance(ports, list)
            or len(ports) > _MAX_PORTS
            or not all(isinstance(p, str) and 0 < len(p) <= _MAX_NAME for p in ports)
        ):
            return json_response(
                {"error": f"ports: expected a list of at most {_MAX_PORTS} modem names or ports"},
                400,
            )
        results = await discover(ports)
        return json_response({"results": {k: v.as_dict() for k, v in results.items()}})

    return [web.post(DISCOVER_PATH, post)]
