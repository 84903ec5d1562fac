"""The real daemon's SMPP sides at once: its ESME binds over TLS (verified against a trustme CA,
named by SSL_CERT_FILE in the daemon's environment) to a Net::SMPP SMSC behind a TLS
terminator, and a box binds to its [smpp_server]; /health shows each bind's state, last PDU
and errors, /metrics counts per connection, and what they delivered reaches the stand-in."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import trustme
from prometheus_client.parser import text_string_to_metric_families

from gateway.play.standin import StandIn
from gateway.sources.smpp.pdu import Command, Status
from tests.fakes.daemon import DaemonProcess, write_config
from tests.sources.smpp.peer import Peer, sm
from tests.sources.smpp.test_client import PerlSmsc, has_net_smpp
from tests.sources.smpp.test_kill9 import free_port

pytestmark = pytest.mark.skipif(not has_net_smpp(), reason="libnet-smpp-perl not installed")


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        writer.close()


@contextlib.asynccontextmanager
async def tls_terminator(cert: trustme.LeafCert, backend_port: int) -> AsyncIterator[int]:
    """TLS on a port of its own, the plain bytes to and from the SMSC at `backend_port`."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(context)
    pipes: set[asyncio.Task[None]] = set()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", backend_port)
        except OSError:
            writer.close()
            return
        for task in (
            asyncio.create_task(_pipe(reader, up_writer)),
            asyncio.create_task(_pipe(up_reader, writer)),
        ):
            pipes.add(task)
            task.add_done_callback(pipes.discard)

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=context)
    try:
        yield int(server.sockets[0].getsockname()[1])
    finally:
        server.close()
        for task in list(pipes):
            task.cancel()
        await asyncio.gather(*pipes, return_exceptions=True)


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            found[(s.name, frozenset(s.labels.items()))] = s.value
    return found


async def until(check: Callable[[], Any], timeout: float = 10.0) -> Any:
    async with asyncio.timeout(timeout):
        while not (result := await check()):  # noqa: ASYNC110 - the daemon is another process
            await asyncio.sleep(0.1)
        return result


async def test_tls_bind_health_and_metrics_per_connection_through_the_daemon(
    tmp_path: Path, standin: StandIn
) -> None:
    ca = trustme.CA()
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    smsc = await PerlSmsc.start()
    server_port = free_port()
    daemon: DaemonProcess | None = None
    box = Peer()
    try:
        async with tls_terminator(ca.issue_cert("127.0.0.1"), smsc.port) as tls_port:
            extra = f"""
[smpp_server]
listen = "127.0.0.1:{server_port}"

[[smpp_server.account]]
system_id = "box1"
password = "boxpw"

[[smpp_client]]
name = "op1"
host = "127.0.0.1"
port = {tls_port}
tls = true
system_id = "esme1"
password = "secret"
bind = "transceiver"
"""
            path = write_config(tmp_path, standin.url, extra=extra)
            daemon = DaemonProcess(path, env={"SSL_CERT_FILE": str(ca_file)})
            await daemon.start()
            assert await smsc.expect("BIND", timeout=15) == "BIND 9 esme1 secret"
            for i in (1, 2, 3):
                smsc.send(f"DELIVER {i} over tls {i}")
                assert await smsc.expect(f"RESP {i}") == f"RESP {i} 0"

            await box.connect(server_port)
            assert (await box.bind("box1", "boxpw")).status == Status.ROK
            box.send_message(sm(7, b"from the box", command=Command.SUBMIT_SM))
            h, _ = await box.read_until(Command.SUBMIT_SM_RESP)
            assert h.status == Status.ROK
            assert (await box.bind("box1", "wrong")).status == Status.RALYBND  # same session
            bad = Peer()
            await bad.connect(server_port)
            assert (await bad.bind("box1", "wrong")).status == Status.RINVPASWD
            await bad.close()

            status, body = await daemon.health()
            assert status == 200
            client = body["checks"]["smpp-client:op1"]
            assert client["status"] == "ok"
            assert client["state"] == "bound"
            assert client["bind"] == "op1"
            assert client["messages"] == 3
            assert client["errors"] == 0
            assert client["last_pdu"] == "deliver_sm"
            assert client["last_pdu_at"] > 0
            server = body["checks"]["smpp-server"]
            assert server["binds_refused"] == 1
            assert server["last_error"] == "wrong password"
            (session,) = server["accounts"]["box1"]["sessions"]
            assert session["state"] == "bound"
            assert session["bind"] == "box1#1"
            assert session["messages"] == 1
            assert session["last_pdu"] == "bind_transceiver"
            assert "secret" not in str(body) and "boxpw" not in str(body)

            status, text = await daemon.request("GET", "/metrics", token=None)
            assert status == 200
            found = samples(text)

            def metric(name: str, **labels: str) -> float:
                return found.get((name, frozenset(labels.items())), 0.0)

            op1, box1 = "smpp-client:op1", "smpp-server:box1"
            assert metric("sms_gateway_smpp_binds", source=op1) == 1
            assert metric("sms_gateway_smpp_binds", source=box1) == 1
            stored = {"outcome": "stored"}
            assert metric("sms_gateway_smpp_messages_total", source=op1, bind="op1", **stored) == 3
            assert (
                metric("sms_gateway_smpp_messages_total", source=box1, bind="box1#1", **stored) == 1
            )
            refused = {"kind": "bind_refused"}  # before a slot: under the account's name
            assert metric("sms_gateway_smpp_errors_total", source=box1, bind="box1", **refused) == 1
            assert (
                metric("sms_gateway_smpp_errors_total", source=op1, bind="op1", kind="connect") == 0
            )
            assert ("sms_gateway_smpp_in_flight", frozenset(
                {"source": box1, "bind": "box1#1"}.items()
            )) in found  # fmt: skip

            await standin.wait_for(lambda s: len(s.delivered()) == 4, timeout=20)
            texts = sorted(p.body["text"] for p in standin.delivered() if p.body is not None)
            assert texts == ["from the box", "over tls 1", "over tls 2", "over tls 3"]
            await box.close()
            assert await daemon.stop() == 0
            assert await smsc.expect("UNBIND", timeout=10) == "UNBIND"  # a polite unbind
    finally:
        if daemon is not None and daemon.proc is not None and daemon.proc.poll() is None:
            daemon.kill()
        await smsc.stop()


async def test_the_client_refuses_an_smsc_whose_certificate_it_cannot_verify(
    tmp_path: Path, standin: StandIn
) -> None:
    ca = trustme.CA()  # the daemon is not told to trust it
    smsc = await PerlSmsc.start()
    try:
        async with tls_terminator(ca.issue_cert("127.0.0.1"), smsc.port) as tls_port:
            extra = f"""
[[smpp_client]]
name = "op1"
host = "127.0.0.1"
port = {tls_port}
tls = true
system_id = "esme1"
password = "secret"
reconnect_max = 0.5
"""
            daemon = DaemonProcess(write_config(tmp_path, standin.url, extra=extra))
            await daemon.start()
            try:

                async def failed() -> Any:
                    _, text = await daemon.request("GET", "/metrics", token=None)
                    key = ("sms_gateway_smpp_errors_total", frozenset(
                        {"source": "smpp-client:op1", "bind": "op1", "kind": "connect"}.items()
                    ))  # fmt: skip
                    return samples(text).get(key, 0) >= 2  # tried again, refused again

                await until(failed)
                _, body = await daemon.health()
                check = body["checks"]["smpp-client:op1"]
                assert check["status"] == "degraded"
                assert check["state"] == "closed"
                assert "CERTIFICATE_VERIFY_FAILED" in check["last_error"]
                assert check["binds"] == 0
                assert not any(e.startswith("BIND") for e in smsc.events)
            finally:
                await daemon.stop()
    finally:
        await smsc.stop()
