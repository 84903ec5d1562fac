"""One short message from an SMPP peer, committed through Intake; the answer follows the commit.

The response status is decided here: ROK with a message id only once the message (or its part)
is committed; a temporary error when the store cannot commit, so the peer redelivers; a
permanent one for a message the field rules refuse or a destination the account may not claim.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import structlog

from gateway.config import SimConfig
from gateway.errors import StoreError
from gateway.fields import FieldError, normalize_phone
from gateway.intake import Intake
from gateway.outbox import Hold, Incoming, Part
from gateway.sources.dedup import digest
from gateway.sources.sim_match import phone_for

from .content import TLV_RECEIPTED_MESSAGE_ID, Alphabet, read_content
from .pdu import ShortMessage, Status

__all__ = ["Answer", "Inbound", "PeerRules"]

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class PeerRules:
    """How one bind's messages are read: its source name, data_coding 0 alphabet and claims."""

    source: str  # "smpp-server:<system_id>" or "smpp-client:<name>"
    alphabet: Alphabet = "gsm"
    # destinations (phones or port names) this peer may deliver for; empty: any
    claims: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Answer:
    status: Status
    message_id: str = ""
    stored: bool = False  # committed now (not a retransmission, not refused)


def _destination_key(value: str) -> str:
    return normalize_phone(value) or value


class Inbound:
    def __init__(
        self,
        intake: Intake,
        sims: Sequence[SimConfig] = (),
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._intake = intake
        self._sims = sims
        self._clock = clock

    def phone_of(self, rules: PeerRules, destination: str) -> str:
        """The receiving phone: a [[sim]] for this source and port, else the destination as a
        number, else a [[sim]] for the whole source; "" when none (held no_phone)."""
        return (
            (destination and phone_for(self._sims, source=rules.source, port=destination))
            or normalize_phone(destination)
            or phone_for(self._sims, source=rules.source)
            or ""
        )

    async def take(self, rules: PeerRules, m: ShortMessage) -> Answer:
        if rules.claims and _destination_key(m.destination_addr) not in rules.claims:
            log.warning(
                "smpp.destination_refused", source=rules.source, destination=m.destination_addr
            )
            return Answer(Status.RINVDSTADR)
        content = read_content(m, rules.alphabet)
        # A retransmission repeats the sequence number and every byte; a receipt names its id.
        receipted = m.tlv(TLV_RECEIPTED_MESSAGE_ID)
        tlv_bytes = b"".join(t.to_bytes(2, "big") + v for t, v in m.tlvs)
        key = digest(
            m.source_addr,
            m.destination_addr,
            bytes((m.esm_class & 0xFF, m.data_coding & 0xFF)),
            m.short_message,
            tlv_bytes,
        )
        ref = f"r:{receipted.hex()}" if receipted else f"{m.seq}|{key}"
        message_id = digest(rules.source, ref)
        phone = self.phone_of(rules, m.destination_addr)
        now = self._clock()
        try:
            if content.concat is not None:
                c = content.concat
                group = f"{m.source_addr}|{m.destination_addr}|{c.bits}:{c.ref}|{c.total}"
                result = await self._intake.accept_part(
                    Part(
                        rules.source,
                        group,
                        c.seq,
                        c.total,
                        content.text,
                        phone,
                        m.source_addr,
                        now,
                        source_ref=ref,
                    )
                )
                return Answer(Status.ROK, message_id, stored=not result.duplicate)
            hold = content.hold or (None if phone else Hold.NO_PHONE)
            item = Incoming(
                rules.source,
                phone,
                m.source_addr,
                content.text,
                now,
                source_ref=ref,
                hold=hold,
                raw=content.raw if hold in (Hold.NOT_TEXT, Hold.UNDECODABLE) else None,
            )
            (accepted,) = await self._intake.accept([item])
            return Answer(Status.ROK, message_id, stored=not accepted.duplicate)
        except FieldError as e:
            log.warning("smpp.message_refused", source=rules.source, field=e.field, seq=m.seq)
            return Answer(Status.RX_P_APPN)
        except StoreError as e:
            log.warning("smpp.store_unavailable", source=rules.source, error=str(e), seq=m.seq)
            return Answer(Status.RX_T_APPN)
