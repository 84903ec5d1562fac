"""The status page in a real browser: headless Chromium (Debian's `chromium`, installed by
.ci/run) driven over the DevTools protocol with aiohttp's websocket client, against the real
daemon in a subprocess with two simulated modems and the stand-in upstream.

The page signs in through its own login form, redraws itself from /status.json, shows both
modems ready, counts a delivered SMS, turns an unplugged modem's row red, filters by state,
and logs no console error. A screenshot is left beside the test's files (status-page.png)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import re
import shutil
import subprocess
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway.play.modem import FakeModem
from gateway.play.pdu import encode_deliver
from gateway.play.standin import StandIn
from tests.fakes.daemon import API_KEY, STATUS_TOKEN, DaemonProcess, write_config

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
pytestmark = pytest.mark.skipif(
    not os.path.exists(CHROMIUM), reason="Debian's chromium is not installed (.ci/run installs it)"
)

MODEMS = """
[modems]
scan_interval = 1
command_timeout = 1
reopen_max = 0.5

[[modem]]
name = "bank1-slot1"
port = {port1}

[[modem]]
name = "bank1-slot2"
port = {port2}

[[sim]]
iccid = {iccid1}
phone = "79001234567"

[[sim]]
iccid = {iccid2}
phone = "79001234568"
"""


class DevTools:
    """One page of a headless Chromium over the DevTools protocol (JSON over a websocket)."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self._ws = ws
        self._next = 0
        self._waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.events: list[dict[str, Any]] = []
        self.loaded = asyncio.Event()  # Page.loadEventFired since the last navigation began
        self._reader = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        async for msg in self._ws:
            data = json.loads(msg.data)
            if "id" in data and data["id"] in self._waiting:
                self._waiting.pop(data["id"]).set_result(data)
            else:
                self.events.append(data)
                if data.get("method") == "Page.loadEventFired":
                    self.loaded.set()

    async def call(self, method: str, timeout: float = 15, **params: Any) -> dict[str, Any]:
        self._next += 1
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[self._next] = future
        await self._ws.send_json({"id": self._next, "method": method, "params": params})
        async with asyncio.timeout(timeout):
            answer = await future
        assert "error" not in answer, answer
        result: dict[str, Any] = answer["result"]
        return result

    async def js(self, expression: str) -> Any:
        r = await self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        assert "exceptionDetails" not in r, r
        return r["result"].get("value")

    async def until(self, expression: str, timeout: float, what: str) -> Any:
        """The page itself checks `expression` every 100 ms and answers once it is truthy;
        the wait is bounded by `timeout`."""
        waiter = (
            "new Promise(done => { const check = () => { const v = (" + expression + ");"
            " if (v) done(v); else setTimeout(check, 100); }; check(); })"
        )
        try:
            r = await self.call(
                "Runtime.evaluate",
                timeout=timeout,
                expression=waiter,
                awaitPromise=True,
                returnByValue=True,
            )
        except TimeoutError:
            text = await self.js("document.body ? document.body.innerText : ''")
            raise AssertionError(
                f"{what} not within {timeout} s; the page shows:\n{text}"
            ) from None
        assert "exceptionDetails" not in r, r
        return r["result"].get("value")

    async def navigated(self, action: Callable[[], Any]) -> None:
        """Run `action` and wait for the page it leads to to load."""
        self.events.clear()
        self.loaded.clear()
        await action()
        async with asyncio.timeout(15):
            await self.loaded.wait()

    async def close(self) -> None:
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader
        await self._ws.close()


@contextlib.asynccontextmanager
async def chromium(tmp: Path) -> AsyncIterator[DevTools]:
    proc = subprocess.Popen(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--disable-dev-shm-usage",
            f"--user-data-dir={tmp / 'chromium-profile'}",
            "--remote-debugging-port=0",
            "--window-size=1280,900",
            "about:blank",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        assert proc.stderr is not None
        loop = asyncio.get_running_loop()
        browser_ws = None
        async with asyncio.timeout(30):
            while browser_ws is None:
                line = (await loop.run_in_executor(None, proc.stderr.readline)).decode()
                if not line:
                    raise AssertionError(f"chromium exited {proc.poll()} before DevTools listened")
                m = re.search(r"DevTools listening on (ws://\S+)", line)
                browser_ws = m.group(1) if m else None
        threading_drain(proc)
        http_base = "http://" + browser_ws.split("/")[2]
        async with aiohttp.ClientSession() as session:
            async with session.get(http_base + "/json/list") as resp:
                targets = await resp.json()
            page = next(t for t in targets if t["type"] == "page")
            ws = await session.ws_connect(page["webSocketDebuggerUrl"], max_msg_size=64 << 20)
            tools = DevTools(ws)
            try:
                for domain in ("Page", "Runtime", "Log"):
                    await tools.call(f"{domain}.enable")
                yield tools
            finally:
                await tools.close()
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def threading_drain(proc: subprocess.Popen[bytes]) -> None:
    """Keep reading chromium's stderr so it never blocks on a full pipe."""
    import threading

    def drain() -> None:
        assert proc.stderr is not None
        for _ in proc.stderr:
            pass

    threading.Thread(target=drain, daemon=True).start()


def console_errors(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for e in events:
        method, params = e.get("method"), e.get("params", {})
        if method == "Runtime.exceptionThrown" or (
            method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert")
        ):
            out.append(params)
        elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
            out.append(params["entry"])
    return out


ROW_STATE = "(document.querySelector('#ports tr[data-port=\"{}\"]') || {{}}).dataset?.state"


async def test_the_page_in_chromium_follows_the_modems(tmp_path: Path) -> None:
    standin = StandIn()
    await standin.start()
    fake1 = FakeModem("simcom", iccid="8970199000000000011", link_dir=tmp_path, link_name="m1")
    fake2 = FakeModem("simcom", iccid="8970199000000000022", link_dir=tmp_path, link_name="m2")
    fake1.start()
    fake2.start()
    extra = MODEMS.format(
        port1=json.dumps(fake1.port),
        port2=json.dumps(fake2.port),
        iccid1=json.dumps(fake1.iccid),
        iccid2=json.dumps(fake2.iccid),
    )
    daemon = DaemonProcess(write_config(tmp_path, standin.url, extra=extra))
    try:
        await daemon.start()
        async with chromium(tmp_path) as page:
            base = daemon.base
            # Without the token: the login form, and no port in it.
            await page.navigated(lambda: page.call("Page.navigate", url=base + "/"))
            assert await page.js("!!document.querySelector('form[action=\"/login\"]')")
            assert not await page.js("document.body.innerText.includes('bank1-slot1')")
            token = json.dumps(STATUS_TOKEN)
            await page.js(f"document.querySelector('input[name=token]').value = {token}")
            await page.navigated(lambda: page.js("document.querySelector('form').submit()"))
            page.events.clear()  # the 401 of the login page is not an error of the page

            polls = "parseInt(document.body.dataset.polls || '0')"
            await page.until(f"{polls} >= 1", 15, "a first poll of /status.json")
            for name in ("bank1-slot1", "bank1-slot2"):
                await page.until(f"{ROW_STATE.format(name)} === 'ready'", 30, f"{name} ready")
            badge = await page.js(
                "document.querySelector('#ports tr[data-port=\"bank1-slot1\"] .badge').textContent"
            )
            assert badge == "ready"

            # An SMS read from a modem and delivered: the last hour's count follows.
            delivered = "parseInt(document.getElementById('h-delivered').textContent)"
            assert await page.js(delivered) == 0
            fake1.deliver(encode_deliver("Bank", "code 1234"))
            await standin.wait_for(lambda s: len(s.delivered()) >= 1, timeout=15)
            await page.until(f"{delivered} >= 1", 15, "the delivered count")
            await page.until(
                "document.querySelectorAll('#chart rect.d').length >= 1", 5, "a bar in the chart"
            )

            # Unplugged: the row turns red within the refresh interval (5 s) and a reopen try.
            fake2.unplug()
            await page.until(f"{ROW_STATE.format('bank1-slot2')} === 'unplugged'", 15, "unplugged")
            colour = await page.js(
                "getComputedStyle(document.querySelector("
                "'#ports tr[data-port=\"bank1-slot2\"] .badge')).backgroundColor"
            )
            red, green, _ = map(int, re.findall(r"\d+", colour)[:3])
            assert red > 100 and green < 60, colour

            # Filtering by state (the script's, without reloading).
            await page.js("document.querySelector('#filters a[data-state=\"unplugged\"]').click()")
            shown = await page.js(
                "[...document.querySelectorAll('#ports tbody tr')].map(r => r.dataset.port)"
            )
            assert shown == ["bank1-slot2"]
            assert "state=unplugged" in await page.js("location.search")
            await page.js("document.querySelector('#filters a[data-state=\"\"]').click()")
            assert await page.js("document.querySelectorAll('#ports tbody tr').length") == 2

            # A click opens the port with its last message: sender and length, no text.
            await page.js(
                "document.querySelector('#ports tr[data-port=\"bank1-slot1\"] td.id a').click()"
            )
            await page.until(
                "!!document.querySelector('#details[data-port=\"bank1-slot1\"] tbody tr')",
                10,
                "the port's details",
            )
            details = await page.js("document.getElementById('details').innerText")
            assert "Bank" in details and "9 chars" in details

            html = await page.js("document.documentElement.outerHTML")
            assert "code 1234" not in html and API_KEY not in html and STATUS_TOKEN not in html
            assert console_errors(page.events) == []

            shot = await page.call("Page.captureScreenshot", format="png")
            (tmp_path / "status-page.png").write_bytes(base64.b64decode(shot["data"]))
            if out := os.environ.get("STATUS_PAGE_SCREENSHOT"):
                Path(out).write_bytes(base64.b64decode(shot["data"]))
    finally:
        if daemon.proc is not None:
            await daemon.stop()
        fake1.stop()
        fake2.stop()
        await standin.stop()
