"""A local stand-in for Onlinesim's PUSH_SMS endpoint, for trying a setup and for tests.

Behaves as the reference describes: 200 for a good push; 404 NO_OPERATION for a phone not
marked active; BAD_SERVICE for a listed sender; 429 TOO_MANY_ATTEMPTS when driven faster than
its rate; 401 ERROR_WRONG_KEY for a wrong key. Tests can also script answers one by one, and
benchmarks can make it flaky: `fail_ratio` of the requests (drawn at random) get `failure`, a 500.

Given `partner=PartnerPlay(url, key, ...)` it also plays Onlinesim's side of the partner
protocol against a partner server (the gateway's `[partner] listen`): GET_SERVICES on a
schedule (Onlinesim: every 2 minutes), GET_NUMBER on a schedule or on demand (`order()`,
`POST /order`), PUSH_SMS accepted only for numbers it ordered and has not finished (others get
the same 404 NO_OPERATION as a phone outside `active_phones`), and FINISH_ACTIVATION with 3 after
an SMS arrived, 4 when none came within `activation_time`. `GET /activations` shows its view,
`GET /services` the last GET_SERVICES answer.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import enum
import json
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import structlog
from aiohttp import web

log = structlog.get_logger(__name__)
PUSH_KEYS = ("smsId", "phoneFrom", "phone", "text", "action", "key")
RENT_PATH = "/pushSmsRent"


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


NO_OPERATION = Answer(404, '{"response": "NO_OPERATION"}')


@dataclass(frozen=True)
class PartnerPlay:
    """How the stand-in plays Onlinesim toward a partner server.

    `url` is the partner API's base (`http://127.0.0.1:8081`); the calls go to `/getServices`,
    `/getNumber` and `/finishActivation` under it, the key in the body as v1 sends it.
    """

    url: str
    key: str
    service: str | None = None  # what `order()` orders when not told; needed for order_interval
    country: str | None = None  # None: the country with most numbers for the service
    operator: str = "any"
    services_interval: float = 120.0  # GET_SERVICES this often (Onlinesim: 2 min); 0: on demand
    order_interval: float = 0.0  # one GET_NUMBER this often; 0: only on demand
    activation_time: float = 15 * 60.0  # FINISH 4 when no SMS came within this
    finish_after: float = 0.0  # FINISH 3 this long after the first SMS
    retry_interval: float = 10.0  # a FINISH not answered SUCCESS is sent again after this
    timeout: float = 10.0  # per call (Onlinesim gives the partner 10 s)

    def __post_init__(self) -> None:
        for name in ("services_interval", "order_interval", "finish_after"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be 0 or more")
        for name in ("activation_time", "retry_interval", "timeout"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be more than 0")
        if self.order_interval and not self.service:
            raise ValueError("order_interval needs a service to order")


class OrderState(enum.Enum):
    OPEN = "open"  # the number is ours: PUSH_SMS for it is accepted
    CLOSING = "closing"  # FINISH decided (`status`), not yet answered SUCCESS; still accepted
    FINISHED = "finished"  # PUSH_SMS for it gets NO_OPERATION


@dataclass
class Order:
    """The stand-in's view of one activation it ordered (changes as it goes)."""

    activation_id: int
    phone: str
    service: str
    country: str
    operator: str
    ordered_at: float  # wall clock
    ends_at: float  # the stand-in's clock: FINISH 4 then if no SMS came
    state: OrderState = OrderState.OPEN
    sms_ids: list[int] = field(default_factory=list)
    status: int | None = None  # the FINISH status decided: 3 sold, 4 cancelled
    finish_due: float = 0.0  # the stand-in's clock
    finish_attempts: int = 0
    finished_at: float | None = None  # wall clock, when the partner answered SUCCESS
    last_error: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "activationId": self.activation_id,
            "phone": self.phone,
            "service": self.service,
            "country": self.country,
            "operator": self.operator,
            "orderedAt": self.ordered_at,
            "state": self.state.value,
            "smsIds": list(self.sms_ids),
            "finishStatus": self.status,
            "finishAttempts": self.finish_attempts,
            "finishedAt": self.finished_at,
            "lastError": self.last_error,
        }


class PartnerError(Exception):
    """A partner call failed: no answer, not JSON, or an answer of the wrong shape."""


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
        partner: PartnerPlay | None = None,
        clock: Callable[[], float] = time.monotonic,
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
        # Rent SMS: the same body plus `service` (the gateway's default rent_push_url path).
        self.rent_path = RENT_PATH
        if path != RENT_PATH:  # a stand-in for the rent URL alone takes them on `path`
            self.app.router.add_post(RENT_PATH, self._push)
        self.app.router.add_get("/received", self._received)
        self.app.router.add_get("/stats", self._stats)
        # Onlinesim's side (only with `partner`): what it ordered, by activationId.
        self.partner = partner
        self.orders: dict[int, Order] = {}
        self._ordered: dict[str, Order] = {}  # phone -> its order not yet finished
        self.services_seen: collections.deque[tuple[float, dict[str, Any]]] = collections.deque(
            maxlen=100
        )  # (wall time, GET_SERVICES answer)
        self.no_numbers = 0  # GET_NUMBER answered NO_NUMBERS
        self.partner_errors: collections.deque[str] = collections.deque(maxlen=100)
        self.reused_numbers = 0  # GET_NUMBER gave a number with an order still open: a bug
        self._clock = clock
        self._wake = asyncio.Event()  # an order's FINISH time changed
        self._tasks: list[asyncio.Task[None]] = []
        self._client: aiohttp.ClientSession | None = None
        self.app.router.add_get("/activations", self._activations)
        self.app.router.add_post("/order", self._order)
        self.app.router.add_post("/activations/{id}/finish", self._finish_request)
        self.app.router.add_get("/services", self._services)
        self.app.router.add_post("/services", self._services)

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
        if self.partner is not None:
            self._play()

    def play(self, partner: PartnerPlay) -> None:
        """Start playing Onlinesim toward `partner` now (the partner server may start after
        this PUSH_SMS endpoint, whose URL it needs)."""
        if self.partner is not None:
            raise RuntimeError("the stand-in already plays a partner side")
        self.partner = partner
        if self._runner is not None:
            self._play()

    def _play(self) -> None:
        partner = self.partner
        assert partner is not None
        self._client = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=partner.timeout),
            headers={"User-Agent": "sms-gateway-stand-in (Onlinesim's side)"},
        )
        self._tasks.append(asyncio.create_task(self._finisher(), name="standin-finisher"))
        if partner.services_interval > 0:
            self._tasks.append(
                asyncio.create_task(self._services_loop(), name="standin-get-services")
            )
        if partner.order_interval > 0:
            self._tasks.append(asyncio.create_task(self._order_loop(), name="standin-orders"))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        if self._client is not None:
            await self._client.close()
            self._client = None
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
            answer, body = await self._answer(raw, rent=request.path == self.rent_path)
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

    async def _answer(self, raw: bytes, *, rent: bool) -> tuple[Answer, dict[str, Any] | None]:
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
        keys = (*PUSH_KEYS, "service") if rent else PUSH_KEYS
        if sorted(body) != sorted(keys) or body.get("action") != "PUSH_SMS":
            return Answer(400, '{"response": "ERROR_PARAMS"}'), body
        if self.key is not None and body.get("key") != self.key:
            return Answer(401, '{"response": "ERROR_WRONG_KEY"}'), body
        if self.rate_limit > 0 and self._too_fast():
            return Answer(429, '{"response": "TOO_MANY_ATTEMPTS"}', {"Retry-After": "1"}), body
        if str(body.get("phoneFrom", "")).lower() in self.bad_senders:
            return Answer(400, '{"response": "BAD_SERVICE"}'), body
        phone = str(body.get("phone"))
        if self.partner is not None:
            order = self._ordered.get("".join(c for c in phone if c.isdigit()))
            if order is not None:
                self._sms_for(order, body.get("smsId"))
                return Answer(200, '{"response": 1}'), body
            if phone not in self.active_phones:  # those stay active as without `partner`
                return NO_OPERATION, body
        if self.active_phones and phone not in self.active_phones:
            return NO_OPERATION, body
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

    # --- Onlinesim's side (with `partner`) ----------------------------------------------------

    def _settings(self) -> PartnerPlay:
        if self.partner is None or self._client is None:
            raise PartnerError("the stand-in plays no partner side (no partner URL), or is stopped")
        return self.partner

    async def _call(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        settings = self._settings()
        assert self._client is not None
        url = settings.url.rstrip("/") + path
        try:
            async with self._client.post(url, json={**body, "key": settings.key}) as r:
                raw = await r.read()
                status = r.status
        except (aiohttp.ClientError, TimeoutError) as e:
            raise self._failed(f"{path}: {type(e).__name__}: {e}") from e
        try:
            answer = json.loads(raw)
        except ValueError:
            raise self._failed(f"{path}: HTTP {status}, not JSON: {raw[:200]!r}") from None
        if not isinstance(answer, dict):
            raise self._failed(f"{path}: HTTP {status}, not a JSON object: {raw[:200]!r}")
        if status != 200:
            raise self._failed(f"{path}: HTTP {status} {answer.get('error', answer)}")
        return answer

    def _failed(self, problem: str) -> PartnerError:
        self.partner_errors.append(problem)
        log.warning("standin.partner_call_failed", problem=problem)
        self._changed.set()
        return PartnerError(problem)

    async def get_services(self) -> dict[str, Any]:
        """GET_SERVICES now; the answer is also kept in `services_seen`."""
        answer = await self._call("/getServices", {"action": "GET_SERVICES"})
        if answer.get("status") != "SUCCESS" or not isinstance(answer.get("countryList"), list):
            raise self._failed(f"/getServices: unexpected answer {answer}")
        self.services_seen.append((time.time(), answer))
        self._changed.set()
        return answer

    @staticmethod
    def count(answer: dict[str, Any], service: str, country: str | None = None) -> int:
        """Numbers offered for `service` in a GET_SERVICES answer (`any` operator), in one
        country or all of them."""
        total = 0
        for entry in answer.get("countryList", []):
            if country is None or entry.get("country") == country:
                value = entry.get("operatorMap", {}).get("any", {}).get(service, 0)
                total += value if isinstance(value, int) else 0
        return total

    async def order(
        self, service: str | None = None, country: str | None = None, operator: str | None = None
    ) -> Order | None:
        """GET_NUMBER now; the new order, or None for NO_NUMBERS.

        Without a country it takes the one with most numbers for the service in the last
        GET_SERVICES answer (asking for one first if none was seen).
        """
        settings = self._settings()
        service = service or settings.service
        if not service:
            raise PartnerError("which service to order? (--order SERVICE, or say it)")
        operator = operator or settings.operator
        country = country or settings.country
        if country is None:
            if not self.services_seen:
                await self.get_services()
            answer = self.services_seen[-1][1]
            best = max(
                answer["countryList"],
                key=lambda c: self.count({"countryList": [c]}, service),
                default=None,
            )
            if best is None or not self.count({"countryList": [best]}, service):
                self.no_numbers += 1
                self._changed.set()
                return None  # nobody offers it: nothing to ask
            country = str(best.get("country"))
        answer = await self._call(
            "/getNumber",
            {"action": "GET_NUMBER", "country": country, "operator": operator,
             "service": service, "sum": 10, "exceptionPhoneSet": []},
        )  # fmt: skip
        if answer.get("status") == "NO_NUMBERS":
            self.no_numbers += 1
            self._changed.set()
            return None
        number, activation_id = answer.get("number"), answer.get("activationId")
        if (
            answer.get("status") != "SUCCESS"
            or not isinstance(number, int)
            or not isinstance(activation_id, int)
            or activation_id < 1
            or isinstance(number, bool)
        ):
            raise self._failed(f"/getNumber: unexpected answer {answer}")
        phone = str(number)
        if phone in self._ordered or activation_id in self.orders:
            self.reused_numbers += 1
            log.error("standin.number_reused", phone=phone, activation_id=activation_id)
        order = Order(
            activation_id,
            phone,
            service,
            country,
            operator,
            ordered_at=time.time(),
            ends_at=self._clock() + settings.activation_time,
        )
        self.orders[activation_id] = order
        self._ordered[phone] = order
        log.info("standin.ordered", activation_id=activation_id, phone=phone, service=service)
        self._wake.set()
        self._changed.set()
        return order

    def finish(self, activation_id: int, status: int) -> Order:
        """Finish an open order with `status` now (as a client closing it early would)."""
        order = self.orders[activation_id]
        if order.state is OrderState.OPEN:
            order.state, order.status = OrderState.CLOSING, status
        order.finish_due = self._clock()
        self._wake.set()
        return order

    def _sms_for(self, order: Order, sms_id: Any) -> None:
        order.sms_ids.append(sms_id if isinstance(sms_id, int) else 0)
        if order.state is OrderState.OPEN:  # the first SMS: sold
            order.state, order.status = OrderState.CLOSING, 3
            after = self.partner.finish_after if self.partner else 0.0
            order.finish_due = self._clock() + after
            self._wake.set()

    def _due(self, order: Order) -> float:
        return order.ends_at if order.state is OrderState.OPEN else order.finish_due

    async def _finisher(self) -> None:
        """Sends every FINISH when it is due: 3 after an SMS, 4 at the end without one."""
        while True:
            self._wake.clear()
            now = self._clock()
            waiting = [o for o in self._ordered.values() if o.state is not OrderState.FINISHED]
            for order in [o for o in waiting if self._due(o) <= now]:
                await self._send_finish(order)
            pending = [self._due(o) for o in self._ordered.values()]
            timeout = max(0.0, min(pending) - self._clock()) if pending else None
            # asyncio.timeout, not wait_for: 3.11's wait_for can swallow a cancel that comes
            # as the event is set, and stop() would wait for ever.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._wake.wait()

    async def _send_finish(self, order: Order) -> None:
        settings = self._settings()
        if order.state is OrderState.OPEN:  # its time ran out without an SMS
            order.state, order.status = OrderState.CLOSING, 4
        order.finish_attempts += 1
        try:
            answer = await self._call(
                "/finishActivation",
                {"action": "FINISH_ACTIVATION", "activationId": order.activation_id,
                 "status": order.status},
            )  # fmt: skip
            if answer.get("status") != "SUCCESS":
                raise self._failed(f"/finishActivation: unexpected answer {answer}")
        except PartnerError as e:
            order.last_error = str(e)
            order.finish_due = self._clock() + settings.retry_interval
            self._changed.set()
            return
        order.state, order.finished_at, order.last_error = OrderState.FINISHED, time.time(), None
        if self._ordered.get(order.phone) is order:
            del self._ordered[order.phone]
        log.info(
            "standin.finished",
            activation_id=order.activation_id,
            phone=order.phone,
            status=order.status,
            sms=len(order.sms_ids),
        )
        self._changed.set()

    async def _services_loop(self) -> None:
        settings = self._settings()
        while True:
            with contextlib.suppress(PartnerError):
                await self.get_services()
            await asyncio.sleep(settings.services_interval)

    async def _order_loop(self) -> None:
        settings = self._settings()
        while True:
            with contextlib.suppress(PartnerError):
                await self.order()
            await asyncio.sleep(settings.order_interval)

    # --- its HTTP control endpoints -----------------------------------------------------------

    async def _activations(self, request: web.Request) -> web.Response:
        orders = [o.as_json() for o in self.orders.values()]
        return web.json_response(
            {
                "partner": self.partner.url if self.partner else None,
                "open": sum(1 for o in self.orders.values() if o.state is not OrderState.FINISHED),
                "noNumbers": self.no_numbers,
                "reusedNumbers": self.reused_numbers,
                "errors": list(self.partner_errors)[-10:],
                "activations": orders[-1000:],
            }
        )

    async def _order(self, request: web.Request) -> web.Response:
        raw = await request.read()
        try:
            asked = json.loads(raw) if raw.strip() else {}
        except ValueError:
            asked = None
        if not isinstance(asked, dict) or not all(
            isinstance(asked.get(k), str | None) for k in ("service", "country", "operator")
        ):
            return web.json_response(
                {"error": "body: a JSON object with optional string service, country, operator"},
                status=400,
            )
        try:
            order = await self.order(
                asked.get("service"), asked.get("country"), asked.get("operator")
            )
        except PartnerError as e:
            return web.json_response({"error": str(e)}, status=502)
        if order is None:
            return web.json_response({"status": "NO_NUMBERS"})
        return web.json_response(order.as_json())

    async def _finish_request(self, request: web.Request) -> web.Response:
        try:
            activation_id = int(request.match_info["id"])
            status = int((await request.json()).get("status", 4))
        except (ValueError, AttributeError, TypeError):
            return web.json_response({"error": 'body: {"status": 1|3|4|5}'}, status=400)
        if activation_id not in self.orders or status not in (1, 3, 4, 5):
            return web.json_response({"error": "no such order, or status not 1/3/4/5"}, status=404)
        return web.json_response(self.finish(activation_id, status).as_json())

    async def _services(self, request: web.Request) -> web.Response:
        if request.method == "POST":
            try:
                await self.get_services()
            except PartnerError as e:
                return web.json_response({"error": str(e)}, status=502)
        at, answer = self.services_seen[-1] if self.services_seen else (None, None)
        return web.json_response({"at": at, "answer": answer})
