"""The real gammu-smsd and smstools3 against the simulated modem, handing SMS to our ingest.

Each daemon opens the FakeModem's pseudo-terminal like a serial modem, reads the SMS the test
delivered, and runs its hook (gammu's RunOnReceive, smstools' eventhandler), which runs
``python -m gateway ingest --gammu`` / ``--smstools``; the test then reads the store. Skipped
when the Debian packages (gammu-smsd, smstools) are not installed.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.errors import StoreError
from gateway.outbox import Message, Outbox
from gateway.play import pdu
from tests.fakes.modem import FakeModem

ROOT = Path(__file__).resolve().parents[2]
GAMMU_SMSD = shutil.which("gammu-smsd")
SMSD = shutil.which("smsd") or shutil.which("smsd", path="/usr/sbin:/usr/local/sbin")
LONG = "Длинное сообщение номер " * 5 + "конец"  # two UCS-2 parts


def gateway_config(directory: Path) -> Path:
    path = directory / "gateway.toml"
    path.write_text(
        '[upstream]\nurl = "http://127.0.0.1:9/push"\napi_key = "k"\n'
        f'[store]\npath = "{directory / "outbox.sqlite3"}"\n'
        '[gammu]\nphones = { "modem1" = "79001234567" }\n'
        '[smstools]\nphones = { "GSM1" = "79001234568" }\n',
        encoding="utf-8",
    )
    return path


def hook_script(path: Path, body: str) -> Path:
    path.write_text(f"#!/bin/sh\nPYTHONPATH='{ROOT}'\nexport PYTHONPATH\n{body}\n", "utf-8")
    path.chmod(0o755)
    return path


async def stored_messages(store: Path, count: int, timeout: float, log: Path) -> list[Message]:
    """The store's messages once there are ``count`` (another process writes them: poll)."""
    deadline = time.monotonic() + timeout
    found: list[Message] = []
    while time.monotonic() < deadline:
        if store.exists():
            try:
                outbox = await Outbox.open(str(store), create=False, migrate=False)
            except StoreError:
                found = []  # the first ingest is still creating it
            else:
                found = await outbox.list_messages()
                await outbox.close()
        if len(found) >= count:
            return found
        await asyncio.sleep(0.25)
    hook_log = log.read_text(errors="replace") if log.exists() else "(no hook output)"
    raise AssertionError(f"{len(found)} of {count} messages stored; hook output:\n{hook_log}")


@pytest.fixture
async def modem() -> AsyncIterator[FakeModem]:
    m = FakeModem()
    m.start()
    # Stored before the daemon starts: it finds them on its first read of the SIM.
    m.deliver(pdu.encode_deliver("+79001112233", "Привет, мир! hello"))
    for part in pdu.split_deliver("+79005556677", LONG, ref=7):
        m.deliver(part)
    yield m
    m.stop()


async def run_until_stored(argv: list[str], env: dict[str, str], store: Path, log: Path,
                           output: Path) -> list[Message]:  # fmt: skip
    with open(output, "wb") as out:
        proc = await asyncio.create_subprocess_exec(*argv, stdout=out, stderr=out, env=env)
        try:
            return await stored_messages(store, 2, 60.0, log)
        finally:
            proc.terminate()
            await proc.wait()


@pytest.mark.skipif(
    GAMMU_SMSD is None, reason="gammu-smsd is not installed (apt package gammu-smsd)"
)
@pytest.mark.parametrize(
    ("inbox_format", "lang"),
    [("standard", "C.UTF-8"), ("unicode", None), ("unicode", "C.UTF-8")],
    ids=["environment-utf8-locale", "unicode-files-c-locale", "unicode-files-utf8-locale"],
)
async def test_gammu_smsd_run_on_receive(
    tmp_path: Path, modem: FakeModem, inbox_format: str, lang: str | None
) -> None:
    assert GAMMU_SMSD is not None
    inbox = tmp_path / "inbox"
    for sub in ("inbox", "outbox", "sent", "error"):
        (tmp_path / sub).mkdir()
    config = gateway_config(tmp_path)
    log = tmp_path / "hook.log"
    hook = hook_script(
        tmp_path / "on-receive.sh",
        f"cd '{inbox}' || exit 1\n"
        f"exec '{sys.executable}' -m gateway ingest -c '{config}' --gammu \"$@\" >> '{log}' 2>&1",
    )
    smsdrc = tmp_path / "smsdrc"
    smsdrc.write_text(
        f"[gammu]\ndevice = {modem.port}\nconnection = at\n"
        f"[smsd]\nservice = files\nPhoneID = modem1\nRunOnReceive = {hook}\n"
        f"inboxpath = {inbox}/\noutboxpath = {tmp_path}/outbox/\nsentsmspath = {tmp_path}/sent/\n"
        f"errorsmspath = {tmp_path}/error/\nInboxFormat = {inbox_format}\n"
        f"logfile = {tmp_path}/smsd.log\nReceiveFrequency = 1\nStatusFrequency = 0\n"
        "CheckSecurity = 0\nCheckBattery = 0\nCheckSignal = 0\nCommTimeout = 1\n",
        encoding="utf-8",
    )
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")} | ({"LANG": lang} if lang else {})
    found = await run_until_stored(
        [GAMMU_SMSD, "-c", str(smsdrc)], env, tmp_path / "outbox.sqlite3", log, tmp_path / "out"
    )
    texts = {m.phone_from: (m.phone, m.text, m.source) for m in found}
    assert texts == {
        "+79001112233": ("79001234567", "Привет, мир! hello", "gammu"),
        "+79005556677": ("79001234567", LONG, "gammu"),
    }
    # The simulator lists each SMS in both SM and ME storage, so gammu saved and handed over
    # every one twice (inbox serials _00_ and _01_): the dedup key made it one message each.
    assert len(list(inbox.iterdir())) > 2


@pytest.mark.skipif(SMSD is None, reason="smstools3 smsd is not installed (apt package smstools)")
async def test_smstools_eventhandler(tmp_path: Path, modem: FakeModem) -> None:
    assert SMSD is not None
    spool = {name: tmp_path / name for name in ("incoming", "outgoing", "checked", "failed")}
    for d in spool.values():
        d.mkdir()
    config = gateway_config(tmp_path)
    log = tmp_path / "hook.log"
    handler = hook_script(
        tmp_path / "eventhandler.sh",
        '[ "$1" = RECEIVED ] || exit 0\n'
        f"exec '{sys.executable}' -m gateway ingest -c '{config}' --smstools \"$2\""
        f" >> '{log}' 2>&1",
    )
    conf = tmp_path / "smsd.conf"
    conf.write_text(
        "devices = GSM1\n"
        + "".join(f"{name} = {path}\n" for name, path in spool.items())
        + f"logfile = {tmp_path}/smsd.log\nloglevel = 7\neventhandler = {handler}\n"
        f"infofile = {tmp_path}/smsd.working\npidfile = {tmp_path}/smsd.pid\n"
        "delaytime = 1\ndelaytime_mainprocess = 1\nstats = \n"
        f"[GSM1]\ndevice = {modem.port}\nincoming = yes\nbaudrate = 115200\n",
        encoding="utf-8",
    )
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    found = await run_until_stored(
        [SMSD, "-t", f"-c{conf}"], env, tmp_path / "outbox.sqlite3", log, tmp_path / "out"
    )
    texts = {m.phone_from: (m.phone, m.text, m.source) for m in found}
    assert texts == {
        "+79001112233": ("79001234568", "Привет, мир! hello", "smstools"),
        "+79005556677": ("79001234568", LONG, "smstools"),
    }
