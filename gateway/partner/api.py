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
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import structlog
from aiohttp import web

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
    """What /health and metrics read: the last authenticated call from Onlinesim."""

    last_call_at: float | None = None
    last_action: str | None = None
    on_call: Callable[[str, str, float], None] | None = None  # (action, answer, seconds)


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
) -> web.Application:
    """The aiohttp application; the caller runs it on `[partner] listen`."""
    limits = limits or ApiLimits()
    stats = stats or CallStats()
    key_bytes = key.encode()
    rate = _RateLimit(limits, clock)

    async def handle(request: web.Request) -> web.StreamResponse:
        started = time.perf_counter()
        default, rent = _ROUTES[request.path]
        peer = request.remote or "?"
        if not rate.allow(peer):
            return _error(429, "RATE_LIMITED", **{"Retry-After": "1"})
        try:
            raw = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return _error(413, f"body over {limits.max_body} bytes")
        try:
            body = json.loads(raw) if raw else {}
        except (ValueError, RecursionError):
            return _error(400, "body: not valid UTF-8 JSON")
        given = _given_keys(request, body)
        if not given:
            return _error(401, "ERROR_NO_KEY")
        if not all(_key_matches(g, key_bytes) for g in given):
            log.warning("partner.wrong_key", peer=peer, path=request.path)
            return _error(401, "ERROR_WRONG_KEY")
        action = "?"
        try:
            call = parse_request(body, default=default, rent=rent)
            action = type(call).__name__
            answer = await _answer(desk, call)
        except BadRequest as e:
            _count(stats, action, "ERROR", started)
            return _error(400, str(e))
        except StoreUnavailable:
            _count(stats, action, "ERROR", started)
            return _error(503, "STORE_UNAVAILABLE", **{"Retry-After": "1"})
        stats.last_call_at = time.time()
        stats.last_action = action
        _count(stats, action, str(answer.get("status")), started)
        response = web.json_response(answer)
        if "gzip" in request.headers.get("Accept-Encoding", ""):
            response.enable_compression()
        return response

    async def not_allowed(request: web.Request) -> web.Response:
        return _error(405, "use POST", Allow="POST")

    app = web.Application(client_max_size=limits.max_body)
    for path in _ROUTES:
        app.router.add_post(path, handle)
        app.router.add_get(path, not_allowed)
    return app


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
