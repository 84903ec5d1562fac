"""A local stand-in for Onlinesim's PUSH_SMS endpoint, for trying a setup and for tests.

Behaves as the reference describes: 200 for a good push; 404 NO_OPERATION for a phone not
marked active; BAD_SERVICE for a listed sender; 429 TOO_MANY_ATTEMPTS when driven faster than
its rate; 401 ERROR_WRONG_KEY for a wrong key. Tests can also script answers one by one, and
benchmarks can make it flaky: `fail_ratio` of the requests (drawn at random) get `failure`, a 500.
"""

from __future__ import annotations

import asyncio
import collections
import json
import random
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import structlog
from aiohttp import web

log = structlog.get_logger(__name__)
PUSH_KEYS = ("smsId", "phoneFrom", "phone", "text", "action", "key")


@dataclass(frozen=True)
class Push:
    """One request as it arrived: raw bytes and headers, for byte-exact assertions.

    `at` is when it arrived; `status` what the client got (0: no answer, reset or gave up).
    """

    raw: bytes
    headers: dict[str, str]
    at: float
    status: int
    body: dict[str, Any] | None

    @property
    def sms_id(self) -> int | None:
        value = self.body.get("smsId") if self.body else None
        return value if isinstance(value, int) else None


@dataclass(frozen=True)
class Answer:
    """A scripted answer: a status and body, a delay first, or a connection reset."""

    status: int = 200
    body: str = '{"response": 1}'
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    reset: bool = False


class StandIn:
    def __init__(
        self,
        *,
        key: str | None = None,
        active_phones: Iterable[str] = (),
        bad_senders: Iterable[str] = (),
        rate_limit: float = 0.0,
        path: str = "/v1/PUSH_SMS",
        keep: int | None = None,
        fail_ratio: float = 0.0,
        rng: random.Random | None = None,
    ) -> None:
        if not 0.0 <= fail_ratio <= 1.0:
            raise ValueError(f"fail_ratio must be within 0..1, not {fail_ratio}")
        self.key = key
        self.active_phones = set(active_phones)
        self.bad_senders = {s.lower() for s in bad_senders}
        self.rate_limit = rate_limit
        self.path = path
        self.script: collections.deque[Answer] = collections.deque()
        self.default: Answer | None = None  # when set, every unscripted request gets it
        # A flaky upstream: this share of unscripted requests (drawn from `rng`, so a seeded one
        # repeats) gets `failure` instead of the normal answer. May be changed while running.
        self.fail_ratio = fail_ratio
        self.failure = Answer(500, '{"response": "INTERNAL_ERROR"}')
        self._rng = rng or random.Random()
        # Every push, or only the last `keep` (a long-running stand-in must not grow forever).
        self.pushes: collections.deque[Push] = collections.deque(maxlen=keep)
        self.received = 0
        self.peers: set[tuple[str, int]] = set()  # client (address, port): one per connection
        self._delivered_ids: set[int] = set()
        self.delivered_count = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self._recent: collections.deque[float] = collections.deque()
        self._changed = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.port = 0
        self.app = web.Application(client_max_size=1024 * 1024)
        self.app.router.add_post(path, self._push)
        self.app.router.add_get("/received", self._received)
        self.app.router.add_get("/stats", self._stats)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.path}"

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._runner = web.AppRunner(
            self.app, access_log=None, handle_signals=False, shutdown_timeout=0.5
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        try:
            await site.start()
        except OSError:
            await self._runner.cleanup()  # nothing is left half-open behind a busy port
            self._runner = None
            raise
        addresses = self._runner.addresses
        self.port = addresses[0][1] if addresses else port

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def delivered(self) -> list[Push]:
        return [p for p in self.pushes if p.status == 200]

    def delivered_ids(self) -> set[int]:
        return set(self._delivered_ids)

    async def wait_for(self, predicate: Any, timeout: float = 10.0) -> None:
        """Wait until predicate(self) is true, at most `timeout` seconds (no sleeping loops)."""
        async with asyncio.timeout(timeout):
            while not predicate(self):
                self._changed.clear()
                await self._changed.wait()

    async def _push(self, request: web.Request) -> web.StreamResponse:
        arrived = time.time()
        peer = request.transport.get_extra_info("peername") if request.transport else None
        if peer:
            self.peers.add((peer[0], peer[1]))
        raw = await request.read()
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        self._changed.set()
        try:
            answer, body = await self._answer(raw)
            if answer.delay:
                await asyncio.sleep(answer.delay)
            gone = request.transport is None or request.transport.is_closing()
            if answer.reset or gone:
                # Status 0: the client saw no answer (we reset it, or it gave up waiting).
                if request.transport is not None:
                    request.transport.abort()
                self._record(raw, request, arrived, 0, body)
                return web.Response(status=499)  # never reaches anyone
            self._record(raw, request, arrived, answer.status, body)
            return web.Response(
                status=answer.status,
                text=answer.body,
                headers=answer.headers,
                content_type="application/json" if answer.body.startswith("{") else "text/plain",
            )
        finally:
            self.in_flight -= 1

    def _record(
        self, raw: bytes, request: web.Request, arrived: float, status: int, body: Any
    ) -> None:
        push = Push(raw, dict(request.headers), arrived, status, body)
        self.pushes.append(push)
        self.received += 1
        if status == 200:
            self.delivered_count += 1
            if push.sms_id is not None:
                self._delivered_ids.add(push.sms_id)
        self._changed.set()
        if body and status:
            log.info(
                "standin.push",
                status=status,
                sms_id=body.get("smsId"),
                phone=body.get("phone"),
                phone_from=body.get("phoneFrom"),
            )

    async def _answer(self, raw: bytes) -> tuple[Answer, dict[str, Any] | None]:
        try:
            body = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            return Answer(400, '{"response": "ERROR_BAD_JSON"}'), None
        if not isinstance(body, dict):
            return Answer(400, '{"response": "ERROR_BAD_JSON"}'), None
        if self.script:
            return self.script.popleft(), body
        if self.fail_ratio > 0 and self._rng.random() < self.fail_ratio:
            return self.failure, body
        if self.default is not None:
            return self.default, body
        if sorted(body) != sorted(PUSH_KEYS) or body.get("action") != "PUSH_SMS":
            return Answer(400, '{"response": "ERROR_PARAMS"}'), body
        if self.key is not None and body.get("key") != self.key:
            return Answer(401, '{"response": "ERROR_WRONG_KEY"}'), body
        if self.rate_limit > 0 and self._too_fast():
            return Answer(429, '{"response": "TOO_MANY_ATTEMPTS"}', {"Retry-After": "1"}), body
        if str(body.get("phoneFrom", "")).lower() in self.bad_senders:
            return Answer(400, '{"response": "BAD_SERVICE"}'), body
        if self.active_phones and str(body.get("phone")) not in self.active_phones:
            return Answer(404, '{"response": "NO_OPERATION"}'), body
        return Answer(200, '{"response": 1}'), body

    def _too_fast(self) -> bool:
        now = time.monotonic()
        while self._recent and self._recent[0] < now - 1.0:
            self._recent.popleft()
        if len(self._recent) >= self.rate_limit:
            return True
        self._recent.append(now)
        return False

    async def _stats(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "received": self.received,
                "delivered": self.delivered_count,
                "distinct_delivered": len(self._delivered_ids),
                "max_in_flight": self.max_in_flight,
            }
        )

    async def _received(self, request: web.Request) -> web.Response:
        data = [
            {
                "status": p.status,
                "at": p.at,
                **{k: v for k, v in (p.body or {}).items() if k != "key"},
            }
            for p in list(self.pushes)[-1000:]
        ]
        return web.json_response(data, dumps=lambda d: json.dumps(d, ensure_ascii=False))
