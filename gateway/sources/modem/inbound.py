"""Turn one PDU read from a SIM into what the Intake takes: a message, a held record or a part.

Pure: no I/O (but a log line for a network time it replaces), the time of reading is passed in.
Every PDU becomes something durable, even one we cannot decode or whose fields the rules refuse
(kept held, with its hex, for audit), so a SIM slot is only freed for a record.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import structlog

from gateway.errors import DecodeError
from gateway.outbox.models import Hold, Incoming, Part
from gateway.sources.modem.keys import dedup_key, group_key
from gateway.sources.modem.pdu import Encoding, PduKind, Sms, decode_pdu

__all__ = ["MAX_CLOCK_SKEW", "Received", "plausible_time", "refused_item", "to_item"]

log = structlog.get_logger(__name__)

MAX_CLOCK_SKEW = 600.0  # seconds a network timestamp may run ahead of our clock
_EARLIEST = datetime(2000, 1, 1).timestamp()


@dataclass(frozen=True)
class Received:
    """Where a PDU came from: the modem's source name, the SIM identity, the resolved phone
    (``None`` while unknown), the storage slot (``"-"`` for a ``+CMT`` direct delivery), how
    many times this exact PDU already went through this slot, and when we read it."""

    source: str
    sim: str
    phone: str | None
    slot: str
    read_at: float
    occurrence: int = 1


def plausible_time(sms: Sms, read_at: float, *, source: str | None = None) -> float:
    """The service-centre timestamp, unless it is missing, in the future (beyond clock skew)
    or before 2000: then the time we read the message. A timestamp not taken is logged
    (``device_time.replaced``, as every source does) with ``source``."""
    if sms.timestamp is None:
        return read_at
    ts = sms.timestamp.timestamp()
    if ts > read_at + MAX_CLOCK_SKEW or ts < _EARLIEST:
        log.warning(
            "device_time.replaced",
            source=source,
            device_time=sms.timestamp.isoformat(),
            received_at=read_at,
        )
        return read_at
    return ts


def to_item(pdu: str, where: Received) -> Incoming | Part:
    """Decode ``pdu`` and wrap it for the Intake; never raises for a bad PDU."""
    phone = where.phone or ""
    try:
        sms = decode_pdu(pdu)
    except DecodeError:
        return Incoming(
            source=where.source,
            phone=phone,
            phone_from="",
            text="",
            received_at=where.read_at,
            source_ref=dedup_key(
                where.sim, None, pdu, slot=where.slot, occurrence=where.occurrence
            ),
            hold=Hold.UNDECODABLE,
            raw=pdu,
        )
    ref = dedup_key(where.sim, sms, pdu, slot=where.slot, occurrence=where.occurrence)
    received_at = plausible_time(sms, where.read_at, source=where.source)
    text_sms = sms.kind is PduKind.DELIVER  # status reports and the like are held, not sent
    if text_sms and sms.concat is not None and sms.concat.total > 1:
        return Part(
            source=where.source,
            group_key=group_key(where.sim, sms),
            seq=sms.concat.seq,
            total=sms.concat.total,
            text=_part_text(sms),
            phone=phone,
            phone_from=sms.sender,
            received_at=received_at,
            source_ref=ref,
            raw=pdu,
        )
    hold = Hold.NOT_TEXT if not text_sms else (None if where.phone else Hold.NO_PHONE)
    return Incoming(
        source=where.source,
        phone=phone,
        phone_from=sms.sender,
        text=sms.text,
        received_at=received_at,
        source_ref=ref,
        hold=hold,
        raw=pdu,
    )


def refused_item(pdu: str, where: Received, item: Incoming | Part) -> Incoming:
    """What is kept of an SMS whose fields the rules refuse (``FieldError``): held, never
    pushed, with its PDU and dedup key, nothing else that could break a rule again. It never
    becomes acceptable, so it must neither stay on the SIM (read again on every scan) nor be
    deleted unrecorded."""
    return Incoming(
        source=where.source,
        phone="",
        phone_from="",
        text="",
        received_at=where.read_at,
        source_ref=item.source_ref,
        hold=Hold.REFUSED,
        raw=pdu,
    )


def _part_text(sms: Sms) -> str:
    """A UCS-2 part's text with a lone surrogate kept (half of a pair the network split between
    two parts): the outbox joins parts as code units, so the pair comes back whole."""
    if sms.encoding is Encoding.UCS2 and sms.text:  # text is "" when compressed
        even = sms.data[: len(sms.data) & ~1]
        return even.decode("utf-16-be", "surrogatepass") + ("\ufffd" if len(sms.data) % 2 else "")
    return sms.text
