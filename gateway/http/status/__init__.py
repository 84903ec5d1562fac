"""The status page on http.listen: GET / (server-rendered HTML that works without JavaScript),
GET /status.json (what status.js polls), its script and style, and POST /login. Read-only;
with `http.status_token` set every page and its JSON need the token (HTTP basic with the token
as password, or the cookie the login form sets)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from importlib import resources
from typing import Any

import structlog
from aiohttp import BasicAuth, web

from gateway.auth import GuardedToken, Verdict, token_matches
from gateway.http.status.render import SORTS, login_page, page
from gateway.http.status.snapshot import STATES, SnapshotSources, build, port_details
from gateway.http.wire import json_response

__all__ = ["COOKIE", "CSP", "SnapshotSources", "StatusPage"]

log = structlog.get_logger(__name__)
COOKIE = "sms_gateway_status"
CACHE_FOR = 1.0  # seconds a snapshot is shared by every caller (a wall of screens costs one)
LOGIN_BODY = 4096
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}
_REALM = 'Basic realm="sms-gateway status", charset="UTF-8"'


_JSON = json.JSONEncoder(ensure_ascii=False)


def _safe_json(data: Any) -> bytes:
    """JSON with <, > and & written as \\u escapes: harmless even if pasted into HTML."""
    text = _JSON.encode(data)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026").encode()


def _static(name: str) -> bytes:
    return (resources.files(__package__) / "static" / name).read_bytes()


class StatusPage:
    def __init__(
        self,
        sources: SnapshotSources,
        *,
        token: str = "",
        guard: GuardedToken | None = None,
        monotonic: Any = time.monotonic,
    ) -> None:
        self._src = sources
        self._token = token
        # shared with /health and /v1/sims/discover: wrong tries anywhere lock the address out
        self._guard = guard if guard is not None else GuardedToken(token)
        # The cookie holds a digest of the token, not the token: a leaked cookie is no key.
        self._cookie = (
            hmac.new(token.encode(), b"sms-gateway status page", hashlib.sha256).hexdigest()
            if token
            else ""
        )
        self._monotonic = monotonic
        self._snap: dict[str, Any] | None = None
        self._encoded: tuple[dict[str, Any], bytes] | None = None  # a snapshot and its JSON
        self._snap_at = 0.0
        self._building: asyncio.Task[dict[str, Any]] | None = None
        self._js = _static("status.js")
        self._css = _static("status.css")

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/", self._get_page),
            web.get("/status.json", self._get_json),
            web.get("/status.js", self._get_js),
            web.get("/status.css", self._get_css),
            web.post("/login", self._post_login),
        ]

    # -- access --------------------------------------------------------------------------

    def _authorized(self, request: web.Request) -> Verdict:
        if not self._token:
            return Verdict.OK  # on loopback by default; set http.status_token to expose it
        if self._guard.locked(request.remote):
            return Verdict.LOCKED
        cookie = request.cookies.get(COOKIE)
        if cookie is not None:
            if token_matches(cookie, self._cookie):
                return Verdict.OK
            self._guard.wrong(request.remote)
        header = request.headers.get("Authorization", "")
        if header[:6].lower() == "basic ":
            try:
                given: str | None = BasicAuth.decode(header, encoding="utf-8").password
            except ValueError:
                given = None
            return self._guard.check(given, request.remote)
        return Verdict.REFUSED

    def _locked_out(self, *, html: bool) -> web.Response:
        """Too many wrong tokens from this address lately (gateway.auth.GuardedToken)."""
        text = GuardedToken.LOCKED_OUT
        headers = {**_HEADERS, "Retry-After": self._guard.retry_after}
        if html:
            return web.Response(text=text, status=429, content_type="text/plain", headers=headers)
        return json_response({"error": text}, status=429, headers=headers)

    def _refused(self, verdict: Verdict, *, html: bool) -> web.Response:
        if verdict is Verdict.LOCKED:
            return self._locked_out(html=html)
        if html:
            # The login form, without a Basic challenge: a browser would cover the form with
            # its own dialog. Basic works all the same when the client sends it unasked.
            return web.Response(
                text=login_page(failed=False),
                status=401,
                content_type="text/html",
                headers=_HEADERS,
            )
        headers = {**_HEADERS, "WWW-Authenticate": _REALM}
        return json_response(
            {"error": "the status page needs http.status_token: HTTP basic (any user) or /login"},
            status=401,
            headers=headers,
        )

    async def _post_login(self, request: web.Request) -> web.Response:
        if request.content_length is not None and request.content_length > LOGIN_BODY:
            raise web.HTTPRequestEntityTooLarge(
                max_size=LOGIN_BODY, actual_size=request.content_length
            )
        form = await request.post()
        given = form.get("token")
        verdict = self._guard.check(given if isinstance(given, str) else None, request.remote)
        if verdict is Verdict.LOCKED:
            return self._locked_out(html=True)
        if not self._token or verdict is not Verdict.OK:
            if self._token:
                log.warning("status_page.login_refused", remote=request.remote)
            return web.Response(
                text=login_page(failed=True), status=401, content_type="text/html", headers=_HEADERS
            )
        response = web.Response(status=303, headers={**_HEADERS, "Location": "/"})
        response.set_cookie(
            COOKIE,
            self._cookie,
            httponly=True,
            samesite="Strict",
            secure=request.secure,
            path="/",
        )
        return response

    # -- data ----------------------------------------------------------------------------

    async def snapshot(self) -> dict[str, Any]:
        """The page's data, built at most once per CACHE_FOR whoever asks; callers arriving
        during a build share it, and one that goes away does not cancel it."""
        if self._snap is not None and self._monotonic() - self._snap_at < CACHE_FOR:
            return self._snap
        if self._building is None or self._building.done():
            self._building = asyncio.create_task(self._build(), name="status_page.snapshot")
        return await asyncio.shield(self._building)

    async def _build(self) -> dict[str, Any]:
        snap = await build(self._src)
        self._snap, self._snap_at = snap, self._monotonic()
        return snap

    @staticmethod
    def _query(request: web.Request) -> dict[str, str]:
        q: dict[str, str] = {}
        state = request.query.get("state", "")
        if state in STATES:
            q["state"] = state
        sort = request.query.get("sort", "")
        if sort in SORTS:
            q["sort"] = sort
        port = request.query.get("port", "")
        if port and len(port) <= 300:
            q["port"] = port
        return q

    # -- routes --------------------------------------------------------------------------

    async def _get_page(self, request: web.Request) -> web.Response:
        if (verdict := self._authorized(request)) is not Verdict.OK:
            return self._refused(verdict, html=True)
        q = self._query(request)
        snap = await self.snapshot()
        details = await port_details(self._src, q["port"]) if "port" in q else None
        return web.Response(text=page(snap, q, details), content_type="text/html", headers=_HEADERS)

    async def _get_json(self, request: web.Request) -> web.Response:
        if (verdict := self._authorized(request)) is not Verdict.OK:
            return self._refused(verdict, html=False)
        q = self._query(request)
        snap = await self.snapshot()
        if "port" in q:
            body = _safe_json({**snap, "port": await port_details(self._src, q["port"])})
        else:  # encoded once per snapshot, not once per screen
            if self._encoded is None or self._encoded[0] is not snap:
                self._encoded = (snap, _safe_json(snap))
            body = self._encoded[1]
        return web.Response(
            body=body,
            content_type="application/json",
            charset="utf-8",
            headers=_HEADERS,
        )

    async def _get_js(self, request: web.Request) -> web.Response:
        return web.Response(
            body=self._js, content_type="text/javascript", charset="utf-8", headers=_HEADERS
        )

    async def _get_css(self, request: web.Request) -> web.Response:
        return web.Response(
            body=self._css, content_type="text/css", charset="utf-8", headers=_HEADERS
        )
