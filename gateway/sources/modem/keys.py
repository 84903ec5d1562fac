"""Dedup and group keys of SMS read from a SIM: pure functions, stable across restarts.

A message read again after a crash between commit and ``AT+CMGD`` must get the same key (so the
outbox answers "duplicate" with the first smsId); a new message must never share a key with an
old one. The text alone is never a key: a service may send the same code twice.
"""

from __future__ import annotations

import hashlib

from gateway.sources.modem.pdu import Sms

__all__ = ["dedup_key", "group_key", "pdu_digest", "sim_identity"]


def sim_identity(iccid: str | None, imsi: str | None, modem_name: str) -> str:
    """Who received the message: the SIM (ICCID, else IMSI), else the modem port's name.

    The SIM, not the port: a SIM moved to another slot still knows what it already handed over.
    """
    if iccid:
        return f"iccid:{iccid}"
    if imsi:
        return f"imsi:{imsi}"
    return f"modem:{modem_name}"


def pdu_digest(pdu: str) -> str:
    """A short hash of the PDU exactly as the modem printed it (case ignored)."""
    return hashlib.sha256(pdu.strip().upper().encode("ascii", "replace")).hexdigest()[:16]


def _scts(sms: Sms) -> str:
    return sms.timestamp.isoformat() if sms.timestamp is not None else "-"


def dedup_key(sim: str, sms: Sms | None, pdu: str, *, slot: str = "-", occurrence: int = 1) -> str:
    """The ``source_ref`` of one PDU read from a SIM.

    Made of the SIM identity, the sender, the service-centre timestamp, the concatenation
    reference and position, the storage slot and a hash of the PDU itself. ``sms`` is ``None``
    for a PDU that could not be decoded (then the hash carries the identity). The slot tells apart
    two identical PDUs stored at once (the same code sent twice within one second);
    ``occurrence`` > 1 marks an identical PDU arriving again in a slot we already emptied.
    """
    if sms is None:
        sender, scts, part = "?", "?", "-"
    else:
        sender, scts = sms.sender or "-", _scts(sms)
        c = sms.concat
        part = f"{c.ref_bits}:{c.ref}:{c.seq}/{c.total}" if c is not None else "-"
    key = f"{sim}|{sender}|{scts}|{part}|{slot}|{pdu_digest(pdu)}"
    return key if occurrence <= 1 else f"{key}#{occurrence}"


def group_key(sim: str, sms: Sms) -> str:
    """What every part of one concatenated message shares: SIM, sender, reference, total."""
    c = sms.concat
    if c is None:
        raise ValueError("group_key needs a concatenated SMS")
    return f"{sim}|{sms.sender or '-'}|{c.ref_bits}:{c.ref}/{c.total}"
