"""A client of a Yeastar TG gateway's TCP API (port 5038): logs in and takes its ReceivedSMS events.

Reference: Yeastar TG series "API Developer Guide" (an Asterisk-manager-style protocol): the
client sends ``Action: Login`` / ``Username`` / ``Secret``; the TG answers ``Response: Success``
(or ``Error``) and from then on writes one block per received SMS part::

    Event: ReceivedSMS
    Privilege: all,smscommand
    ID: 244
    GsmSpan: 2
    Sender: +79001234567
    Recvtime: 2025-03-06 06:12:09
    Index: 1
    Total: 2
    Smsc: +79000000000
    Content: %D0%9F%D1%80%D0%B8%D0%B2%D0%B5%D1%82+
    --END SMS EVENT--

``Content`` is URL-encoded UTF-8 (``+`` is a space; some firmware starts it with a BOM); parts of
one long SMS share ``ID`` and are joined by ``Index`` / ``Total``. Firmware numbers the parts from
1 (``1..Total``) or from 0 (``0..Total-1``): each part goes to the outbox as it comes, with its
``Index`` as given, and the outbox completes a group in either numbering (gateway/outbox/parts.py).
The TG does not repeat an event, so one that cannot be committed is retried here until it is
(reading pauses meanwhile); nothing is acknowledged or kept in memory.

The SIM inventory (``inventory``): after login and with every ping the client asks
``Action: smscommand`` / ``command: gsm show spans`` (one ``GSM span <n>: Power on, Provisioned,
Up, Active,Standard`` line per port; ``Down``, ``Undetected SIM Card`` or ``Power off`` in its
place otherwise), then ``gsm show span <n>`` for each port that is up (``SIM IMSI``, ``Signal
Quality (0,31)``, ``Network Name``, ``Status``). A port is keyed ``yeastar:<name>:<span>`` (the
TG reports no ICCID), ready and live while the session is up and the span says ``Up``; a span
that is down is ``not_registered``, one without a SIM or power is absent, and every port goes
absent when the session ends. A TG that does not answer the command still lists the spans its
``ReceivedSMS`` events name, never live (nothing proves the port is working).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import re
import time
from collections.abc import Callable, Mapping, Sequence
from urllib.parse import unquote_plus

import structlog

from gateway.config import SimConfig, YeastarConfig
from gateway.errors import DecodeError, GatewayError, StoreError
from gateway.fields import MAX_TEXT, FieldError, device_time
from gateway.health import Check, Level
from gateway.intake import Intake
from gateway.inventory.sims import Inventory, PhoneOrigin, Sighting, SimState
from gateway.outbox.models import Hold, Incoming, Part
from gateway.sources.dedup import digest
from gateway.sources.modem.answers import rssi_to_dbm
from gateway.sources.sim_match import phone_for
from gateway.sources.status import SourceStatus
from gateway.tasks import cancel_and_wait

__all__ = ["KIND", "YeastarClient", "item_from_event", "part_position"]

log = structlog.get_logger(__name__)
KIND = "yeastar"
_ENDS = ("--END SMS EVENT--", "--END COMMAND--")
MAX_PARTS = 255
# The event's own names for the fields the rules check, for the log.
_FIELD_NAMES = {"phone_from": "Sender", "text": "Content"}
_SPANS = b"Action: smscommand\r\ncommand: gsm show spans\r\n\r\n"
_SPAN_LINE = re.compile(r"GSM span (\d{1,3})", re.IGNORECASE)
MAX_SPANS = 256  # port lines taken from one answer


def span_state(status: str) -> SimState:
    """``Power on, Provisioned, Up, Active,Standard`` -> ready; ``Down`` -> not registered;
    ``Undetected SIM Card`` or ``Power off`` -> absent."""
    items = {item.strip().lower() for item in status.split(",")}
    if "power off" in items or any("undetected sim" in item for item in items):
        return SimState.ABSENT
    return SimState.READY if "up" in items else SimState.NOT_REGISTERED


class LoginRejected(GatewayError):
    """The TG refused the API user or password."""


def part_position(fields: Mapping[str, str]) -> tuple[int, int]:
    """(Index, Total) of an event, each part numbered from 0 or from 1; ``DecodeError`` when
    they fit neither numbering."""
    index, total = _number(fields, "Index"), _number(fields, "Total")
    if not (1 <= total <= MAX_PARTS and 0 <= index <= total):
        raise DecodeError(
            f"Index {index} of Total {total}; expected 0 <= Index <= Total <= {MAX_PARTS}"
        )
    return index, total


def group_of(fields: Mapping[str, str]) -> str:
    """The key the parts of one long SMS share."""
    span, sender = fields.get("GsmSpan", "").strip(), fields.get("Sender", "").strip()
    total = fields.get("Total", "1").strip() or "1"
    return f"{span}|{sender}|{fields.get('ID', '').strip() or '-'}|{total}"


def item_from_event(
    fields: Mapping[str, str],
    *,
    source: str,
    sims: Sequence[SimConfig],
    now: float,
) -> Incoming | Part:
    """The message (or part of one, numbered by its ``Index`` from 0 or from 1 as the TG
    numbered it) a ReceivedSMS event carries; ``DecodeError`` if malformed."""
    span = fields.get("GsmSpan", "").strip()
    sender = fields.get("Sender", "").strip()
    sms_id = fields.get("ID", "").strip()
    recvtime = fields.get("Recvtime", "").strip()
    content = fields.get("Content")
    if not span or content is None:
        raise DecodeError("ReceivedSMS without GsmSpan or Content")
    index, total = part_position(fields)
    text = decode_content(content)
    phone = phone_for(sims, source=source, port=span) or ""
    ref = f"{span}|{sender}|{sms_id}|{recvtime}|{index}/{total}|{digest(content)}"
    received_at = device_time(recvtime, now, source=source)
    if total > 1:
        return Part(
            source=source,
            group_key=group_of(fields),
            seq=index,
            total=total,
            text=text,
            phone=phone,
            phone_from=sender,
            received_at=received_at,
            source_ref=ref,
            raw=content[:4096],
        )
    return Incoming(
        source=source,
        phone=phone,
        phone_from=sender,
        text=text,
        received_at=received_at,
        source_ref=ref,
        hold=None if phone else Hold.NO_PHONE,
        raw=content[:4096],
    )


def decode_content(content: str) -> str:
    """URL-encoded UTF-8 to text, a leading byte-order mark dropped."""
    try:
        text = unquote_plus(content.strip(), encoding="utf-8", errors="strict")
    except UnicodeDecodeError:
        raise DecodeError("Content is not URL-encoded UTF-8") from None
    text = text.removeprefix("\ufeff")
    if len(text) > MAX_TEXT:
        raise DecodeError(f"Content longer than {MAX_TEXT} characters")
    return text


def _number(fields: Mapping[str, str], key: str) -> int:
    value = fields.get(key, "1").strip() or "1"
    if not (value.isascii() and value.isdigit() and len(value) <= 3):
        raise DecodeError(f"{key} is {value[:10]!r}; expected a small number")
    return int(value)


class YeastarClient:
    """One ``[[yeastar]]`` TG: stays logged in, reconnecting with capped, jittered backoff."""

    def __init__(
        self,
        cfg: YeastarConfig,
        intake: Intake,
        sims: Sequence[SimConfig] = (),
        *,
        status: SourceStatus | None = None,
        clock: Callable[[], float] = time.time,
        ping_interval: float = 20.0,
        idle_timeout: float = 60.0,
        connect_timeout: float = 10.0,
        rand: Callable[[], float] = random.random,
        inventory: Inventory | None = None,
    ) -> None:
        self.cfg = cfg
        self.source = f"{KIND}:{cfg.name}"
        self._intake = intake
        self._sims = sims  # read at each lookup: the daemon's SimTable, replaced on SIGHUP
        self._clock = clock
        self.status = status or SourceStatus(self.source, clock=clock)
        self._ping_interval = ping_interval
        self._idle_timeout = idle_timeout
        self._connect_timeout = connect_timeout
        self._rand = rand
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.connected = False
        self.connects = 0
        self.last_connected_at: float | None = None
        self._inventory = inventory
        self._spans: dict[str, dict[str, str]] = {}  # span -> what the TG said of it this session

    def reconnect_delay(self, failures: int) -> float:
        """Seconds before the next attempt after ``failures`` failed ones in a row: 0.5 s,
        doubling, capped at ``reconnect_max``, plus up to 1 s (a quarter of a smaller cap) of
        jitter so TGs cut off together do not reconnect together; never above the cap."""
        cap = self.cfg.reconnect_max
        exponent = min(max(1, failures) - 1, 64)  # 2**64 * 0.5 s is past any cap
        jitter = min(1.0, cap / 4) * self._rand()
        return min(min(cap, 0.5 * 2.0**exponent) + jitter, cap)

    async def start(self) -> None:
        self._stopping.clear()
        self._task = asyncio.get_running_loop().create_task(self._run(), name=self.source)

    async def stop(self) -> None:
        """Cancel the session. A cancel of ``stop`` itself propagates."""
        self._stopping.set()
        if self._task is not None:
            task, self._task = self._task, None
            await cancel_and_wait(task)
        self._set_connected(False)

    def check(self) -> Check:
        now = self._clock()
        return self.status.check(
            level=Level.OK if self.connected else Level.DEGRADED,
            connected=self.connected,
            host=f"{self.cfg.host}:{self.cfg.port}",
            connects=self.connects,
            last_connected_age=round(now - self.last_connected_at, 3)
            if self.last_connected_at is not None
            else None,
        )

    # -- connection ----------------------------------------------------------------------

    async def _run(self) -> None:
        failures = 0
        while not self._stopping.is_set():
            try:
                await self._session()
                failures = 0  # the session logged in and later ended
                error = "connection closed by the TG"
            except LoginRejected as e:
                error = str(e)
                log.error("yeastar.login_failed", source=self.source, user=self.cfg.username)
            except (OSError, TimeoutError, ValueError, DecodeError) as e:
                error = f"{type(e).__name__}: {e}"
            self._set_connected(False)
            if self._stopping.is_set():
                return
            failures += 1
            delay = self.reconnect_delay(failures)
            self.status.last_error = error[:300]
            log.warning("yeastar.disconnected", source=self.source, error=error, retry_in=delay)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._stopping.wait()

    async def _session(self) -> None:
        async with asyncio.timeout(self._connect_timeout):
            reader, writer = await asyncio.open_connection(self.cfg.host, self.cfg.port)
        pinger: asyncio.Task[None] | None = None
        try:
            writer.write(
                f"Action: Login\r\nUsername: {self.cfg.username}\r\n"
                f"Secret: {self.cfg.password}\r\n\r\n".encode()
            )
            await writer.drain()
            answer = await self._block(reader)
            if answer is None:
                raise ConnectionError("closed before answering the login")
            if answer.get("Response", "").lower() != "success":
                raise LoginRejected(f"login refused: {answer.get('Message', 'no reason given')}")
            self.connects += 1
            self.last_connected_at = self._clock()
            self._set_connected(True)
            log.info("yeastar.connected", source=self.source, host=self.cfg.host)
            pinger = asyncio.get_running_loop().create_task(self._ping(writer))
            while (block := await self._block(reader)) is not None:
                if block.get("Event") == "ReceivedSMS":
                    await self._take(block)
                elif self._inventory is not None:
                    self._port_news(block, writer)
        finally:
            writer.close()
            if pinger is not None:
                await cancel_and_wait(pinger)
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def _ping(self, writer: asyncio.StreamWriter) -> None:
        """Something to answer now and then, so a dead link shows as silence; with an
        inventory, the ports' state now and with every ping."""
        if self._inventory is not None:
            writer.write(_SPANS)
            await writer.drain()
        for n in itertools.count(1):
            await asyncio.sleep(self._ping_interval)
            writer.write(f"Action: Ping\r\nActionID: ping-{n}\r\n\r\n".encode())
            if self._inventory is not None:
                writer.write(_SPANS)
            await writer.drain()

    async def _block(self, reader: asyncio.StreamReader) -> dict[str, str] | None:
        """The next ``Key: Value`` block (ended by a blank line or an ``--END ...--`` line);
        ``None`` at end of stream; ``TimeoutError`` after ``idle_timeout`` of silence."""
        fields: dict[str, str] = {}
        while True:
            async with asyncio.timeout(self._idle_timeout):
                raw = await reader.readline()
            if not raw:
                return None
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            if line.strip() in _ENDS or (not line.strip() and fields):
                return fields
            if not fields and line.startswith("Asterisk Call Manager"):
                continue  # the greeting
            key, colon, value = line.partition(":")
            if colon and key.strip():
                fields.setdefault(key.strip(), value.strip())

    def _set_connected(self, up: bool) -> None:
        self.connected = up
        self.status.set_up(up)
        if not up:
            spans, self._spans = self._spans, {}
            if self._inventory is not None:
                for span in spans:
                    self._inventory.gone(self.source, span)

    # -- ports -----------------------------------------------------------------------------

    def _port_news(self, block: Mapping[str, str], writer: asyncio.StreamWriter) -> None:
        """An answer to ``gsm show spans`` or ``gsm show span <n>``; anything else is ignored."""
        listed: dict[str, str] = {}
        for key, value in block.items():
            match = _SPAN_LINE.fullmatch(key.strip())
            if match is not None and len(listed) < MAX_SPANS:
                listed[str(int(match.group(1)))] = value[:200]
        if listed:
            for span in [s for s in self._spans if s not in listed]:
                del self._spans[span]
                self._gone(span)
            for span, status in listed.items():
                self._spans.setdefault(span, {})["Status"] = status
                if self._report_span(span) is SimState.READY:
                    writer.write(
                        f"Action: smscommand\r\ncommand: gsm show span {span}\r\n\r\n".encode()
                    )
            return
        channel = block.get("D-channel", "").strip()
        if channel.isascii() and channel.isdigit() and str(int(channel)) in self._spans:
            span = str(int(channel))
            known = self._spans[span]
            for key in ("Status", "SIM IMSI", "Signal Quality (0,31)", "Network Name"):
                if key in block:
                    known[key] = block[key][:200]
            self._report_span(span)

    def _gone(self, span: str) -> None:
        assert self._inventory is not None
        self._inventory.gone(self.source, span)

    def _report_span(self, span: str) -> SimState:
        """Tell the inventory what the TG said of ``span``; its state."""
        assert self._inventory is not None
        known = self._spans[span]
        state = span_state(known.get("Status", ""))
        if state is SimState.ABSENT:
            self._gone(span)
            return state
        imsi = known.get("SIM IMSI", "").strip()
        imsi_ok = imsi if imsi.isascii() and imsi.isdigit() and 6 <= len(imsi) <= 15 else None
        quality = known.get("Signal Quality (0,31)", "").strip()
        rssi = (
            int(quality) if quality.isascii() and quality.isdigit() and len(quality) <= 2 else None
        )
        if state is SimState.READY and rssi == 99:
            state = SimState.NO_SIGNAL
        phone = phone_for(self._sims, source=self.source, port=span, imsi=imsi_ok)
        self._inventory.report(
            Sighting(
                source=self.source,
                location=span,
                state=state,
                port=span,
                imsi=imsi_ok,
                phone=phone or "",
                phone_origin=PhoneOrigin.SIM.value if phone else None,
                signal=rssi_to_dbm(rssi) if rssi is not None and rssi <= 31 else None,
                network_name=known.get("Network Name", "").strip()[:64],
            )
        )
        return state

    def _sms_on(self, span: str) -> None:
        """An SMS was committed from ``span``: its ``last_sms``; a span the TG's port answers
        never named is listed, not live."""
        if self._inventory is None:
            return
        now = self._clock()
        if span in self._spans:
            self._inventory.sms(self.source, span, now)
            return
        phone = phone_for(self._sims, source=self.source, port=span)
        self._inventory.report(
            Sighting(
                source=self.source,
                location=span,
                state=SimState.READY,  # it received an SMS; nothing says it still can
                port=span,
                phone=phone or "",
                phone_origin=PhoneOrigin.SIM.value if phone else None,
                last_sms=now,
                live=False,
            )
        )

    # -- events ----------------------------------------------------------------------------

    def _rejected(self, reason: str, *, field: str | None = None) -> None:
        log.warning("yeastar.event_rejected", source=self.source, reason=reason, field=field)
        self.status.rejected_input(reason)

    async def _take(self, fields: Mapping[str, str]) -> None:
        """Commit one event, retrying while the store cannot (the TG will not send it again)."""
        try:
            item = item_from_event(fields, source=self.source, sims=self._sims, now=self._clock())
        except DecodeError as e:
            self._rejected(str(e))
            return
        for attempt in itertools.count(1):
            try:
                if isinstance(item, Part):
                    result = await self._intake.accept_part(item)
                    joined = result.joined is not None and not result.joined.duplicate
                    self.status.accepted(1 if joined else 0)
                else:
                    (accepted,) = await self._intake.accept([item])
                    self.status.accepted(0 if accepted.duplicate else 1)
                span = fields.get("GsmSpan", "").strip()
                if span.isascii() and span.isdigit() and len(span) <= 3:
                    self._sms_on(str(int(span)))
                return
            except FieldError as e:  # never acceptable: that event alone is refused
                name = _FIELD_NAMES.get(e.field, e.field)
                self._rejected(f"{name}: {e.problem}", field=name)
                return
            except StoreError as e:
                self.status.store_failed(str(e))
                log.error("yeastar.store_unavailable", source=self.source, error=str(e))
            try:
                await asyncio.sleep(min(10.0, 0.5 * 2**attempt))
            except asyncio.CancelledError:
                log.error("yeastar.event_lost", source=self.source, sender=item.phone_from)
                raise
