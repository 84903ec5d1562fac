"""Our ESME against an SMSC from another implementation (Perl's Net::SMPP, Debian
libnet-smpp-perl): it binds, each deliver_sm is committed before its deliver_sm_resp."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from pathlib import Path

import pytest

from gateway import config
from gateway.intake import Intake
from gateway.metrics import Metrics
from gateway.outbox import Outbox
from gateway.sources.smpp.client import SmppClient
from gateway.sources.smpp.inbound import Inbound
from tests.sources.smpp.test_kill9 import free_port

SMSC = Path(__file__).parent / "data" / "net_smpp_smsc.pl"


def has_net_smpp() -> bool:
    if shutil.which("perl") is None:
        return False
    return subprocess.run(["perl", "-MNet::SMPP", "-e", "1"], capture_output=True).returncode == 0


pytestmark = pytest.mark.skipif(not has_net_smpp(), reason="libnet-smpp-perl not installed")


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
        smsc.kill()
        await smsc.wait()
        await outbox.close()
