"""A GoIP "SMS server" on UDP: takes the RECEIVE packets of one GoIP line, answers its keepalives.

Reference: the GoIP "SMS Interface" document (goip_sms_Interface_en): the line sends
``req:<n>;id:<id>;pass:<password>;num:...;signal:...;gsm_status:...;imsi:...`` as keepalive,
answered ``reg:<n>;status:200;``, and ``RECEIVE:<recvid>;id:<id>;password:<password>;
srcnum:<sender>;msg:<text>`` per SMS, answered ``RECEIVE <recvid> OK`` (or ``ERROR <why>``);
without an answer it sends the packet again. A long SMS comes as one packet per part, without
any header saying so: parts from one sender are joined once ``quiet_period`` passes without a
new one. Each packet is committed (as a part) before it is acknowledged, so nothing acknowledged
lives only in memory; the quiet period only decides when the parts become one message.

The password travels in clear in every keepalive, so it alone proves little: a packet is taken
only from an address in ``allow`` (any when empty), and a RECEIVE (or report) only from the
address of the line's last good keepalive. Nothing is answered to a packet that fails any of
these (an answer would go to a spoofable address), and rejections are logged at most once a
minute per address, with the number left out.

The SIM inventory (``inventory``): the line is one port, keyed by the keepalive's ``iccid`` when
it carries one, else ``goip:<name>:<id>``; ``imsi``, ``signal`` (0..31 as ``AT+CSQ``, 99 unknown),
``gsm_status`` (``LOGIN`` registered, ``LOGOUT`` not) and ``pro`` (the network's name) are
recorded as the keepalive says them, the phone from ``[[sim]]`` else its ``num``. The line is
live while keepalives come: ``keepalive_stale`` (180 s) without one makes its SIM absent, and
each committed RECEIVE is its ``last_sms``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog

from gateway.auth import address_allowed, parse_networks, token_matches
from gateway.config import GoipConfig, SimConfig
from gateway.errors import DecodeError, StoreError
from gateway.fields import MAX_TEXT, FieldError, normalize_phone
from gateway.health import Check, Level
from gateway.intake import Intake
from gateway.inventory.sims import Inventory, PhoneOrigin, Sighting, SimState
from gateway.outbox.models import Hold, Incoming, Part
from gateway.sources.dedup import digest
from gateway.sources.modem.answers import rssi_to_dbm
from gateway.sources.sim_match import phone_for
from gateway.sources.status import SourceStatus

__all__ = ["KIND", "GoipServer", "Packet", "parse_packet"]

log = structlog.get_logger(__name__)
KIND = "goip"
KEEPALIVE_STALE = 180.0  # seconds without a keepalive before /health calls the line degraded
MAX_SEQ = 64  # characters of a recvid or keepalive counter
MAX_PARTS = 255  # a concatenated SMS has at most this many: a longer burst is cut
REJECT_LOG_WINDOW = 60.0  # seconds: at most one goip.packet_rejected line per address in each
REJECT_LOG_ADDRESSES = 1024  # addresses remembered for that; beyond, they share one entry
# The packet's own names for the fields the rules check, for the answer and the log.
_FIELD_NAMES = {"phone_from": "srcnum", "text": "msg"}


@dataclass(frozen=True)
class Packet:
    """One datagram: ``kind`` (``req``, ``RECEIVE``, ``DELIVER``...), its sequence number
    (keepalive counter or recvid) and its fields; a RECEIVE's ``msg`` is the rest of the packet,
    semicolons included."""

    kind: str
    seq: str
    fields: dict[str, str]
    undecodable: bytes | None = None  # a RECEIVE's msg bytes when they are not UTF-8

    @property
    def password(self) -> str | None:
        return self.fields.get("password", self.fields.get("pass"))

    def redacted(self) -> str:
        """The packet as text without its password, for the audit copy; undecodable message
        bytes as ``msg_hex``."""
        parts = [f"{self.kind}:{self.seq}"]
        for key, value in self.fields.items():
            parts.append(f"{key}:{'***' if key in ('password', 'pass') else value}")
        if self.undecodable is not None:
            parts.append(f"msg_hex:{self.undecodable.hex().upper()}")
        return ";".join(parts)


def parse_packet(data: bytes) -> Packet:
    """Split a GoIP datagram into its fields; ``DecodeError`` when it is not one. A RECEIVE's
    text that is not UTF-8 is kept as bytes (``undecodable``), never with replacement marks."""
    head, _, rest = data.partition(b";")
    kind, colon, seq = head.decode("utf-8", "replace").partition(":")
    kind, seq = kind.strip(), seq.strip()
    if not colon or not kind.isascii() or not kind.isalpha() or len(kind) > 16:
        raise DecodeError("not a GoIP packet (expected KIND:<seq>;key:value;...)")
    if not seq or len(seq) > MAX_SEQ or not seq.isprintable() or any(c.isspace() for c in seq):
        raise DecodeError(f"{kind}: the sequence number is empty or malformed")
    fields: dict[str, str] = {}
    undecodable = None
    while rest:
        if kind == "RECEIVE" and rest.startswith(b"msg:"):
            try:
                fields["msg"] = rest[4:].decode("utf-8")  # the text may hold ';' and ':'
            except UnicodeDecodeError:
                fields["msg"], undecodable = "", rest[4:]
            break
        item, _, rest = rest.partition(b";")
        key, colon, value = item.decode("utf-8", "replace").partition(":")
        if colon and key.strip():
            fields.setdefault(key.strip().lower(), value.strip())
    return Packet(kind, seq, fields, undecodable)


class RejectLog:
    """``goip.packet_rejected`` at most once per ``REJECT_LOG_WINDOW`` per source address,
    saying how many were left out since the last line: a flood of spoofed packets must not
    flood the journal. Remembers at most ``REJECT_LOG_ADDRESSES`` addresses."""

    def __init__(self, source: str, clock: Callable[[], float]) -> None:
        self._source = source
        self._clock = clock
        self._seen: dict[str, tuple[float, int]] = {}  # address -> (last line at, left out)

    def reject(self, reason: str, peer: str) -> None:
        now = self._clock()
        key = peer
        if key not in self._seen and len(self._seen) >= REJECT_LOG_ADDRESSES:
            self._seen = {
                a: v for a, v in self._seen.items() if now - v[0] < REJECT_LOG_WINDOW or v[1]
            }
            if len(self._seen) >= REJECT_LOG_ADDRESSES:
                key = "(other addresses)"
        last = self._seen.get(key)
        if last is not None and now - last[0] < REJECT_LOG_WINDOW:
            self._seen[key] = (last[0], last[1] + 1)
            return
        self._seen[key] = (now, 0)
        log.warning(
            "goip.packet_rejected",
            source=self._source,
            reason=reason,
            peer=key,
            suppressed=last[1] if last is not None else 0,
        )


@dataclass(eq=False)
class _Burst:
    """Parts from one sender arriving close together: one message once they stop coming."""

    key: str
    sender: str
    first_at: float
    count: int = 0
    closed: bool = False  # no new part joins it
    joined: bool = False  # its parts are one message in the store
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    timer: asyncio.TimerHandle | None = None


class GoipServer:
    """One ``[[goip]]`` line: a UDP endpoint on ``listen``; ``await start()``, ``await stop()``."""

    def __init__(
        self,
        cfg: GoipConfig,
        intake: Intake,
        sims: Sequence[SimConfig] = (),
        *,
        status: SourceStatus | None = None,
        clock: Callable[[], float] = time.time,
        inventory: Inventory | None = None,
        keepalive_stale: float = KEEPALIVE_STALE,
    ) -> None:
        self.cfg = cfg
        self.source = f"{KIND}:{cfg.name}"
        self._intake = intake
        self._sims = sims  # read at each lookup: the daemon's SimTable, replaced on SIGHUP
        self._clock = clock
        self.status = status or SourceStatus(self.source, clock=clock)
        self._transport: asyncio.DatagramTransport | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._bursts: dict[str, _Burst] = {}
        self._closing: set[_Burst] = set()
        self._started_at: float | None = None
        self.last_keepalive_at: float | None = None
        self._line: dict[str, str] = {}  # what the last good keepalive said (num, imsi, signal)
        self._inventory = inventory
        self.keepalive_stale = keepalive_stale
        self._silence: asyncio.TimerHandle | None = None  # fires keepalive_stale after the last
        self._allow = parse_networks(cfg.allow)
        self.peer: str | None = None  # the address of the last good keepalive
        self._rejects = RejectLog(self.source, clock)

    @property
    def address(self) -> tuple[str, int]:
        """Where the server listens (the real port when ``listen`` asked for port 0)."""
        if self._transport is None:
            raise RuntimeError("GoipServer is not started")
        host, port = self._transport.get_extra_info("sockname")[:2]
        return str(host), int(port)

    async def start(self) -> None:
        host, _, port = self.cfg.listen.rpartition(":")
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _Protocol(self), local_addr=(host.strip("[]"), int(port))
        )
        self._transport = transport
        self._started_at = self._clock()
        log.info("goip.listening", source=self.source, listen=self.cfg.listen, port=self.address[1])

    async def stop(self) -> None:
        """Stop taking packets, finish the ones in hand, then join every burst now."""
        if self._transport is not None:
            self._transport.close()
        if self._silence is not None:
            self._silence.cancel()
            self._silence = None
        if self._inventory is not None:
            self._inventory.gone(self.source, self.cfg.id)
        bursts = {*self._bursts.values(), *self._closing}
        for burst in bursts:
            if burst.timer is not None:
                burst.timer.cancel()
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=5.0)
        for burst in bursts:
            await self._close(burst, retry=False)
        self._bursts.clear()
        self._closing.clear()
        self._transport = None

    def check(self) -> Check:
        now = self._clock()
        since = self.last_keepalive_at or self._started_at or now
        stale = now - since > self.keepalive_stale
        self.status.set_up(not stale and self.last_keepalive_at is not None)
        return self.status.check(
            level=Level.DEGRADED if stale else Level.OK,
            listen=self.cfg.listen,
            last_keepalive_age=round(now - self.last_keepalive_at, 3)
            if self.last_keepalive_at is not None
            else None,
            gsm_status=self._line.get("gsm_status"),
            signal=self._line.get("signal"),
            open_parts=sum(b.count for b in self._bursts.values()),
        )

    # -- packets -------------------------------------------------------------------------

    def _on_datagram(self, data: bytes, addr: tuple[str, int]) -> None:
        """Unauthenticated packets get no answer at all: it would go to a spoofable address."""
        if not address_allowed(self._allow, addr[0]):
            self._reject("address not in allow", addr)
            return
        try:
            packet = parse_packet(data)
        except DecodeError as e:
            self._reject(str(e), addr)
            return
        trusted = packet.fields.get("id") == self.cfg.id and token_matches(
            packet.password, self.cfg.password
        )
        if not trusted:
            self._reject(f"{packet.kind} with a wrong id or password", addr)
        elif packet.kind == "req":
            self._keepalive(packet, addr)
        elif addr[0] != self.peer:
            # The password is in every keepalive in clear: whoever saw it could send from
            # anywhere. The GoIP sends this again, and is heard once it has kept alive from here.
            self._reject(f"{packet.kind} from an address this id has not kept alive from", addr)
        elif packet.kind == "RECEIVE":
            self._spawn(self._take(packet, addr))
        else:  # delivery reports, call records, state changes: nothing for us, but acknowledged
            self._send(f"{packet.kind} {packet.seq} OK", addr)

    def _keepalive(self, packet: Packet, addr: tuple[str, int]) -> None:
        if addr[0] != self.peer:
            log.info("goip.registered", source=self.source, peer=addr[0], before=self.peer)
            self.peer = addr[0]
        self.last_keepalive_at = self._clock()
        self.status.set_up(True)
        keys = ("num", "imsi", "iccid", "signal", "gsm_status", "pro")
        self._line = {k: packet.fields.get(k, "") for k in keys}
        self._send(f"reg:{packet.seq};status:200;", addr)
        if self._inventory is not None:
            self._inventory.report(self.sighting())
            if self._silence is not None:
                self._silence.cancel()
            loop = asyncio.get_running_loop()
            self._silence = loop.call_later(self.keepalive_stale, self._fell_silent)

    def sighting(self) -> Sighting:
        """The line's SIM as its last keepalive told it (nothing made up: an absent field is
        unknown)."""
        line = self._line
        signal = line.get("signal", "")
        rssi = int(signal) if signal.isascii() and signal.isdigit() and len(signal) <= 2 else None
        gsm = line.get("gsm_status", "").upper()
        if gsm not in ("", "LOGIN"):
            state = SimState.NOT_REGISTERED  # LOGOUT: the module is not on the network
        elif rssi == 99:
            state = SimState.NO_SIGNAL
        else:
            state = SimState.READY  # LOGIN (or firmware that does not say: it keeps alive)
        imsi, iccid = _digits_or_none(line.get("imsi", "")), _iccid(line.get("iccid", ""))
        phone = phone_for(self._sims, source=self.source, port=self.cfg.id, imsi=imsi, iccid=iccid)
        origin = PhoneOrigin.SIM
        if phone is None:
            phone, origin = normalize_phone(line.get("num", "")), PhoneOrigin.SOURCE
        return Sighting(
            source=self.source,
            location=self.cfg.id,
            state=state,
            port=self.cfg.id,
            iccid=iccid,
            imsi=imsi,
            phone=phone or "",
            phone_origin=origin.value if phone else None,
            signal=rssi_to_dbm(rssi) if rssi is not None and rssi <= 31 else None,
            network_name=line.get("pro", "")[:64],
        )

    def _fell_silent(self) -> None:
        """No keepalive for ``keepalive_stale``: the line's SIM is not in a working module."""
        self._silence = None
        log.warning("goip.line_silent", source=self.source, after=self.keepalive_stale)
        self.status.set_up(False)
        if self._inventory is not None:
            self._inventory.gone(self.source, self.cfg.id)

    def _sms_arrived(self) -> None:
        if self._inventory is not None:
            self._inventory.sms(self.source, self.cfg.id, self._clock())

    def _reject(self, reason: str, addr: tuple[str, int]) -> None:
        self._rejects.reject(reason, addr[0])
        self.status.rejected_input(reason)

    def _send(self, text: str, addr: tuple[str, int]) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.sendto(text.encode("utf-8"), addr)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _phone(self) -> str:
        imsi = self._line.get("imsi") or None
        iccid = _iccid(self._line.get("iccid", ""))
        found = phone_for(self._sims, source=self.source, port=self.cfg.id, imsi=imsi, iccid=iccid)
        return found or normalize_phone(self._line.get("num", "")) or ""

    # -- parts and bursts ----------------------------------------------------------------

    async def _take(self, packet: Packet, addr: tuple[str, int]) -> None:
        sender = packet.fields.get("srcnum", "")
        text = packet.fields.get("msg", "")
        if packet.undecodable is not None:
            await self._take_undecodable(packet, packet.undecodable, sender, addr)
            return
        if len(text) > MAX_TEXT:
            self._reject(f"RECEIVE {packet.seq}: text longer than {MAX_TEXT}", addr)
            self._send(f"RECEIVE {packet.seq} ERROR text too long", addr)
            return
        while True:
            burst = self._bursts.get(sender)
            if burst is None:
                now = self._clock()
                burst = _Burst(f"{self.cfg.id}|{sender}|{packet.seq}|{now:.3f}", sender, now)
                self._bursts[sender] = burst
            async with burst.lock:
                if burst.closed:
                    continue  # it was being joined while we waited: this part starts a new one
                try:
                    if not await self._add(burst, packet, sender, text):
                        return  # not committed: no answer, so the GoIP sends it again
                except FieldError as e:
                    if burst.count == 0 and burst.timer is None:
                        self._arm(burst, self.cfg.quiet_period)  # let an empty burst go
                    self._refuse(packet, addr, e)
                    return
            break
        self._sms_arrived()
        self._send(f"RECEIVE {packet.seq} OK", addr)

    def _refuse(self, packet: Packet, addr: tuple[str, int], e: FieldError) -> None:
        """A value the field rules refuse: that SMS alone is refused, answered ERROR so the GoIP
        stops sending it (it never becomes acceptable), and logged once, naming the field."""
        name = _FIELD_NAMES.get(e.field, e.field)
        log.warning(
            "goip.sms_refused",
            source=self.source,
            recvid=packet.seq,
            field=name,
            problem=e.problem,
        )
        self.status.rejected_input(f"RECEIVE {packet.seq}: {name}: {e.problem}")
        self._send(f"RECEIVE {packet.seq} ERROR {name}: {e.problem}", addr)

    async def _take_undecodable(
        self, packet: Packet, msg: bytes, sender: str, addr: tuple[str, int]
    ) -> None:
        """A text that is not UTF-8: kept held with its bytes for a person, apart from any
        burst (it cannot be joined to text), and acknowledged once committed."""
        item = Incoming(
            source=self.source,
            phone=self._phone(),
            phone_from=sender,
            text="",
            received_at=self._clock(),
            source_ref=f"{self.cfg.id}|{packet.seq}|{digest(sender, msg.hex())}",
            hold=Hold.UNDECODABLE,
            raw=packet.redacted()[:4096],
        )
        try:
            (accepted,) = await self._intake.accept([item])
        except FieldError as e:
            self._refuse(packet, addr, e)
            return
        except StoreError as e:
            log.error("goip.store_unavailable", source=self.source, recvid=packet.seq, error=str(e))
            self.status.store_failed(str(e))
            return
        log.warning("goip.not_utf8", source=self.source, smsId=accepted.sms_id, recvid=packet.seq)
        self.status.accepted(0 if accepted.duplicate else 1)
        self._sms_arrived()
        self._send(f"RECEIVE {packet.seq} OK", addr)

    async def _add(self, burst: _Burst, packet: Packet, sender: str, text: str) -> bool:
        part = Part(
            source=self.source,
            group_key=burst.key,
            seq=burst.count + 1,
            total=0,  # open-ended: the end of the burst closes the group
            text=text,
            phone=self._phone(),
            phone_from=sender,
            received_at=self._clock(),
            # The recvid alone could come back after a GoIP restart; the content keeps it apart.
            source_ref=f"{self.cfg.id}|{packet.seq}|{digest(sender, text)}",
            raw=packet.redacted()[:4096],
        )
        try:
            result = await self._intake.accept_part(part)
        except StoreError as e:
            log.error("goip.store_unavailable", source=self.source, recvid=packet.seq, error=str(e))
            self.status.store_failed(str(e))
            return False
        self.status.accepted(0)
        if not result.duplicate:
            burst.count += 1
        if burst.count >= MAX_PARTS:
            self._arm(burst, 0)
        elif not result.duplicate or burst.timer is None:
            self._arm(burst, self.cfg.quiet_period)
        return True

    def _arm(self, burst: _Burst, delay: float) -> None:
        if burst.timer is not None:
            burst.timer.cancel()
        loop = asyncio.get_running_loop()
        burst.timer = loop.call_later(delay, lambda: self._spawn(self._close(burst, retry=True)))

    async def _close(self, burst: _Burst, *, retry: bool) -> None:
        """Join the burst's parts in the outbox, as they arrived."""
        async with burst.lock:
            if burst.joined:
                return
            burst.closed = True
            burst.timer = None
            if self._bursts.get(burst.sender) is burst:
                del self._bursts[burst.sender]
            if burst.count == 0:
                burst.joined = True
                return
            try:
                await self._intake.close_group(self.source, burst.key)
            except StoreError as e:
                log.error("goip.join_failed", source=self.source, parts=burst.count, error=str(e))
                self.status.store_failed(str(e))
                self._closing.add(burst)
                if retry:
                    self._arm(burst, self.cfg.quiet_period)
                return
            burst.joined = True
            self._closing.discard(burst)
            self.status.accepted(1)


def _digits_or_none(value: str) -> str | None:
    value = value.strip()
    return value if value.isascii() and value.isdigit() and len(value) <= 20 else None


def _iccid(value: str) -> str | None:
    """The keepalive's ``iccid`` as digits (one trailing filler ``F`` dropped); ``None`` when it
    is empty or not an ICCID (18 to 22 digits)."""
    digits = value.strip().upper().removesuffix("F")
    return digits if digits.isascii() and digits.isdigit() and 18 <= len(digits) <= 22 else None


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, server: GoipServer) -> None:
        self._server = server

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        try:
            self._server._on_datagram(data, addr)
        except Exception:  # a bad packet must never stop the endpoint
            log.exception("goip.packet_failed", source=self._server.source, peer=addr[0])

    def error_received(self, exc: Exception) -> None:
        log.warning("goip.socket_error", source=self._server.source, error=str(exc))
