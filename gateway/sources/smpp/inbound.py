"""One short message from an SMPP peer, committed through Intake; the answer follows the commit.

The response status is decided here: ROK with a message id only once the message (or its part)
is committed; a temporary error when the store cannot commit, so the peer redelivers; a
permanent one for a message the field rules refuse or a destination the account may not claim.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import structlog

from gateway.config import SimConfig
from gateway.errors import StoreError
from gateway.fields import FieldError, normalize_phone
from gateway.intake import Intake
from gateway.outbox import Accepted, Hold, Incoming, Part
from gateway.sources.dedup import digest
from gateway.sources.sim_match import SimTable, phone_for

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
    # the same sequence number and bytes again within this many seconds: a retransmission
    retransmit_window: float = 3600.0


@dataclass(frozen=True)
class Answer:
    status: Status
    message_id: str = ""
    stored: bool = False  # committed now (not a retransmission, not refused)


def content_key(m: ShortMessage) -> str:
    """A short hash of what a retransmission repeats besides its sequence number: addresses,
    esm_class, data_coding, short_message and TLVs. One hash call for the common PDU: the
    addresses are C-strings (no NUL inside), so NUL ends them unambiguously."""
    h = hashlib.sha256(
        f"{m.source_addr}\0{m.destination_addr}\0".encode("utf-8", "surrogatepass")
        + bytes((m.esm_class & 0xFF, m.data_coding & 0xFF))
        + len(m.short_message).to_bytes(4, "big")
        + m.short_message
    )
    for tag, value in m.tlvs:
        h.update(tag.to_bytes(2, "big") + len(value).to_bytes(4, "big") + value)
    return h.hexdigest()[:16]


def _refs(seq: int, key: str, rules: PeerRules, now: float) -> tuple[str, str]:
    """The dedup key of a PDU and its key in the period before: a resend is the same sequence
    number and bytes within `retransmit_window` (up to twice that), not forever, since peers
    that number from 1 again after a bind may later send the very same text under an old
    number."""
    period = int(now // rules.retransmit_window)
    return f"{seq}|{key}|{period}", f"{seq}|{key}|{period - 1}"


# A destination_addr is taken as the receiving SIM's number only with at least this many
# digits (the shortest international numbers have 7): a box's port name ("3", "1.01", "101")
# with no [[sim]] for it is held no_phone, never pushed to a made-up number.
MIN_MSISDN = 7
_PHONES_KEPT = 4096


def _msisdn(destination: str) -> str | None:
    number = normalize_phone(destination)
    return number if number is not None and len(number) >= MIN_MSISDN else None


def _kept(hold: Hold | None, user_data: str | None, destination: str) -> str | None:
    """What a held message keeps in `raw` for a person to read (`messages show`): the user
    data of one not read as text; where one with no phone came in (`_came_in_on`)."""
    if hold in (Hold.NOT_TEXT, Hold.UNDECODABLE):
        return user_data
    if hold is Hold.NO_PHONE:
        return _came_in_on(destination)
    return None


def _came_in_on(destination: str) -> str:
    """The destination_addr (a box's port) of a message or part with no phone, so the operator
    can add its [[sim]] and send it on (`messages retry --phone`)."""
    return f"destination_addr={destination}"


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
        # The daemon's table, which a SIGHUP replaces in place; a tuple (tests) never changes.
        self._sims = sims if isinstance(sims, SimTable) else SimTable(sims)
        self._clock = clock
        # (source, destination) -> phone: a box sends to a handful of ports; bounded against a
        # peer sending to any number, and forgotten when the [[sim]] table is replaced.
        self._phones: dict[tuple[str, str], str] = {}
        self._phones_version = self._sims.version

    def phone_of(self, rules: PeerRules, destination: str) -> str:
        """The receiving phone: a [[sim]] for this source and port, else the destination as a
        number (of at least MIN_MSISDN digits), else a [[sim]] for the whole source; "" when
        none (held no_phone)."""
        if self._phones_version != self._sims.version:
            self._phones.clear()
            self._phones_version = self._sims.version
        key = (rules.source, destination)
        phone = self._phones.get(key)
        if phone is None:
            phone = (
                (destination and phone_for(self._sims, source=rules.source, port=destination))
                or _msisdn(destination)
                or phone_for(self._sims, source=rules.source)
                or ""
            )
            if len(self._phones) >= _PHONES_KEPT:
                self._phones.clear()
            self._phones[key] = phone
        return phone

    async def take(self, rules: PeerRules, m: ShortMessage) -> Answer:
        """One message: `take_many` of one."""
        (answer,) = await self.take_many(rules, [m])
        return answer

    async def take_many(self, rules: PeerRules, messages: Sequence[ShortMessage]) -> list[Answer]:
        """The answers to `messages` (read together from one bind), in order. Whole messages
        share one commit; a message the field rules refuse is refused alone; parts go through
        the durable parts path one by one. When the store cannot commit, every message not
        yet committed gets a temporary error (the peer sends it again)."""
        answers: list[Answer | None] = []
        whole: list[tuple[int, Incoming, str]] = []  # (place in answers, item, message id)
        parts: list[tuple[int, Part, str]] = []
        now = self._clock()
        for m in messages:
            planned = self._plan(rules, m, now)
            if isinstance(planned, Answer):
                answers.append(planned)
            elif isinstance(planned[0], Part):
                parts.append((len(answers), planned[0], planned[1]))
                answers.append(None)
            else:
                whole.append((len(answers), planned[0], planned[1]))
                answers.append(None)
        if whole:
            results: Sequence[Accepted | FieldError | StoreError]
            try:
                results = await self._intake.accept_each([item for _, item, _ in whole])
            except StoreError as e:
                results = [e] * len(whole)
            for (place, item, message_id), result in zip(whole, results, strict=True):
                answers[place] = self._answer(rules, item.source_ref, message_id, result)
        for place, part, message_id in parts:
            outcome: Accepted | FieldError | StoreError
            try:
                outcome = Accepted(0, (await self._intake.accept_part(part)).duplicate)
            except (FieldError, StoreError) as e:
                outcome = e
            answers[place] = self._answer(rules, part.source_ref, message_id, outcome)
        return [a if a is not None else Answer(Status.RX_T_APPN) for a in answers]

    @staticmethod
    def _answer(
        rules: PeerRules,
        ref: str | None,
        message_id: str,
        result: Accepted | FieldError | StoreError,
    ) -> Answer:
        if isinstance(result, Accepted):
            return Answer(Status.ROK, message_id, stored=not result.duplicate)
        if isinstance(result, FieldError):
            log.warning("smpp.message_refused", source=rules.source, field=result.field, ref=ref)
            return Answer(Status.RX_P_APPN)
        log.warning("smpp.store_unavailable", source=rules.source, error=str(result), ref=ref)
        return Answer(Status.RX_T_APPN)

    def _plan(
        self, rules: PeerRules, m: ShortMessage, now: float
    ) -> Answer | tuple[Incoming | Part, str]:
        """What `m` becomes (a message or a part, and the id we answer with), or the refusal."""
        if rules.claims and _destination_key(m.destination_addr) not in rules.claims:
            log.warning(
                "smpp.destination_refused", source=rules.source, destination=m.destination_addr
            )
            return Answer(Status.RINVDSTADR)
        content = read_content(m, rules.alphabet)
        # A retransmission repeats the sequence number and every byte; a receipt names its id.
        receipted = m.tlv(TLV_RECEIPTED_MESSAGE_ID)
        if receipted:
            ref, earlier = f"r:{receipted.hex()}", None
            message_id = digest(rules.source, ref)
        else:
            key = content_key(m)
            ref, earlier = _refs(m.seq, key, rules, now)
            # the same for a resend, in any period: it gets the first answer's id
            message_id = f"{key}{m.seq:08x}"
        phone = self.phone_of(rules, m.destination_addr)
        if content.concat is not None:
            c = content.concat
            group = f"{m.source_addr}|{m.destination_addr}|{c.bits}:{c.ref}|{c.total}"
            part = Part(
                rules.source,
                group,
                c.seq,
                c.total,
                content.text,
                phone,
                m.source_addr,
                now,
                source_ref=ref,
                raw=None if phone else _came_in_on(m.destination_addr),
                earlier_ref=earlier,
            )
            return part, message_id
        hold = content.hold or (None if phone else Hold.NO_PHONE)
        item = Incoming(
            rules.source,
            phone,
            m.source_addr,
            content.text,
            now,
            source_ref=ref,
            earlier_ref=earlier,
            hold=hold,
            raw=_kept(hold, content.raw, m.destination_addr),
        )
        return item, message_id
