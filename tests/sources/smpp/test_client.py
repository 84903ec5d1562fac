"""Our ESME against an SMSC from another implementation (Perl's Net::SMPP, Debian
libnet-smpp-perl): it binds, each deliver_sm is committed before its deliver_sm_resp."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import sqlite3
import subprocess
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from gateway import config
from gateway.intake import Intake
from gateway.metrics import Metrics
from gateway.outbox import Outbox
from gateway.sources.smpp.client import SmppClient
from gateway.sources.smpp.inbound import Inbound
from gateway.sources.smpp.pdu import Status
from gateway.sources.smpp.server import SmppServer
from gateway.sources.smpp.session import NACK_STORM
from tests.sources.smpp.config_files import secret_file, smpp_config
from tests.sources.smpp.test_kill9 import free_port

SMSC = Path(__file__).parent / "data" / "net_smpp_smsc.pl"


def has_net_smpp() -> bool:
    if shutil.which("perl") is None:
        return False
    return subprocess.run(["perl", "-MNet::SMPP", "-e", "1"], capture_output=True).returncode == 0


needs_perl = pytest.mark.skipif(not has_net_smpp(), reason="libnet-smpp-perl not installed")


@needs_perl
async def test_client_commits_each_deliver_sm_before_answering(tmp_path: Path) -> None:
    port = free_port()
    smsc = await asyncio.create_subprocess_exec(
        "perl", str(SMSC), str(port), "5", stdout=asyncio.subprocess.PIPE
    )
    assert smsc.stdout is not None
    assert (await asyncio.wait_for(smsc.stdout.readline(), 10)).strip() == b"LISTENING"
    cfg = config.parse(
        {
            "upstream": {"url": "http://127.0.0.1:9/push", "api_key": "k"},
            "store": {"path": str(tmp_path / "outbox.sqlite3")},
            "smpp_client": [
                {"name": "op1", "host": "127.0.0.1", "port": port, "system_id": "esme1",
                 "password": "secret", "bind": "transceiver"}
            ],
        }
    )  # fmt: skip
    outbox = await Outbox.open(cfg.store.path)
    client = SmppClient(cfg.smpp_client[0], Inbound(Intake(outbox, Metrics())), Metrics())
    await client.start()
    try:
        lines = []
        async with asyncio.timeout(20):
            while (line := (await smsc.stdout.readline()).decode().strip()) != "DONE":
                assert line, "the SMSC ended early"
                lines.append(line)
        assert lines[0] == "BIND 9 esme1 secret"
        assert sorted(lines[1:]) == sorted(f"RESP {i} 0" for i in range(1, 6))
        found = await outbox.list_messages()
        assert sorted(m.text for m in found) == [f"perl {i}" for i in range(1, 6)]
        assert {m.source for m in found} == {"smpp-client:op1"}
        assert client.check().details["state"] == "bound"
    finally:
        await client.stop()
        with contextlib.suppress(ProcessLookupError):  # it ends once the client went
            smsc.kill()
        await smsc.wait()
        await outbox.close()


SCRIPTED = Path(__file__).parent / "data" / "net_smpp_scripted.pl"


class PerlSmsc:
    """net_smpp_scripted.pl in a subprocess: `send` a command, `expect` an event."""

    def __init__(self, proc: asyncio.subprocess.Process, port: int) -> None:
        self.proc = proc
        self.port = port
        self.events: list[str] = []

    @classmethod
    async def start(cls) -> PerlSmsc:
        port = free_port()
        proc = await asyncio.create_subprocess_exec(
            "perl", str(SCRIPTED), str(port),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        smsc = cls(proc, port)
        await smsc.expect("LISTENING")
        return smsc

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line.encode() + b"\n")

    async def expect(self, prefix: str, timeout: float = 10.0) -> str:
        """The next event starting with `prefix` (the ones before it are kept in `events`)."""
        assert self.proc.stdout is not None
        async with asyncio.timeout(timeout):
            while True:
                line = (await self.proc.stdout.readline()).decode().strip()
                assert line, f"the SMSC ended; events: {self.events}"
                self.events.append(line)
                if line.startswith(prefix):
                    return line

    async def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.proc.kill()
        await self.proc.wait()


def client_config(tmp_path: Path, port: int, **extra: Any) -> config.Config:
    return config.parse(
        {
            "upstream": {"url": "http://127.0.0.1:9/push", "api_key": "k"},
            "store": {"path": str(tmp_path / "outbox.sqlite3")},
            "smpp_client": [
                {"name": "op1", "host": "127.0.0.1", "port": port, "system_id": "esme1",
                 "password": "secret", "bind": "transceiver", "reconnect_max": 1.0, **extra}
            ],
        }
    )  # fmt: skip


@pytest.fixture
async def smsc() -> AsyncIterator[PerlSmsc]:
    s = await PerlSmsc.start()
    yield s
    await s.stop()


class Rig:
    def __init__(self, outbox: Outbox, client: SmppClient, metrics: Metrics) -> None:
        self.outbox = outbox
        self.client = client
        self.metrics = metrics

    def counted(self, name: str, **labels: str) -> float:
        labels = {"source": "smpp-client:op1", "bind": "op1", **labels}  # one client, one bind
        return self.metrics.registry.get_sample_value(name, labels) or 0.0


@contextlib.asynccontextmanager
async def running_client(
    tmp_path: Path, port: int, *, busy_timeout_ms: int = 5000, **extra: Any
) -> AsyncIterator[Rig]:
    cfg = client_config(tmp_path, port, **extra)
    outbox = await Outbox.open(cfg.store.path, busy_timeout_ms=busy_timeout_ms)
    metrics = Metrics()
    client = SmppClient(cfg.smpp_client[0], Inbound(Intake(outbox, metrics)), metrics)
    await client.start()
    try:
        yield Rig(outbox, client, metrics)
    finally:
        await client.stop()
        await outbox.close()


async def until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():  # noqa: ASYNC110 - the client has no event to wait on
            await asyncio.sleep(0.02)


async def texts(outbox: Outbox) -> list[str]:
    return sorted(m.text for m in await outbox.list_messages())


@needs_perl
async def test_reconnects_with_backoff_after_the_smsc_drops_the_connection(
    tmp_path: Path, smsc: PerlSmsc
) -> None:
    async with running_client(tmp_path, smsc.port) as rig:
        await smsc.expect("BIND 9 esme1 secret")
        smsc.send("DELIVER 1 before the drop")
        assert await smsc.expect("RESP 1") == "RESP 1 0"
        smsc.send("DROP")
        await smsc.expect("DROPPED")
        # the session was short: the backoff (0.2 s growing, at most reconnect_max) applies
        await smsc.expect("BIND 9 esme1 secret", timeout=5)
        smsc.send("DELIVER 2 after the drop")
        assert await smsc.expect("RESP 2") == "RESP 2 0"
        assert await texts(rig.outbox) == ["after the drop", "before the drop"]
        assert rig.client.binds == 2
        details = rig.client.check().details
        assert (details["bind"], details["state"]) == ("op1", "bound")
        assert details["last_error"] == "session ended: closed by peer"
        assert rig.counted("sms_gateway_smpp_errors_total", kind="session_lost") == 1


@needs_perl
async def test_a_data_sm_from_the_smsc_is_committed_then_answered(
    tmp_path: Path, smsc: PerlSmsc
) -> None:
    """Some SMSCs hand MO as data_sm (the text in message_payload): it was a generic_nack."""
    async with running_client(tmp_path, smsc.port) as rig:
        await smsc.expect("BIND 9 esme1 secret")
        smsc.send("DATA 7 Код 2468")
        assert await smsc.expect("DATA_RESP 7") == "DATA_RESP 7 0"
        assert await texts(rig.outbox) == ["Код 2468"]
        assert rig.counted("sms_gateway_smpp_messages_total", outcome="stored") == 1


@needs_perl
async def test_rebinds_after_an_unbind_from_the_smsc(tmp_path: Path, smsc: PerlSmsc) -> None:
    async with running_client(
        tmp_path, smsc.port, bind="receiver", system_type="MO", address_range="^7900"
    ) as rig:
        assert await smsc.expect("BIND") == "BIND 1 esme1 secret"
        fields = await smsc.expect("BIND_FIELDS")
        assert fields == "BIND_FIELDS version=0x34 system_type=MO address_range=^7900"
        smsc.send("UNBIND")
        await smsc.expect("UNBIND_RESP")
        await smsc.expect("CLOSED")
        await smsc.expect("BIND 1 esme1 secret", timeout=5)
        smsc.send("DELIVER 5 rebound")
        assert await smsc.expect("RESP 5") == "RESP 5 0"
        assert await texts(rig.outbox) == ["rebound"]
        assert rig.client.binds == 2


@needs_perl
async def test_rebinds_after_a_generic_nack_storm(tmp_path: Path, smsc: PerlSmsc) -> None:
    async with running_client(tmp_path, smsc.port) as rig:
        await smsc.expect("BIND")
        smsc.send(f"NACK {NACK_STORM - 1}")
        smsc.send("DELIVER 1 still bound")
        assert await smsc.expect("RESP 1") == "RESP 1 0"  # a few nacks do not end it
        smsc.send("NACK 1")
        await smsc.expect("CLOSED")
        await smsc.expect("BIND 9 esme1 secret", timeout=5)
        await until(lambda: rig.client.binds == 2)
        assert rig.counted("sms_gateway_smpp_errors_total", kind="nack") == NACK_STORM
        assert rig.client.check().details["last_error"] == "session ended: generic_nack storm"


@needs_perl
async def test_enquire_link_both_ways_and_a_silent_smsc_is_dropped(
    tmp_path: Path, smsc: PerlSmsc
) -> None:
    async with running_client(tmp_path, smsc.port, enquire_link=0.3, response_timeout=0.5) as rig:
        await smsc.expect("BIND")
        smsc.send("ENQUIRE")
        await smsc.expect("ENQUIRE_RESP")  # the SMSC's enquire_link answered
        await smsc.expect("ENQUIRE ", timeout=3)  # ours, after 0.3 s of silence, answered
        await smsc.expect("ENQUIRE ", timeout=3)
        assert rig.client.binds == 1
        smsc.send("SILENT")
        await smsc.expect("DONE SILENT")
        await smsc.expect("ENQUIRE ", timeout=3)  # unanswered now: closed after 0.5 s
        await smsc.expect("CLOSED", timeout=3)
        smsc.send("LOUD")
        await smsc.expect("BIND 9 esme1 secret", timeout=5)
        await until(lambda: rig.client.binds == 2)
        assert rig.counted("sms_gateway_smpp_errors_total", kind="silent") == 1


@needs_perl
async def test_a_store_that_cannot_commit_answers_rx_t_appn_and_the_smsc_redelivers(
    tmp_path: Path, smsc: PerlSmsc
) -> None:
    async with running_client(tmp_path, smsc.port, busy_timeout_ms=200) as rig:
        await smsc.expect("BIND")
        blocker = sqlite3.connect(tmp_path / "outbox.sqlite3", timeout=1, isolation_level=None)
        try:
            blocker.execute("BEGIN EXCLUSIVE")  # another process holds the write lock
            smsc.send("DELIVER 1 locked out")
            assert await smsc.expect("RESP 1") == f"RESP 1 {Status.RX_T_APPN.value}"
            await smsc.expect("REDELIVER 1")  # the SMSC sends it again after 0.3 s
            assert await smsc.expect("RESP 1") == f"RESP 1 {Status.RX_T_APPN.value}"
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        # the next redelivery commits and is answered ROK, once
        assert await smsc.expect("RESP 1 0", timeout=5) == "RESP 1 0"
        assert await texts(rig.outbox) == ["locked out"]
        smsc.send("DELIVER 1 locked out")  # a late duplicate of the same PDU: still one
        assert await smsc.expect("RESP 1") == "RESP 1 0"
        assert await texts(rig.outbox) == ["locked out"]
        assert rig.counted("sms_gateway_smpp_messages_total", outcome="temporary_error") >= 2
        assert rig.counted("sms_gateway_smpp_messages_total", outcome="stored") == 1
        assert rig.counted("sms_gateway_smpp_messages_total", outcome="duplicate") == 1


@pytest.mark.parametrize(("in_file", "bound"), [("samepass", True), ("notsame", False)])
async def test_the_clients_password_file_is_what_it_binds_with(
    tmp_path: Path, in_file: str, bound: bool
) -> None:
    """Both ends from one config file on disk: our client binds to our own server, whose
    account has the password `samepass`; the client's comes from its `password_file`."""
    secret_file(tmp_path / "op1.password", in_file)
    port = free_port()
    path = smpp_config(
        tmp_path,
        port,
        f"""
[[smpp_server.account]]
system_id = "box1"
password = "samepass"

[[smpp_client]]
name = "op1"
host = "127.0.0.1"
port = {port}
system_id = "box1"
password_file = "op1.password"
bind = "transceiver"
reconnect_max = 0.5
""",
    )
    cfg = config.load(path)
    assert cfg.smpp_server is not None
    outbox = await Outbox.open(cfg.store.path)
    metrics = Metrics()
    inbound = Inbound(Intake(outbox, metrics))
    server = SmppServer(cfg.smpp_server, inbound, metrics)
    await server.start()
    client = SmppClient(cfg.smpp_client[0], inbound, metrics)
    await client.start()

    def sample(name: str, **labels: str) -> float:
        return metrics.registry.get_sample_value(name, labels) or 0.0

    refused = "sms_gateway_smpp_errors_total"
    try:
        if bound:
            await until(lambda: client.check().details["state"] == "bound")
            await until(lambda: server.binds("box1") == 1)
            assert server.check().details["binds_refused"] == 0
            assert sample("sms_gateway_smpp_binds", source="smpp-client:op1") == 1
        else:
            await until(
                lambda: (
                    sample(refused, source="smpp-client:op1", bind="op1", kind="bind_refused") >= 2
                )  # refused, tried again after the backoff, refused again
            )
            details = client.check().details
            assert (details["bind"], details["state"]) == ("op1", "closed")
            assert details["last_error"] == f"bind refused: status {Status.RINVPASWD:#x}"
            assert server.binds("box1") == 0
            assert server.check().details["last_error"] == "wrong password"
            assert sample(refused, source="smpp-server:box1", bind="box1", kind="bind_refused") >= 2
        assert in_file not in str(client.check().details)
    finally:
        await client.stop()
        await server.stop()
        await outbox.close()


@needs_perl
async def test_a_bug_in_a_session_does_not_end_the_client(
    tmp_path: Path, smsc: PerlSmsc, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = SmppClient._session  # the client's own step, made to fail once
    calls = 0

    async def failing_once(self: SmppClient) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("a bug")
        await real(self)

    monkeypatch.setattr(SmppClient, "_session", failing_once)
    async with running_client(tmp_path, smsc.port, reconnect_max=0.2) as rig:
        await smsc.expect("BIND 9 esme1 secret", timeout=5)
        smsc.send("DELIVER 1 after the bug")
        assert await smsc.expect("RESP 1") == "RESP 1 0"
        assert await texts(rig.outbox) == ["after the bug"]
        assert rig.counted("sms_gateway_smpp_errors_total", kind="internal") == 1
