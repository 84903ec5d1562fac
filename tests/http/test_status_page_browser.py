"""The status page in a real browser: Debian's headless Chromium driven by selenium through
Debian's chromedriver (`chromium` and `chromium-driver`, installed by .ci/run), against the real
daemon in a subprocess with two simulated modems and the stand-in upstream.

The page signs in through its own login form, redraws itself from /status.json, shows both
modems ready, counts a delivered SMS, turns an unplugged modem's row red, filters by state,
shows neither a message text nor a secret, and logs no console error. A screenshot is left
beside the test's files (status-page.png; also where STATUS_PAGE_SCREENSHOT says)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.wait import WebDriverWait

from gateway.play.modem import FakeModem
from gateway.play.pdu import encode_deliver
from gateway.play.standin import StandIn
from tests.fakes.daemon import API_KEY, STATUS_TOKEN, DaemonProcess, write_config

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
MISSING = [path for path in (CHROMIUM, CHROMEDRIVER) if not os.path.exists(path)]
pytestmark = pytest.mark.skipif(
    bool(MISSING),
    reason=f"{' and '.join(MISSING)} not installed: apt-get install chromium chromium-driver "
    "(.ci/run does this)",
)
T = TypeVar("T")

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


class Browser:
    """One selenium-driven Chromium. Selenium blocks, so each call runs in a thread: the event
    loop keeps serving the stand-in and the simulated modems meanwhile."""

    def __init__(self, driver: webdriver.Chrome) -> None:
        self.driver = driver

    async def _run(self, fn: Callable[[], T]) -> T:
        return await asyncio.to_thread(fn)

    async def get(self, url: str) -> None:
        await self._run(lambda: self.driver.get(url))

    async def js(self, expression: str) -> Any:
        return await self._run(lambda: self.driver.execute_script(f"return ({expression});"))

    async def click(self, css: str) -> None:
        await self._run(lambda: self.driver.find_element(By.CSS_SELECTOR, css).click())

    async def type(self, css: str, text: str) -> None:
        await self._run(lambda: self.driver.find_element(By.CSS_SELECTOR, css).send_keys(text))

    async def until(self, expression: str, timeout: float, what: str) -> Any:
        """`expression`'s value once it is truthy, checked every 100 ms, bounded by `timeout`."""
        wait = WebDriverWait(self.driver, timeout, poll_frequency=0.1)
        try:
            return await self._run(
                lambda: wait.until(lambda d: d.execute_script(f"return ({expression});"))
            )
        except TimeoutException:
            text = await self.js("document.body ? document.body.innerText : ''")
            raise AssertionError(
                f"{what} not within {timeout} s; the page shows:\n{text}"
            ) from None

    async def console(self) -> list[dict[str, Any]]:
        """The browser's log since the last call (goog:loggingPrefs): console messages,
        uncaught exceptions and failed loads."""
        entries: list[dict[str, Any]] = await self._run(lambda: self.driver.get_log("browser"))
        return entries

    async def screenshot(self) -> bytes:
        return await self._run(self.driver.get_screenshot_as_png)


@contextlib.asynccontextmanager
async def chromium(tmp: Path) -> AsyncIterator[Browser]:
    options = Options()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--window-size=1280,900",
        f"--user-data-dir={tmp / 'chromium-profile'}",
    ):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(executable_path=CHROMEDRIVER, log_output=str(tmp / "chromedriver.log"))
    driver = await asyncio.to_thread(lambda: webdriver.Chrome(options=options, service=service))
    try:
        driver.set_script_timeout(15)
        driver.set_page_load_timeout(15)
        yield Browser(driver)
    finally:
        await asyncio.to_thread(driver.quit)


def errors(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in entries if e.get("level") == "SEVERE"]


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
            await page.get(base + "/")
            assert await page.js("!!document.querySelector('form[action=\"/login\"]')")
            assert not await page.js("document.body.innerText.includes('bank1-slot1')")
            assert "bank1-slot1" not in await page.js("document.documentElement.outerHTML")
            await page.type("input[name=token]", STATUS_TOKEN)
            await page.js("document.querySelector('form').submit()")

            polls = "parseInt(document.body.dataset.polls || '0')"
            await page.until(f"{polls} >= 1", 15, "a first poll of /status.json")
            # The login page's 401 is the only error before it: not an error of the page.
            before = errors(await page.console())
            assert all("401" in e["message"] for e in before), before
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
            await page.click('#filters a[data-state="unplugged"]')
            shown = await page.until(
                "document.querySelectorAll('#ports tbody tr').length === 1"
                " && [...document.querySelectorAll('#ports tbody tr')].map(r => r.dataset.port)",
                5,
                "the filter",
            )
            assert shown == ["bank1-slot2"]
            assert "state=unplugged" in await page.js("location.search")
            await page.click('#filters a[data-state=""]')
            await page.until(
                "document.querySelectorAll('#ports tbody tr').length === 2", 5, "the filter off"
            )

            # A click opens the port with its last message: sender and length, no text.
            await page.click('#ports tr[data-port="bank1-slot1"] td.id a')
            await page.until(
                "!!document.querySelector('#details[data-port=\"bank1-slot1\"] tbody tr')",
                10,
                "the port's details",
            )
            details = await page.js("document.getElementById('details').innerText")
            assert "Bank" in details and "9 chars" in details

            html = await page.js("document.documentElement.outerHTML")
            assert "code 1234" not in html and API_KEY not in html and STATUS_TOKEN not in html
            assert errors(await page.console()) == []

            shot = await page.screenshot()
            (tmp_path / "status-page.png").write_bytes(shot)
            if out := os.environ.get("STATUS_PAGE_SCREENSHOT"):
                Path(out).write_bytes(shot)
    finally:
        if daemon.proc is not None:
            await daemon.stop()
        fake1.stop()
        fake2.stop()
        await standin.stop()
