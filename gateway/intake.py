"""The one accept path every source uses: check each message against the field rules, commit
it to the outbox, then count and log what came in.

With the partner side on, it also decides whether a message is pushed at all: an SMS is pushed
for the activation open on its number when it is accepted, and held (`no_activation`) when
none is, unless `push_without_activation`. A message held `no_phone` that an operator gives
its number (`give_phone`) goes through the same decision, judged at the moment it came.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Protocol

import structlog

from gateway.fields import FieldError, checked_incoming, checked_part, normalize_phone
from gateway.metrics import Metrics
from gateway.outbox import Accepted, Hold, Incoming, Outbox, Part, PartResult
from gateway.outbox.store import PhoneGiven, PhoneRoute, Route

log = structlog.get_logger(__name__)


class OpenActivation(Protocol):
    """What intake needs of an open activation (gateway.outbox.partner.Activation has it)."""

    @property
    def activation_id(self) -> int: ...

    @property
    def service(self) -> str: ...

    @property
    def rent(self) -> bool: ...

    @property
    def opened_at(self) -> float: ...


# phone (digits) -> the activation open on it now, or None; the daemon gives the desk's.
ActivationLookup = Callable[[str], OpenActivation | None]


class Intake:
    def __init__(
        self,
        outbox: Outbox,
        metrics: Metrics | None = None,
        *,
        clock: Callable[[], float] = time.time,
        activation_for: ActivationLookup | None = None,
        push_without_activation: bool = False,
    ) -> None:
        """`activation_for` given ([partner] on): delivery follows activations (see `_route`)."""
        self._outbox = outbox
        self._metrics = metrics
        self._clock = clock
        self._activation_for = activation_for
        self._push_without = push_without_activation

    async def accept(self, items: Sequence[Incoming]) -> list[Accepted]:
        """Commit `items` (raises StoreUnavailable when nothing could be taken).

        Every item is checked against `gateway.fields` first: one that breaks a rule raises
        FieldError (naming `[i].field` in a list) and nothing of the call is committed, so a bad
        value never reaches a commit it shares with other callers. A receipt time out of the
        window (a device's wrong clock) is replaced by the receive time and logged.

        One message makes one log line; a list makes one line per outcome and source naming
        every smsId (`sms_ids`), because a line per message costs more than committing it.
        """
        checked = self._checked(items)
        routed = checked
        if self._activation_for is not None:
            lookup = self._activation_for
            routed = [self._route(item, lookup(item.phone)) for item in checked]
        accepted = await self._outbox.accept(routed)
        if checked is not items:
            self._log_replaced_times(items, checked, accepted)
        items = routed
        if len(accepted) == 1:
            self._log_one(items[0], accepted[0])
        else:
            self._log_many(items, accepted)
        return accepted

    async def accept_each(self, items: Sequence[Incoming]) -> list[Accepted | FieldError]:
        """Like `accept`, but every item stands alone: one that breaks a field rule gets its
        FieldError in its place, and the others are committed together (one `accept`, one
        commit). For a windowed peer (SMPP) whose messages come in together yet are answered
        one by one. Raises StoreUnavailable when the commit fails (nothing was taken)."""
        now = self._clock()
        out: list[Accepted | FieldError] = []
        good: list[Incoming] = []
        for item in items:
            try:
                checked_incoming(item, now)
            except FieldError as e:
                out.append(e)
                continue
            out.append(Accepted(-1, False))  # a placeholder: its place in the answer
            good.append(item)
        if good:
            accepted = iter(await self.accept(good))
            out = [next(accepted) if isinstance(a, Accepted) else a for a in out]
        return out

    def _checked(self, items: Sequence[Incoming]) -> Sequence[Incoming]:
        """`items` itself when all pass as they are; a new list when a time was replaced."""
        now = self._clock()
        out: list[Incoming] | None = None
        for i, item in enumerate(items):
            try:
                good = checked_incoming(item, now)
            except FieldError as e:
                if len(items) == 1:
                    raise
                raise FieldError(f"[{i}].{e.field}", e.problem) from None
            if good is not item and out is None:
                out = list(items[:i])
            if out is not None:
                out.append(good)
        return items if out is None else out

    @staticmethod
    def _log_replaced_times(
        items: Sequence[Incoming], checked: Sequence[Incoming], accepted: list[Accepted]
    ) -> None:
        for item, good, a in zip(items, checked, accepted, strict=True):
            if good is not item and not a.duplicate:
                log.warning(
                    "sms.device_time_replaced",
                    sms_id=a.sms_id,
                    source=item.source,
                    device_time=item.received_at,
                    received_at=good.received_at,
                )

    def _log_one(self, item: Incoming, a: Accepted) -> None:
        if a.duplicate:
            log.info(
                "sms.duplicate_ignored",
                sms_id=a.sms_id,
                source=item.source,
                source_ref=item.source_ref,
            )
            if self._metrics:
                self._metrics.count_duplicates(item.source)
        else:
            self._log_accepted(a.sms_id, item)

    def _log_many(self, items: Sequence[Incoming], accepted: list[Accepted]) -> None:
        fresh: dict[str, list[int]] = {}
        dupes: dict[str, tuple[list[int], list[str | None]]] = {}
        for item, a in zip(items, accepted, strict=True):
            if a.duplicate:
                ids, refs = dupes.setdefault(item.source, ([], []))
                ids.append(a.sms_id)
                refs.append(item.source_ref)
            elif item.hold is not None or item.partial or item.activation_id is not None:
                self._log_accepted(a.sms_id, item)  # worth a line of its own
            else:
                fresh.setdefault(item.source, []).append(a.sms_id)
        for source, ids in fresh.items():
            log.info("sms.accepted", sms_ids=ids, count=len(ids), source=source)
            if self._metrics:
                self._metrics.count_received(source, len(ids))
        for source, (ids, refs) in dupes.items():
            log.info(
                "sms.duplicate_ignored",
                sms_ids=ids,
                count=len(ids),
                source=source,
                source_refs=refs,
            )
            if self._metrics:
                self._metrics.count_duplicates(source, len(ids))

    def _log_accepted(self, sms_id: int, item: Incoming) -> None:
        if item.hold is Hold.NO_ACTIVATION:
            # Expected on a partner's unordered numbers: not a warning.
            log.info(
                "sms.held",
                sms_id=sms_id,
                source=item.source,
                reason=item.hold.value,
                phone=item.phone,
                phone_from=item.phone_from,
            )
            if self._metrics:
                self._metrics.held.labels(item.hold.value).inc()
        elif item.hold is not None:
            log.warning(
                "sms.held",
                sms_id=sms_id,
                source=item.source,
                reason=item.hold.value,
                phone_from=item.phone_from,
            )
            if self._metrics:
                self._metrics.held.labels(item.hold.value).inc()
        else:
            # The activation's fields only when there is one: without [partner] the line is
            # as it always was.
            activation = (
                {"activation_id": item.activation_id, "rent_service": item.rent_service}
                if item.activation_id is not None
                else {}
            )
            log.info(
                "sms.accepted",
                sms_id=sms_id,
                source=item.source,
                phone=item.phone,
                phone_from=item.phone_from,
                chars=len(item.text),
                partial=item.partial or None,
                **activation,
            )
        if self._metrics:
            self._metrics.count_received(item.source)

    async def accept_part(self, part: Part) -> PartResult:
        """Commit one part of a concatenated SMS; joins the message when the last one is in.

        Checked like `accept` (FieldError names the field); a receipt time out of the window is
        replaced by the receive time."""
        good = checked_part(part, self._clock())
        if good is not part:
            log.warning(
                "sms.device_time_replaced",
                source=part.source,
                group=part.group_key,
                seq=part.seq,
                device_time=part.received_at,
                received_at=good.received_at,
            )
            part = good
        result = await self._outbox.accept_part(part, self._router([part.phone]))
        if result.duplicate:
            log.info(
                "sms.part_duplicate_ignored",
                source=part.source,
                group=part.group_key,
                seq=part.seq,
                total=part.total,
                sms_id=result.joined.sms_id if result.joined else None,
            )
            if self._metrics:
                self._metrics.count_duplicates(part.source)
        else:
            log.info(
                "sms.part_accepted",
                source=part.source,
                group=part.group_key,
                seq=part.seq,
                total=part.total,
            )
        if result.joined is not None and not result.joined.duplicate:
            await self._log_joined([result.joined])
        return result

    async def close_group(self, source: str, group_key: str) -> Accepted | None:
        """Join an open-ended group (parts sent with total 0) with what arrived."""
        route = None
        if self._activation_for is not None:
            route = self._router(await self._outbox.waiting_part_phones(source, group_key))
        joined = await self._outbox.close_group(source, group_key, route)
        if joined is not None and not joined.duplicate:
            await self._log_joined([joined])
        return joined

    async def flush_stale_parts(self, older_than: float) -> list[Accepted]:
        """Incomplete multi-part messages older than `older_than` go out with gaps marked."""
        route = None
        if self._activation_for is not None:
            route = self._router(await self._outbox.waiting_part_phones())
        joined = await self._outbox.flush_stale_parts(older_than, route)
        await self._log_joined(joined)
        return joined

    async def _log_joined(self, joined: list[Accepted]) -> None:
        for a in joined:
            m = await self._outbox.get_message(a.sms_id)
            if m is not None:
                self._log_accepted(
                    a.sms_id,
                    Incoming(
                        m.source,
                        m.phone,
                        m.phone_from,
                        m.text,
                        m.received_at,
                        hold=m.hold_reason,
                        partial=m.partial,
                        activation_id=m.activation_id,
                        rent_service=m.rent_service,
                    ),
                )

    async def release_held(self, source: str, phone: str) -> list[int]:
        """Messages held because `source` had no phone number go out with `phone`.

        With the partner side on they stay held (`no_activation`) unless
        push_without_activation: a SIM whose number was unknown could not have been ordered,
        so any activation open on it now began after those SMS came in.
        """
        hold = None
        if self._activation_for is not None and not self._push_without:
            hold = Hold.NO_ACTIVATION
        released = await self._outbox.release_held(source, phone, hold=hold)
        for sms_id in released:
            if hold is None:
                log.info("sms.released", sms_id=sms_id, source=source, phone=phone)
            else:
                log.info("sms.held", sms_id=sms_id, source=source, reason=hold.value, phone=phone)
        if hold is not None and released and self._metrics:
            self._metrics.held.labels(hold.value).inc(len(released))
        return released

    async def give_phone(self, sms_ids: Sequence[int], phone: str) -> PhoneGiven:
        """An operator's `messages retry SMSID... --phone NUMBER`: the messages named that are
        held for want of a phone (`no_phone`) get `phone` and go on as a message on that phone
        does when it comes in (`_route`); any other message named is left as it is.

        The moment is still their acceptance: they are pushed for the activation open on
        `phone` now only if it was already open when they came; one opened since is another
        buyer's, so they are held `no_activation` instead (unless push_without_activation).
        `phone` breaking the field rules raises FieldError (`phone`) and nothing is changed.
        """
        if normalize_phone(phone) != phone:
            raise FieldError("phone", "expected 3 to 20 digits")
        route: PhoneRoute | None = None
        if self._activation_for is not None:
            found = self._activation_for(phone)  # on the event loop, before the store's thread

            def route(item: Incoming, accepted_at: float) -> Incoming:
                open_then = found if found is not None and found.opened_at <= accepted_at else None
                return self._route(item, open_then)

        given = await self._outbox.give_phone(sms_ids, phone, route)
        # One line per source and outcome, naming every smsId (as a list is logged).
        lines: dict[tuple[str, Hold | None, int | None, str | None], list[int]] = {}
        for sms_id, m in given.released.items():
            key = (m.source, m.hold_reason, m.activation_id, m.rent_service)
            lines.setdefault(key, []).append(sms_id)
        for (source, hold, activation_id, rent_service), ids in lines.items():
            if hold is None:
                activation = (
                    {"activation_id": activation_id, "rent_service": rent_service}
                    if activation_id is not None
                    else {}
                )
                log.info(
                    "sms.released",
                    sms_ids=ids,
                    count=len(ids),
                    source=source,
                    phone=phone,
                    by="operator",
                    **activation,
                )
            else:
                log.info(
                    "sms.held",
                    sms_ids=ids,
                    count=len(ids),
                    source=source,
                    reason=hold.value,
                    phone=phone,
                    by="operator",
                )
                if self._metrics:
                    self._metrics.held.labels(hold.value).inc(len(ids))
        return given

    # -- delivery follows activations ([partner] on) --------------------------------------

    def _route(self, item: Incoming, found: OpenActivation | None) -> Incoming:
        """The message as it is committed: pushed for the activation open on its number when
        it came in (a rent one to the rent URL), else held `no_activation` (or pushed as
        ever with push_without_activation). Held messages (no phone, undecodable, ...) stay
        as they are. Pure: it runs on the store's thread for multi-part joins."""
        if item.hold is not None or item.activation_id is not None:
            return item
        if found is not None:
            return dataclasses.replace(
                item,
                activation_id=found.activation_id,
                rent_service=found.service if found.rent else None,
            )
        if self._push_without:
            return item
        return dataclasses.replace(item, hold=Hold.NO_ACTIVATION)

    def _router(self, phones: Iterable[str]) -> Route | None:
        """`_route` over a snapshot of the activations open on `phones` now, for the store's
        thread (the lookup itself belongs to the event loop). A phone not in the snapshot
        (a part that came in meanwhile with another number) counts as one without."""
        if self._activation_for is None:
            return None
        lookup = self._activation_for
        snapshot = {phone: lookup(phone) for phone in set(phones) if phone}

        def route(item: Incoming) -> Incoming:
            return self._route(item, snapshot.get(item.phone))

        return route
