"""The partner API: Onlinesim's calls over HTTP, on a listener of its own that faces the internet.

Every request is assumed hostile: a per-address rate limit comes first, then a bounded body
(gzip accepted, inflated in bounded steps by aiohttp and capped after inflation), then JSON,
then the key, checked in constant time wherever the docs allow it (body `key`,
`Authorization: Bearer`, `?apikey=`). Anything malformed gets `{"status": "ERROR", "error": ...}`
naming the field; nothing here answers 500 for bad input.
"""

from __future__ import annotations

import hmac
import json
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog
from aiohttp import web
from aiohttp.typedefs import Middleware

from gateway.errors import StoreUnavailable
from gateway.partner.desk import Desk
from gateway.partner.requests import (
    Action,
    BadRequest,
    FinishActivation,
    GetNumber,
    GetServices,
    parse_request,
)

__all__ = ["ApiLimits", "CallStats", "partner_app"]

log = structlog.get_logger(__name__)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# URL -> (the action it names, rent form)
_ROUTES: dict[str, tuple[Action | None, bool]] = {
    "/": (None, False),
    "/getServices": (Action.GET_SERVICES, False),
    "/getNumber": (Action.GET_NUMBER, False),
    "/finishActivation": (Action.FINISH_ACTIVATION, False),
    "/getServicesRent": (Action.GET_SERVICES, True),
    "/getNumberRent": (Action.GET_NUMBER, True),
    "/finishActivationRent": (Action.FINISH_ACTIVATION, True),
}


@dataclass(frozen=True)
class ApiLimits:
    max_body: int = 64 * 1024  # after gzip inflation
    rate: float = 20.0  # requests per second per source address, sustained
    burst: int = 40


@dataclass
class CallStats:
    """What /health and metrics read: the last authenticated call from Onlinesim.

    `on_call(method, answer, seconds)` hears of every call. `method` is the action
    (`GET_NUMBER`, with `_RENT` for the rent forms; `UNKNOWN` before the action is known);
    `answer` is one of a fixed few: the answer's status (`SUCCESS`, `NO_NUMBERS`, `ERROR`),
    else `NO_ACTIVATION`, `NO_KEY`, `WRONG_KEY`, `BAD_REQUEST`, `TOO_LARGE`, `RATE_LIMITED`,
    `STORE_UNAVAILABLE`.
    """

    last_call_at: float | None = None
    last_action: str | None = None
    on_call: Callable[[str, str, float], None] | None = None  # (method, answer, seconds)


@dataclass
class _Bucket:
    tokens: float
    stamp: float


@dataclass
class _RateLimit:
    limits: ApiLimits
    clock: Callable[[], float]
    buckets: dict[str, _Bucket] = field(default_factory=dict)

    def allow(self, peer: str) -> bool:
        now = self.clock()
        if len(self.buckets) > 10_000:  # a spray of addresses must not grow this without end
            self.buckets = {k: b for k, b in self.buckets.items() if now - b.stamp < 60}
        b = self.buckets.get(peer)
        if b is None:
            b = self.buckets[peer] = _Bucket(float(self.limits.burst), now)
        b.tokens = min(float(self.limits.burst), b.tokens + (now - b.stamp) * self.limits.rate)
        b.stamp = now
        if b.tokens < 1.0:
            return False
        b.tokens -= 1.0
        return True


def _error(status: int, error: str, **headers: str) -> web.Response:
    return web.json_response({"status": "ERROR", "error": error}, status=status, headers=headers)


def _key_matches(given: str, key: bytes) -> bool:
    return hmac.compare_digest(given.encode("utf-8", "surrogateescape"), key)


def partner_app(
    desk: Desk,
    *,
    key: str,
    limits: ApiLimits | None = None,
    stats: CallStats | None = None,
    clock: Callable[[], float] = time.monotonic,
    middlewares: Sequence[Middleware] = (),
) -> web.Application:
    """The aiohttp application; the caller runs it on `[partner] listen` (behind the
    connection guard, whose middleware comes in `middlewares`)."""
    limits = limits or ApiLimits()
    stats = stats or CallStats()
    key_bytes = key.encode()
    rate = _RateLimit(limits, clock)

    async def handle(request: web.Request) -> web.StreamResponse:
        started = time.perf_counter()
        default, rent = _ROUTES[request.path]
        method = _method(default, rent)
        peer = request.remote or "?"

        def refuse(status: int, error: str, answer: str, **headers: str) -> web.Response:
            _count(stats, method, answer, started)
            return _error(status, error, **headers)

        if not rate.allow(peer):
            return refuse(429, "RATE_LIMITED", "RATE_LIMITED", **{"Retry-After": "1"})
        try:
            raw = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return refuse(413, f"body over {limits.max_body} bytes", "TOO_LARGE")
        try:
            body = json.loads(raw) if raw else {}
        except (ValueError, RecursionError):
            return refuse(400, "body: not valid UTF-8 JSON", "BAD_REQUEST")
        given = _given_keys(request, body)
        if not given:
            return refuse(401, "ERROR_NO_KEY", "NO_KEY")
        if not all(_key_matches(g, key_bytes) for g in given):
            log.warning("partner.wrong_key", peer=peer, path=request.path)
            return refuse(401, "ERROR_WRONG_KEY", "WRONG_KEY")
        try:
            call = parse_request(body, default=default, rent=rent)
            method = _method(_ACTIONS[type(call)], call.rent)
            answer = await _answer(desk, call)
        except BadRequest as e:
            return refuse(400, str(e), "BAD_REQUEST")
        except StoreUnavailable:
            return refuse(503, "STORE_UNAVAILABLE", "STORE_UNAVAILABLE", **{"Retry-After": "1"})
        stats.last_call_at = time.time()
        stats.last_action = method
        status = str(answer.get("status"))
        _count(stats, method, answer.get("error", status) if status == "ERROR" else status, started)
        response = web.json_response(answer)
        if "gzip" in request.headers.get("Accept-Encoding", ""):
            response.enable_compression()
        return response

    async def not_allowed(request: web.Request) -> web.Response:
        return _error(405, "use POST", Allow="POST")

    @web.middleware
    async def too_large(request: web.Request, handler: Handler) -> web.StreamResponse:
        # The guard's middleware reads the body before the handler: a body (or an inflated
        # gzip body) over the limit is refused there, and gets the documented answer here.
        try:
            return await handler(request)
        except web.HTTPRequestEntityTooLarge:
            _count(stats, _method(*_ROUTES.get(request.path, (None, False))), "TOO_LARGE", 0.0)
            return _error(413, f"body over {limits.max_body} bytes")

    app = web.Application(client_max_size=limits.max_body, middlewares=[too_large, *middlewares])
    for path in _ROUTES:
        app.router.add_post(path, handle)
        app.router.add_get(path, not_allowed)
    return app


_ACTIONS: dict[type, Action] = {
    GetServices: Action.GET_SERVICES,
    GetNumber: Action.GET_NUMBER,
    FinishActivation: Action.FINISH_ACTIVATION,
}


def _method(action: Action | None, rent: bool) -> str:
    if action is None:
        return "UNKNOWN"
    return f"{action.value}_RENT" if rent else action.value


async def _answer(desk: Desk, call: GetServices | GetNumber | FinishActivation) -> dict[str, Any]:
    match call:
        case GetServices():
            return desk.get_services(call)
        case GetNumber():
            return await desk.get_number(call)
        case FinishActivation():
            return await desk.finish(call)


def _given_keys(request: web.Request, body: Any) -> list[str]:
    keys: list[str] = []
    if isinstance(body, dict) and "key" in body:
        given = body["key"]
        keys.append(given if isinstance(given, str) else "")  # a non-string key is wrong
    auth = request.headers.get("Authorization", "")
    if auth[:7].lower() == "bearer ":
        keys.append(auth[7:].strip())
    if "apikey" in request.query:
        keys.append(request.query["apikey"])
    return keys


def _count(stats: CallStats, action: str, answer: str, started: float) -> None:
    if stats.on_call is not None:
        stats.on_call(action, answer, time.perf_counter() - started)
