"""Move SMS from a SIM into the outbox: commit each one, and only then delete it from the SIM.

A crash between the two leaves the SMS on the SIM; read again, it has the same dedup key and
the outbox answers with the first smsId. A store that cannot commit leaves it there too.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

from gateway.errors import DecodeError, StoreUnavailable
from gateway.fields import FieldError
from gateway.intake import Intake
from gateway.outbox.models import Incoming, Part
from gateway.sources.modem.channel import AtError
from gateway.sources.modem.inbound import Received, refused_item, to_item
from gateway.sources.modem.keys import pdu_digest
from gateway.sources.modem.session import Session

__all__ = ["Receiver", "Whose"]

_OUTGOING = (2, 3)  # +CMGL stat of stored unsent/sent messages: somebody's drafts, not ours
_REMEMBERED = 256  # emptied slots remembered, to tell a twin PDU from a re-read one

#: What the receiver needs to know about the SIM right now: (sim identity, phone or None).
Whose = Callable[[], tuple[str, str | None]]


class Receiver:
    """Commits and deletes SMS for one modem; used by its sessions one after another."""

    def __init__(
        self,
        intake: Intake,
        source: str,
        whose: Whose,
        *,
        clock: Callable[[], float],
        log: Any,
        on_received: Callable[[], None],
        on_late_phone: Callable[[], Awaitable[None]],
        claim: Callable[[Incoming], Incoming | None] | None = None,
    ) -> None:
        self._intake = intake
        self._source = source
        self._whose = whose
        self._clock = clock
        self._log = log
        self._on_received = on_received
        self._on_late_phone = on_late_phone
        # An own-number query's answer SMS: taken as the held form this returns (never pushed).
        self._claim = claim
        # (sim, slot, PDU hash) -> how many times we took that exact PDU from that slot.
        self._emptied: OrderedDict[str, int] = OrderedDict()

    async def scan(self, session: Session) -> bool:
        """Take every stored message (``AT+CMGL=4``); ``False`` when the store refused one
        (the rest stay on the SIM for the next scan)."""
        try:
            stored = await session.list_all()
        except (DecodeError, AtError) as exc:  # some modems answer ERROR for an empty storage
            self._log.warning("modem.scan_failed", error=str(exc))
            return True
        for index, stat, pdu in stored:
            if stat not in _OUTGOING and not await self.take(session, index, pdu):
                return False
        return True

    async def read(self, session: Session, index: int) -> bool:
        """Take the message a ``+CMTI`` announced; an empty slot is fine (a scan took it)."""
        try:
            found = await session.read(index)
        except (DecodeError, AtError) as exc:
            self._log.warning("modem.read_failed", index=index, error=str(exc))
            return True
        if found is None or found[0] in _OUTGOING:
            return True
        return await self.take(session, index, found[1])

    async def direct(self, session: Session, pdu: str) -> None:
        """A ``+CMT``/``+CDS``: the PDU came with the indication and is stored nowhere else."""
        if await self.take(session, None, pdu):
            await session.acknowledge()
        else:  # not acknowledged: a network that wants +CNMA delivers it again
            self._log.error("modem.direct_sms_not_committed", raw=pdu)

    async def take(self, session: Session, index: int | None, pdu: str) -> bool:
        """Commit one PDU, then free its slot. ``False`` when the store could not commit."""
        sim, phone = self._whose()
        slot = str(index) if index is not None else "-"
        seen = f"{sim}|{slot}|{pdu_digest(pdu)}"
        where = Received(
            source=self._source,
            sim=sim,
            phone=phone,
            slot=slot,
            read_at=self._clock(),
            occurrence=self._emptied.get(seen, 0) + 1,
        )
        try:
            item = to_item(pdu, where)
            if self._claim is not None and isinstance(item, Incoming):
                item = self._claim(item) or item
            try:
                sms_id = await self._commit(item, index)
            except FieldError as exc:  # permanent: kept held, else it is read on every scan
                self._log.warning(
                    "modem.sms_refused", index=index, field=exc.field, problem=exc.problem
                )
                sms_id = await self._commit(refused_item(pdu, where, item), index)
        except StoreUnavailable as exc:
            self._log.warning("modem.store_unavailable", index=index, error=str(exc))
            return False
        except Exception:  # a bug on one message must not stop the others; it stays on the SIM
            self._log.exception("modem.sms_failed", index=index)
            return True
        if index is not None:
            try:
                await session.delete(index)
            except AtError as exc:
                self._log.warning("modem.delete_failed", sms_id=sms_id, index=index, error=str(exc))
                return True
            self._log.info("modem.sms_deleted", sms_id=sms_id, index=index)
        self._remember(seen, where.occurrence)
        self._on_received()
        if phone is None and self._whose()[1] is not None:
            # The phone became known while this one was being committed as held: the release
            # that came with it may have run first.
            await self._on_late_phone()
        return True

    def _remember(self, seen: str, occurrence: int) -> None:
        self._emptied[seen] = occurrence
        self._emptied.move_to_end(seen)
        while len(self._emptied) > _REMEMBERED:
            self._emptied.popitem(last=False)

    async def _commit(self, item: Incoming | Part, index: int | None) -> int | None:
        """Hand one item to the Intake; the smsId it got (``None`` for a part still waiting)."""
        if isinstance(item, Part):
            result = await self._intake.accept_part(item)
            sms_id = result.joined.sms_id if result.joined is not None else None
            self._log.info(
                "modem.part_received",
                sms_id=sms_id,
                index=index,
                seq=item.seq,
                total=item.total,
                group=item.group_key,
                duplicate=result.duplicate,
            )
            if result.joined is not None:
                self._log.info(
                    "modem.sms_received",
                    sms_id=sms_id,
                    index=index,
                    parts=item.total,
                    duplicate=result.joined.duplicate,
                )
            return sms_id
        (accepted,) = await self._intake.accept([item])
        self._log.info(
            "modem.sms_received",
            sms_id=accepted.sms_id,
            index=index,
            parts=1,
            duplicate=accepted.duplicate,
            hold=item.hold.value if item.hold is not None else None,
        )
        return accepted.sms_id
