"""The SMSC side: GSM gateway boxes and Kannel bind to `[smpp_server]` with an account and hand
us received SMS as submit_sm or deliver_sm, each answered after its commit."""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import time
from collections.abc import Callable
from typing import Any

import structlog

from gateway.config import SmppAccountConfig, SmppServerConfig
from gateway.fields import normalize_phone
from gateway.health import Check, Level
from gateway.metrics import Metrics

from .inbound import Inbound, PeerRules
from .pdu import (
    BINDS,
    RESPONSE,
    Command,
    FrameError,
    PduError,
    Status,
    cstring,
    encode,
    parse_bind,
    read_pdu,
)
from .session import BindStatus, Link

__all__ = ["SmppServer", "source_of"]

log = structlog.get_logger(__name__)


def source_of(account: SmppAccountConfig) -> str:
    return f"smpp-server:{account.system_id}"


def _claims(account: SmppAccountConfig) -> frozenset[str]:
    return frozenset(normalize_phone(c) or c for c in account.claims)


class _Counters:
    def __init__(self, metrics: Metrics, source: str) -> None:
        self._metrics = metrics
        self._source = source

    def message(self, outcome: str) -> None:
        self._metrics.smpp_messages.labels(self._source, outcome).inc()

    def error(self, kind: str) -> None:
        self._metrics.smpp_errors.labels(self._source, kind).inc()


def _allowed(address: str, networks: tuple[str, ...]) -> bool:
    if not networks:
        return True
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in ipaddress.ip_network(n, strict=False) for n in networks)


class SmppServer:
    def __init__(
        self,
        cfg: SmppServerConfig,
        inbound: Inbound,
        metrics: Metrics,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.cfg = cfg
        self._inbound = inbound
        self._metrics = metrics
        self._clock = clock
        self._accounts = {a.system_id: a for a in cfg.account}
        self._server: asyncio.Server | None = None
        self._links: dict[Link, str] = {}  # link -> its account's system_id
        self._conns: set[asyncio.Task[Any]] = set()
        self._refused = 0
        self._last_refusal = ""
        for a in cfg.account:
            source = source_of(a)
            metrics.smpp_binds.labels(source).set(0)
            metrics.received.labels(source)
            metrics.duplicates.labels(source)

    @property
    def port(self) -> int:
        """The bound port (listen may name 0 in tests)."""
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        host, _, port = self.cfg.listen.rpartition(":")
        self._server = await asyncio.start_server(self._handle, host.strip("[]"), int(port))
        log.info("smpp.server_listening", listen=self.cfg.listen, accounts=len(self._accounts))

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for link in list(self._links):
            await link.close(timeout=2.0)
        if self._conns:
            await asyncio.wait(list(self._conns), timeout=10)
        for task in list(self._conns):
            task.cancel()
        if self._server is not None:
            await self._server.wait_closed()

    def binds(self, system_id: str) -> int:
        return sum(1 for s in self._links.values() if s == system_id)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        if len(self._conns) >= self.cfg.max_connections:
            writer.close()
            return
        self._conns.add(task)
        try:
            await self._session(reader, writer)
        except (ConnectionError, OSError) as e:
            log.info("smpp.connection_lost", error=str(e))
        finally:
            self._conns.discard(task)
            writer.close()

    def _refuse(
        self, writer: asyncio.StreamWriter, cid: int, seq: int, status: Status, **why: Any
    ) -> None:
        self._refused += 1
        self._last_refusal = str(why.get("reason", ""))
        system_id = str(why.get("system_id", ""))
        if system_id in self._accounts:
            self._metrics.smpp_errors.labels(
                source_of(self._accounts[system_id]), "bind_refused"
            ).inc()
        log.warning("smpp.bind_refused", status=status.name, **why)
        writer.write(encode(cid, seq, status))

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        address = str(peer[0]) if peer else ""
        try:
            header, pdu = await asyncio.wait_for(read_pdu(reader), self.cfg.bind_timeout)
        except (TimeoutError, asyncio.IncompleteReadError, FrameError):
            log.info("smpp.no_bind", peer=address)
            return
        if header.command_id not in BINDS:
            writer.write(encode(Command.GENERIC_NACK, header.seq, Status.RINVBNDSTS))
            log.info("smpp.no_bind", peer=address, command=f"{header.command_id:#x}")
            await writer.drain()
            return
        resp = header.command_id | RESPONSE
        try:
            bind = parse_bind(Command(header.command_id), pdu[16:])
        except PduError as e:
            self._refuse(writer, resp, header.seq, e.status, reason="malformed", peer=address)
            await writer.drain()
            return
        account = self._accounts.get(bind.system_id)
        if account is None:
            self._refuse(
                writer, resp, header.seq, Status.RINVSYSID,
                reason="unknown system_id", system_id=bind.system_id, peer=address,
            )  # fmt: skip
        elif not _allowed(address, account.allow):
            self._refuse(
                writer, resp, header.seq, Status.RBINDFAIL,
                reason="address not allowed", system_id=bind.system_id, peer=address,
            )  # fmt: skip
        elif not hmac.compare_digest(
            bind.password.encode("latin-1"), account.password[:8].encode("latin-1", "replace")
        ):
            self._refuse(
                writer, resp, header.seq, Status.RINVPASWD,
                reason="wrong password", system_id=bind.system_id, peer=address,
            )  # fmt: skip
        elif self.binds(account.system_id) >= account.max_binds:
            self._refuse(
                writer, resp, header.seq, Status.RBINDFAIL,
                reason="too many binds", system_id=bind.system_id, peer=address,
            )  # fmt: skip
        else:
            await self._serve(reader, writer, account, bind.command, resp, header.seq, address)
            return
        await writer.drain()

    async def _serve(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        account: SmppAccountConfig,
        command: Command,
        resp: int,
        seq: int,
        address: str,
    ) -> None:
        source = source_of(account)
        status = BindStatus(source, address, "bound", bound_at=self._clock())
        takes = {
            Command.BIND_RECEIVER: frozenset({Command.DELIVER_SM}),
            Command.BIND_TRANSMITTER: frozenset({Command.SUBMIT_SM, Command.DELIVER_SM}),
            Command.BIND_TRANSCEIVER: frozenset({Command.SUBMIT_SM, Command.DELIVER_SM}),
        }[command]
        link = Link(
            reader,
            writer,
            rules=PeerRules(source, account.alphabet, _claims(account)),
            inbound=self._inbound,
            status=status,
            counters=_Counters(self._metrics, source),
            window=self.cfg.window,
            enquire_every=self.cfg.enquire_link,
            response_timeout=self.cfg.response_timeout,
            takes=takes,
            clock=self._clock,
        )
        self._links[link] = account.system_id
        self._metrics.smpp_binds.labels(source).set(self.binds(account.system_id))
        writer.write(encode(resp, seq, Status.ROK, cstring(self.cfg.system_id)))
        log.info("smpp.bound", source=source, peer=address, bind=command.name.lower())
        reason = "closed"
        try:
            reason = await link.run()
        finally:
            del self._links[link]
            self._metrics.smpp_binds.labels(source).set(self.binds(account.system_id))
            log.info("smpp.unbound", source=source, peer=address, reason=reason)

    def check(self) -> Check:
        """One entry per account: its binds with state, last PDU and errors."""
        accounts: dict[str, Any] = {}
        for system_id in self._accounts:
            links = [link for link, s in self._links.items() if s == system_id]
            accounts[system_id] = {
                "binds": len(links),
                "sessions": [link.status.details() for link in links],
            }
        details: dict[str, Any] = {
            "listen": self.cfg.listen,
            "accounts": accounts,
            "binds_refused": self._refused,
        }
        if self._last_refusal:
            details["last_error"] = self._last_refusal
        return Check(Level.OK, details)
