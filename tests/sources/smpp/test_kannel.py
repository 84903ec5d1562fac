"""Kannel (Debian's bearerbox + smsbox), a third-party SMPP implementation, binds to our server as
an ESME; SMS sent through smsbox's sendsms interface arrive as submit_sm and are committed."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from tests.fakes.store import wait_messages
from tests.sources.smpp.test_kill9 import free_port
from tests.sources.smpp.test_server import PASSWORD, Rig

pytestmark = pytest.mark.skipif(
    shutil.which("bearerbox") is None, reason="Kannel is not installed (.ci/run installs it)"
)


def kannel_config(smpp_port: int, admin: int, box: int, sendsms: int, log_dir: Path) -> str:
    return f"""
group = core
admin-port = {admin}
admin-password = adm
smsbox-port = {box}
log-file = "{log_dir}/bearerbox.log"
log-level = 0
box-allow-ip = 127.0.0.1

group = smsc
smsc = smpp
smsc-id = ours
host = 127.0.0.1
port = {smpp_port}
receive-port = 0
transceiver-mode = true
smsc-username = box1
smsc-password = {PASSWORD}
system-type = ""
enquire-link-interval = 30
reconnect-delay = 1

group = smsbox
bearerbox-host = 127.0.0.1
bearerbox-port = {box}
sendsms-port = {sendsms}
log-file = "{log_dir}/smsbox.log"
log-level = 0

group = sendsms-user
username = tester
password = testpw
max-messages = 10
concatenation = true

group = sms-service
keyword = default
text = "no service"
"""


class Kannel:
    def __init__(self, tmp_path: Path, smpp_port: int) -> None:
        self.sendsms = free_port()
        self.box = free_port()
        conf = tmp_path / "kannel.conf"
        conf.write_text(
            kannel_config(smpp_port, free_port(), self.box, self.sendsms, tmp_path), "utf-8"
        )
        self.conf = conf
        self.procs: list[subprocess.Popen[bytes]] = []

    def _run(self, box: str) -> None:
        self.procs.append(
            subprocess.Popen(
                [box, str(self.conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
        )

    async def start(self) -> None:
        """bearerbox, then smsbox once bearerbox listens for it (smsbox gives up at once)."""
        self._run("bearerbox")
        async with asyncio.timeout(15):
            while True:
                try:
                    _, w = await asyncio.open_connection("127.0.0.1", self.box)
                    w.close()
                    break
                except OSError:
                    await asyncio.sleep(0.1)
        self._run("smsbox")

    def stop(self) -> None:
        for p in reversed(self.procs):
            p.terminate()
        for p in self.procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()

    async def send(self, to: str, text: str, **extra: str) -> str:
        params = {"username": "tester", "password": "testpw", "from": "79005556677"}
        params |= {"to": to, "text": text, **extra}
        url = f"http://127.0.0.1:{self.sendsms}/cgi-bin/sendsms"
        async with aiohttp.ClientSession() as s:
            async with asyncio.timeout(20):
                while True:  # smsbox comes up after bearerbox
                    try:
                        async with s.get(url, params=params) as r:
                            return f"{r.status} {await r.text()}"
                    except aiohttp.ClientConnectionError:
                        await asyncio.sleep(0.2)


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    r = Rig(tmp_path)
    await r.start()
    yield r
    await r.stop()


async def test_kannel_binds_and_its_sendsms_arrives_as_submit_sm(rig: Rig, tmp_path: Path) -> None:
    kannel = Kannel(tmp_path, rig.server.port)
    await kannel.start()
    try:
        answer = await kannel.send("79001230001", "Your code 4711")
        assert answer.startswith("202"), answer
        answer = await kannel.send("79001230002", "Привет, мир", charset="UTF-8", coding="2")
        assert answer.startswith("202"), answer
        long_text = "".join(f"word{i} " for i in range(60))  # 3 parts by UDH
        answer = await kannel.send("79001230003", long_text)
        assert answer.startswith("202"), answer
        found = await wait_messages(rig.outbox, 3, timeout=30)
        by_phone = {m.phone: m for m in found}
        assert by_phone["79001230001"].text == "Your code 4711"
        assert by_phone["79001230002"].text == "Привет, мир"
        assert by_phone["79001230003"].text == long_text
        assert {m.source for m in found} == {"smpp-server:box1"}
        sessions = rig.server.check().details["accounts"]["box1"]["sessions"]
        assert sessions and sessions[0]["state"] == "bound"
    finally:
        kannel.stop()
