"""aiohttp application: GET /health, GET /metrics, POST /v1/sms; sources add their own routes,
and so does the status page (`gateway.http.status`: GET /, /status.json, POST /login)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import Any

import structlog
from aiohttp import web

from gateway.auth import GuardedToken, Verdict, token_matches
from gateway.errors import StoreUnavailable
from gateway.fields import FieldError
from gateway.health import Health, Level
from gateway.http.guard import ConnectionGuard
from gateway.http.ingest import parse_body
from gateway.http.wire import MAX_BODY, bearer, json_response, read_json
from gateway.intake import Intake
from gateway.metrics import Metrics
from gateway.outbox import Accepted, Outbox

log = structlog.get_logger(__name__)
INGEST_SOURCE = "http"


class HttpServer:
    def __init__(
        self,
        *,
        host: str,
        port: int,
        outbox: Outbox,
        intake: Intake,
        health: Health,
        metrics: Metrics,
        ingest_token: str,
        status_token: str = "",
        status_guard: GuardedToken | None = None,
        allow: Sequence[str] = (),
        request_timeout: float = 10.0,
        keepalive_timeout: float = 15.0,
        max_connections: int = 256,
        extra_routes: Sequence[web.RouteDef] = (),
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._host, self._port = host, port
        self._outbox = outbox
        self._intake = intake
        self._health = health
        self._metrics = metrics
        self._token = ingest_token.encode("utf-8")
        # wrong status tokens lock an address out, here as on the status page (one guard)
        self._status_guard = (
            status_guard if status_guard is not None else GuardedToken(status_token)
        )
        self._clock = clock
        self._keepalive_timeout = keepalive_timeout
        self.guard = ConnectionGuard(
            allow=allow,
            max_connections=max_connections,
            request_timeout=request_timeout,
            keepalive_timeout=keepalive_timeout,
            max_body=MAX_BODY,
        )
        self.app = web.Application(client_max_size=MAX_BODY, middlewares=[self.guard.middleware()])
        self.app.router.add_get("/health", self._get_health)
        self.app.router.add_get("/metrics", self._get_metrics)
        if ingest_token:
            self.app.router.add_post("/v1/sms", self._post_sms)
        self.app.router.add_routes(extra_routes)  # sources' own endpoints (gateway boxes)
        self._runner: web.AppRunner | None = None
        self._listener: asyncio.Server | None = None
        self.bound_port: int | None = None

    async def start(self) -> None:
        self._runner = web.AppRunner(
            self.app,
            access_log=None,
            handle_signals=False,
            shutdown_timeout=0.5,
            keepalive_timeout=self._keepalive_timeout,
        )
        await self._runner.setup()
        # Our own listener instead of a TCPSite: aiohttp's server is a protocol factory, and
        # the guard wraps it (allow and the connection cap at accept time, request deadline).
        assert self._runner.server is not None
        self.guard.factory = self._runner.server
        loop = asyncio.get_running_loop()
        self._listener = await loop.create_server(
            self.guard, self._host, self._port, reuse_address=True
        )
        self.bound_port = self._listener.sockets[0].getsockname()[1]
        log.info("http.listening", host=self._host, port=self.bound_port)

    async def stop_accepting(self) -> None:
        """Close the listening socket first: no new input while the rest shuts down."""
        if self._listener is not None:
            self._listener.close()

    async def stop(self) -> None:
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _get_health(self, request: web.Request) -> web.Response:
        # SIM identities and anything else identifying only with the status token.
        # Monitoring never gets a 429: a wrong or locked-out token gets the partial view.
        full = self._status_guard.check(bearer(request), request.remote) is Verdict.OK
        level, body = await self._health.report(full=full)
        return json_response(body, status=503 if level is Level.FAILING else 200)

    async def _get_metrics(self, request: web.Request) -> web.Response:
        try:
            self._metrics.observe_store(await self._outbox.summary(), self._clock())
        except Exception as e:  # the store's trouble shows in /health; metrics still answer
            log.warning("metrics.store_unreadable", error=str(e))
        await self._health.store_writable()  # sets sms_gateway_store_writable (probe cached 5 s)
        body, content_type = self._metrics.exposition()
        return web.Response(body=body, headers={"Content-Type": content_type})

    async def _post_sms(self, request: web.Request) -> web.Response:
        if not token_matches(bearer(request), self._token):
            return json_response(
                {"error": "missing or wrong token; send Authorization: Bearer <ingest_token>"},
                status=401,
                headers={"WWW-Authenticate": "Bearer"},
            )
        payload = await read_json(request)
        try:
            parsed = parse_body(payload, source=INGEST_SOURCE, now=self._clock())
        except FieldError as e:
            return json_response({"error": str(e), "field": e.field}, status=400)
        try:
            accepted = await self._intake.accept(parsed.items)
        except StoreUnavailable as e:
            log.error("ingest.store_unavailable", error=str(e), count=len(parsed.items))
            return json_response(
                {"error": "the store cannot commit; nothing was taken, try again"},
                status=503,
                headers={"Retry-After": "10"},
            )
        status = 200 if all(a.duplicate for a in accepted) else 201
        if parsed.is_list:
            return json_response([_answer(a) for a in accepted], status=status)
        return json_response(_answer(accepted[0]), status=status)


def _answer(a: Accepted) -> dict[str, Any]:
    return {"smsId": a.sms_id, "duplicate": True} if a.duplicate else {"smsId": a.sms_id}
