"""The status page over a real socket: its HTML and JSON from a real store, metrics and health;
the token, escaping of hostile strings, message texts kept back, the no-JS filter and sort."""

from __future__ import annotations

import base64
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from hypothesis import given
from hypothesis import strategies as st

from gateway import config
from gateway.activity import Activity
from gateway.delivery import DeliveryWorker
from gateway.health import Health
from gateway.http.status import COOKIE, CSP, SnapshotSources, StatusPage
from gateway.http.status.snapshot import bars, shown
from gateway.intake import Intake
from gateway.metrics import Metrics
from gateway.outbox import Hold, Incoming, Outbox, Outcome
from gateway.outbox.partner import Activation
from gateway.partner.desk import Desk, SimState, SimView
from gateway.sources.modem.device import ModemStatus

API_KEY = "status-page-test-API-KEY-0123456789"
TOKEN = "status-page-token-abcdefghijkl"
HOSTILE = '<script>alert("x")</script>\'"&\u202egnp.exe\u200f\x00'
SECRET_TEXT = "SECRET-TEXT-4711 your code"
PHONE = "79001234567"

MODEMS = [
    ModemStatus(
        "m-ready",
        "/dev/ttyUSB0",
        port_open=True,
        sim_ready=True,
        sim_state="READY",
        iccid="8970101234567890123",
        phone=PHONE,
        registered=True,
        operator=HOSTILE,
        signal_dbm=-71,
        storage_used=24,
        storage_total=30,
        last_sms_at=time.time() - 30,
        last_error=HOSTILE,
    ),
    ModemStatus("m-unplugged", "/dev/ttyUSB1", last_error="port gone: [Errno 2]"),
    ModemStatus("m-resetting", "/dev/ttyUSB2"),
    ModemStatus("m-simerr", "/dev/ttyUSB3", port_open=True, sim_state="SIM PIN"),
    ModemStatus("m-unreg", "/dev/ttyUSB4", port_open=True, sim_ready=True, sim_state="READY"),
    ModemStatus(
        "m-nosignal",
        "/dev/ttyUSB5",
        port_open=True,
        sim_ready=True,
        sim_state="READY",
        registered=True,
    ),
]


@dataclass
class Parts:
    outbox: Outbox
    metrics: Metrics
    intake: Intake
    activity: Activity
    health: Health
    modems: list[ModemStatus] = field(default_factory=lambda: list(MODEMS))
    desk: Desk | None = None


@pytest.fixture
async def parts(tmp_path: Path) -> AsyncIterator[Parts]:
    cfg = config.parse({"upstream": {"url": "http://127.0.0.1:9/push", "api_key": API_KEY}})
    outbox = await Outbox.open(str(tmp_path / "outbox.sqlite3"), node=0, nodes=1)
    metrics = Metrics()
    intake = Intake(outbox, metrics)
    worker = DeliveryWorker(outbox, cfg.upstream, metrics)
    health = Health(outbox, worker, degraded_after=5)
    try:
        yield Parts(outbox, metrics, intake, Activity(metrics), health)
    finally:
        await outbox.close()


Client = Callable[..., Awaitable[TestClient[Any, Any]]]


async def page_client(
    aiohttp_client: Any, parts: Parts, *, token: str = "", show_text: bool = False
) -> TestClient[Any, Any]:
    page = StatusPage(
        SnapshotSources(
            health=parts.health,
            outbox=parts.outbox,
            activity=parts.activity,
            modems=lambda: parts.modems,
            partner=lambda: parts.desk,
            show_text=show_text,
        ),
        token=token,
    )
    app = web.Application()
    app.router.add_routes(page.routes())
    client: TestClient[Any, Any] = await aiohttp_client(app)
    return client


async def hostile_messages(parts: Parts) -> None:
    now = time.time()
    await parts.intake.accept(
        [
            Incoming("modem:m-ready", PHONE, HOSTILE, SECRET_TEXT, now, source_ref="a"),
            Incoming("http", "", HOSTILE, SECRET_TEXT, now, source_ref="b", hold=Hold.NO_PHONE),
        ]
    )


async def get_text(client: TestClient[Any, Any], path: str, **kw: Any) -> tuple[int, str]:
    async with client.get(path, **kw) as resp:
        return resp.status, await resp.text()


def basic(user: str, password: str) -> dict[str, str]:
    raw = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {raw}"}


# -- the grid ----------------------------------------------------------------------------------


async def test_every_port_shows_its_state_by_word_and_colour(
    aiohttp_client: Any, parts: Parts
) -> None:
    client = await page_client(aiohttp_client, parts)
    status, html = await get_text(client, "/")
    assert status == 200
    expected = {
        "m-ready": ("ready", "ready"),
        "m-unplugged": ("unplugged", "unplugged"),
        "m-resetting": ("resetting", "resetting"),
        "m-simerr": ("sim_error", "SIM error"),
        "m-unreg": ("not_registered", "not registered"),
        "m-nosignal": ("no_signal", "no signal"),
    }
    for name, (key, word) in expected.items():
        row = re.search(rf'<tr data-port="{name}" data-state="{key}">(.*?)</tr>', html)
        assert row, name
        assert f'<span class="badge st-{key}">{word}</span>' in row.group(1)
    ready = re.search(r'<tr data-port="m-ready".*?</tr>', html)
    assert ready
    assert "4 of 4" in ready.group(0)  # -71 dBm: four bars
    assert "24/30" in ready.group(0)  # SIM storage used/total (80 %: marked full)
    assert "storage full" in ready.group(0)
    assert "567890123" not in ready.group(0) and "890123" in ready.group(0)  # ICCID tail only

    async with client.get("/status.json") as resp:
        snap = await resp.json()
    assert {p["id"]: p["state"] for p in snap["ports"]} == {n: k for n, (k, _) in expected.items()}
    assert snap["by_state"] == dict.fromkeys(
        ["unplugged", "sim_error", "not_registered", "no_signal", "resetting", "ready"], 1
    )


async def test_filter_and_sort_work_without_javascript(aiohttp_client: Any, parts: Parts) -> None:
    client = await page_client(aiohttp_client, parts)
    _, html = await get_text(client, "/?state=unplugged")
    assert re.findall(r'<tr data-port="([^"]+)"', html) == ["m-unplugged"]
    _, html = await get_text(client, "/?sort=id")
    names = re.findall(r'<tr data-port="([^"]+)"', html)
    assert names == sorted(names)
    _, html = await get_text(client, "/")  # by state: the worst first
    names = re.findall(r'<tr data-port="([^"]+)"', html)
    assert names[0] == "m-unplugged" and names[-1] == "m-ready"
    _, html = await get_text(client, "/?state=nonsense&sort=<x>")  # ignored, not echoed
    assert "<x>" not in html and len(re.findall(r"<tr data-port=", html)) == len(MODEMS)
    assert '<noscript><meta http-equiv="refresh"' in html


async def test_a_port_opens_with_its_last_messages(aiohttp_client: Any, parts: Parts) -> None:
    await hostile_messages(parts)
    client = await page_client(aiohttp_client, parts)
    status, html = await get_text(client, "/?port=m-ready")
    assert status == 200
    details = re.search(r'<section id="details" data-port="m-ready">(.*?)</section>', html, re.S)
    assert details
    assert f"{len(SECRET_TEXT)} chars" in details.group(1)
    assert "8970101234567890123" in details.group(1)  # the full ICCID in the details
    async with client.get("/status.json?port=m-ready") as resp:
        snap = await resp.json()
    assert snap["port"]["id"] == "m-ready"
    [message] = snap["port"]["messages"]
    assert message["length"] == len(SECRET_TEXT) and "text" not in message
    async with client.get("/status.json?port=nope") as resp:
        assert (await resp.json())["port"] is None


# -- what is never shown, what is escaped ---------------------------------------------------------


async def test_no_text_no_key_and_hostile_strings_escaped(
    aiohttp_client: Any, parts: Parts
) -> None:
    await hostile_messages(parts)
    client = await page_client(aiohttp_client, parts)
    for path in ("/", "/?port=m-ready", "/status.json", "/status.json?port=m-ready"):
        status, body = await get_text(client, path)
        assert status == 200
        assert SECRET_TEXT not in body, path
        assert API_KEY not in body, path
        assert "<script>alert" not in body, path
        assert "\u202e" not in body and "\u200f" not in body and "\x00" not in body, path
        assert "U+202E" in body, path  # written out, visibly
        if path.startswith("/status.json"):
            assert "<" not in body and ">" not in body  # as \\u003c / \\u003e
    _, html = await get_text(client, "/")
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&#x27;&quot;&amp;" in html
    # the only script is the file; no inline handlers or styles (the CSP forbids them anyway)
    assert re.findall(r"<script[^>]*>", html) == ['<script src="/status.js" defer>']
    assert not re.search(r"\son[a-z]+=|\sstyle=", html)


async def test_texts_shown_only_when_configured(aiohttp_client: Any, parts: Parts) -> None:
    await hostile_messages(parts)
    client = await page_client(aiohttp_client, parts, show_text=True)
    _, html = await get_text(client, "/?port=m-ready")
    assert SECRET_TEXT in html
    _, body = await get_text(client, "/status.json")
    assert SECRET_TEXT in body  # the held one
    assert API_KEY not in html + body


async def test_security_headers(aiohttp_client: Any, parts: Parts) -> None:
    client = await page_client(aiohttp_client, parts)
    for path in ("/", "/status.json", "/status.js", "/status.css"):
        async with client.get(path) as resp:
            assert resp.status == 200
            assert resp.headers["Content-Security-Policy"] == CSP
            assert resp.headers["X-Content-Type-Options"] == "nosniff"
            assert resp.headers["Cache-Control"] == "no-store"
    assert "script-src 'self';" in CSP and "unsafe" not in CSP


# -- the token -----------------------------------------------------------------------------------


async def test_the_token_guards_page_and_json(aiohttp_client: Any, parts: Parts) -> None:
    await hostile_messages(parts)
    client = await page_client(aiohttp_client, parts, token=TOKEN)
    for path in ("/", "/status.json", "/?port=m-ready", "/status.json?port=m-ready"):
        for headers in (
            {},
            basic("x", "wrong"),
            basic("x", TOKEN[:-1]),
            {"Authorization": "Basic !!"},
        ):
            async with client.get(path, headers=headers) as resp:
                body = await resp.text()
                assert resp.status == 401, (path, headers)
                if "json" in path:  # the page answers with its login form instead
                    assert resp.headers["WWW-Authenticate"].startswith("Basic ")
                else:
                    assert 'action="/login"' in body
                assert "m-ready" not in body and PHONE not in body and TOKEN not in body
        async with client.get(path, headers=basic("anyone", TOKEN)) as resp:
            assert resp.status == 200
    async with client.get("/status.js") as resp:  # the script and style hold no data
        assert resp.status == 200


async def test_login_form_sets_a_strict_http_only_cookie(aiohttp_client: Any, parts: Parts) -> None:
    client = await page_client(aiohttp_client, parts, token=TOKEN)
    async with client.post("/login", data={"token": "wrong"}, allow_redirects=False) as resp:
        assert resp.status == 401
        assert "wrong token" in await resp.text()
        assert COOKIE not in resp.cookies
    async with client.post("/login", data={"token": TOKEN}, allow_redirects=False) as resp:
        assert resp.status == 303 and resp.headers["Location"] == "/"
        set_cookie = resp.headers["Set-Cookie"]
    assert "HttpOnly" in set_cookie and "SameSite=Strict" in set_cookie
    assert TOKEN not in set_cookie  # a digest of the token, not the token
    status, html = await get_text(client, "/")  # the client keeps the cookie
    assert status == 200 and "m-ready" in html
    client.session.cookie_jar.clear()
    client.session.cookie_jar.update_cookies({COOKIE: "0" * 64})
    status, _ = await get_text(client, "/status.json")
    assert status == 401
    async with client.post("/login", data=b"token=" + b"a" * 5000) as resp:
        assert resp.status == 413


async def test_without_a_token_the_page_is_open(aiohttp_client: Any, parts: Parts) -> None:
    client = await page_client(aiohttp_client, parts)
    status, _ = await get_text(client, "/status.json")
    assert status == 200


# -- delivery, drops, held, partner ---------------------------------------------------------------


async def test_last_hour_counts_and_chart(aiohttp_client: Any, parts: Parts) -> None:
    client = await page_client(aiohttp_client, parts)
    parts.metrics.attempts.labels(Outcome.DELIVERED.value).inc(3)
    parts.metrics.attempts.labels(Outcome.ERROR.value).inc(2)
    parts.metrics.attempts.labels(Outcome.RATE_LIMITED.value).inc()
    parts.metrics.attempts.labels(Outcome.DROPPED.value).inc()
    await hostile_messages(parts)  # one held
    async with client.get("/status.json") as resp:
        snap = await resp.json()
    d = snap["delivery"]
    assert d["last_hour"] == {"delivered": 3, "retried": 3, "dropped": 1, "held": 1}
    assert len(d["minutes"]) == 60 and d["minutes"][-1][1:] == [3, 3, 1, 1]
    assert d["queued"] == 1 and d["circuit"] == "closed" and d["key_rejected"] is False
    [held] = snap["held"]
    assert held["reason"] == "no_phone" and held["length"] == len(SECRET_TEXT)
    await client.close()
    client = await page_client(aiohttp_client, parts)  # a fresh page: no cached snapshot
    _, html = await get_text(client, "/")
    assert '<b id="h-delivered">3</b>' in html
    assert html.count('<rect class="d"') == 1 and '<svg id="chart"' in html


async def test_partner_section_only_when_the_partner_side_is_on(
    aiohttp_client: Any, parts: Parts
) -> None:
    client = await page_client(aiohttp_client, parts)
    _, html = await get_text(client, "/")
    assert '<section id="partner" hidden>' in html
    desk = Desk(store=None, services=["tg"])  # type: ignore[arg-type]  # read-only use
    now = time.time()
    desk.update_sims(
        [
            SimView("k1", PHONE, "russia", HOSTILE, SimState.READY, live=True),
            SimView("k2", "79001234568", "russia", HOSTILE, SimState.NO_SIGNAL, live=True),
        ]
    )
    desk.load([Activation(42, "k1", PHONE, "tg", False, now - 60, now + 840)], {})
    parts.desk = desk
    await client.close()
    client = await page_client(aiohttp_client, parts)
    _, html = await get_text(client, "/")
    assert '<section id="partner">' in html and "<td>42</td>" in html
    assert "<script>alert" not in html
    async with client.get("/status.json") as resp:
        p = (await resp.json())["partner"]
    assert p["open"][0]["activation_id"] == 42
    assert p["counts"] == [
        {"country": "russia", "operator": shown(HOSTILE, 64), "ready": 1, "total": 2}
    ]


# -- pure parts ----------------------------------------------------------------------------------


@given(st.text())
def test_shown_leaves_no_control_or_format_character(text: str) -> None:
    out = shown(text)
    assert out is not None
    assert all(ch == " " or ch.isprintable() for ch in out)
    assert not any(ch in out for ch in "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


@given(st.one_of(st.none(), st.integers(-200, 0)))
def test_bars_are_zero_to_four_and_grow_with_signal(dbm: int | None) -> None:
    n = bars(dbm)
    assert 0 <= n <= 4
    if dbm is not None:
        assert bars(dbm + 10) >= n


def test_activity_counts_per_minute_from_the_counters() -> None:
    metrics = Metrics()
    metrics.attempts.labels("delivered").inc(5)  # before the start: not this hour's
    now = [1_000_000.0 * 60]
    activity = Activity(metrics, clock=lambda: now[0])
    metrics.attempts.labels("delivered").inc(2)
    metrics.held.labels("undecodable").inc()
    activity.sample()
    now[0] += 60
    metrics.attempts.labels("retry").inc(4)
    minutes = activity.minutes()
    assert len(minutes) == 60
    assert (minutes[-2].delivered, minutes[-2].held) == (2, 1)
    assert (minutes[-1].retried, minutes[-1].delivered) == (4, 0)
    now[0] += 3600  # an hour later the old minutes are gone
    assert Activity.totals(activity.minutes()) == dict.fromkeys(
        ["delivered", "retried", "dropped", "held"], 0
    )


async def test_ten_wrong_tokens_lock_the_address_out_of_the_page(
    aiohttp_client: Any, parts: Parts
) -> None:
    client = await page_client(aiohttp_client, parts, token=TOKEN)
    for i in range(10):
        form = {"token": f"guess {i}"}
        async with client.post("/login", data=form, allow_redirects=False) as resp:
            assert resp.status == 401
    # now even the right token is not compared, by any door, for a minute
    async with client.post("/login", data={"token": TOKEN}, allow_redirects=False) as resp:
        assert resp.status == 429 and resp.headers["Retry-After"] == "60"
        assert COOKIE not in resp.cookies
    async with client.get("/status.json", headers=basic("x", TOKEN)) as resp:
        assert resp.status == 429
        assert "too many wrong tokens" in (await resp.json())["error"]
    status, text = await get_text(client, "/", headers=basic("x", TOKEN))
    assert status == 429 and "m-ready" not in text
