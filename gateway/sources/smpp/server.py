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

from .counters import BindCounters
from .inbound import Inbound, PeerRules
from .pdu import (
    BINDS,
    MESSAGES,
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

__all__ = ["SmppServer", "bind_name", "source_of"]

log = structlog.get_logger(__name__)


def source_of(account: SmppAccountConfig) -> str:
    return f"smpp-server:{account.system_id}"


def _claims(account: SmppAccountConfig) -> frozenset[str]:
    return frozenset(normalize_phone(c) or c for c in account.claims)


def bind_name(system_id: str, slot: int) -> str:
    """A bind's label in metrics, /health and logs: the account and its slot, `box1#2`."""
    return f"{system_id}#{slot}"


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
        self._links: dict[Link, tuple[str, int]] = {}  # link -> its account's system_id, slot
        self._slots: dict[str, set[int]] = {a.system_id: set() for a in cfg.account}
        self._counters: dict[str, BindCounters] = {}  # by bind name, kept for the slot's reuse
        self._conns: set[asyncio.Task[Any]] = set()
        self._refused = 0
        self._last_refusal = ""
        for a in cfg.account:
            source = source_of(a)
            metrics.smpp_binds.labels(source).set(0)
            metrics.received.labels(source)
            metrics.duplicates.labels(source)
            # 0 from the start, so the first refused bind is an increase (alert rule)
            metrics.smpp_errors.labels(source, a.system_id, "bind_refused")

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
        return len(self._slots[system_id])

    def _take_slot(self, account: SmppAccountConfig) -> int | None:
        """The lowest slot 1..max_binds the account has free, taken; None when all are."""
        taken = self._slots[account.system_id]
        slot = next((n for n in range(1, account.max_binds + 1) if n not in taken), None)
        if slot is not None:
            taken.add(slot)
        return slot

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
        if system_id in self._accounts:  # an unknown one is not counted: any name could come
            # Refused before it had a slot: counted under the account's own name as its bind.
            self._metrics.smpp_errors.labels(
                source_of(self._accounts[system_id]), system_id, "bind_refused"
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
        elif (slot := self._take_slot(account)) is None:
            self._refuse(
                writer, resp, header.seq, Status.RBINDFAIL,
                reason="too many binds", system_id=bind.system_id, peer=address,
            )  # fmt: skip
        else:
            try:
                await self._serve(
                    reader, writer, account, slot, bind.command, resp, header.seq, address
                )
            finally:
                self._slots[account.system_id].discard(slot)
                self._metrics.smpp_binds.labels(source_of(account)).set(
                    self.binds(account.system_id)
                )
            return
        await writer.drain()

    async def _serve(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        account: SmppAccountConfig,
        slot: int,
        command: Command,
        resp: int,
        seq: int,
        address: str,
    ) -> None:
        source = source_of(account)
        name = bind_name(account.system_id, slot)
        status = BindStatus(source, address, "bound", bound_at=self._clock())
        counters = self._counters.get(name)
        if counters is None:
            counters = self._counters[name] = BindCounters(self._metrics, source, name)
        takes = {
            Command.BIND_RECEIVER: frozenset({Command.DELIVER_SM, Command.DATA_SM}),
            Command.BIND_TRANSMITTER: frozenset(MESSAGES),
            Command.BIND_TRANSCEIVER: frozenset(MESSAGES),
        }[command]
        link = Link(
            reader,
            writer,
            rules=PeerRules(source, account.alphabet, _claims(account), account.retransmit_window),
            inbound=self._inbound,
            status=status,
            counters=counters,
            window=self.cfg.window,
            enquire_every=self.cfg.enquire_link,
            response_timeout=self.cfg.response_timeout,
            takes=takes,
            clock=self._clock,
        )
        self._links[link] = (account.system_id, slot)
        counters.watch(status)
        self._metrics.smpp_binds.labels(source).set(self.binds(account.system_id))
        writer.write(encode(resp, seq, Status.ROK, cstring(self.cfg.system_id)))
        mode = command.name.lower().removeprefix("bind_")
        log.info("smpp.bound", source=source, bind=name, peer=address, mode=mode)
        reason = "closed"
        try:
            reason = await link.run()
        finally:
            del self._links[link]
            counters.idle()
            log.info("smpp.unbound", source=source, bind=name, peer=address, reason=reason)

    def check(self) -> Check:
        """One entry per account: its binds (the `bind` label of their metrics) with state,
        last PDU and errors, in slot order."""
        accounts: dict[str, Any] = {}
        for system_id in self._accounts:
            links = sorted(
                ((slot, link) for link, (s, slot) in self._links.items() if s == system_id),
                key=lambda found: found[0],
            )
            accounts[system_id] = {
                "binds": len(links),
                "sessions": [
                    {"bind": bind_name(system_id, slot), **link.status.details()}
                    for slot, link in links
                ],
            }
        details: dict[str, Any] = {
            "listen": self.cfg.listen,
            "accounts": accounts,
            "binds_refused": self._refused,
        }
        if self._last_refusal:
            details["last_error"] = self._last_refusal
        return Check(Level.OK, details)
