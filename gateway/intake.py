"""The one accept path every source uses: check each message against the field rules, commit
it to the outbox, then count and log what came in."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import structlog

from gateway.fields import FieldError, checked_incoming, checked_part
from gateway.metrics import Metrics
from gateway.outbox import Accepted, Incoming, Outbox, Part, PartResult

log = structlog.get_logger(__name__)


class Intake:
    def __init__(
        self,
        outbox: Outbox,
        metrics: Metrics | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._outbox = outbox
        self._metrics = metrics
        self._clock = clock

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
        accepted = await self._outbox.accept(checked)
        if checked is not items:
            self._log_replaced_times(items, checked, accepted)
        items = checked
        if len(accepted) == 1:
            self._log_one(items[0], accepted[0])
        else:
            self._log_many(items, accepted)
        return accepted

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
            elif item.hold is not None or item.partial:
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
        if item.hold is not None:
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
            log.info(
                "sms.accepted",
                sms_id=sms_id,
                source=item.source,
                phone=item.phone,
                phone_from=item.phone_from,
                chars=len(item.text),
                partial=item.partial or None,
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
        result = await self._outbox.accept_part(part)
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
        joined = await self._outbox.close_group(source, group_key)
        if joined is not None and not joined.duplicate:
            await self._log_joined([joined])
        return joined

    async def flush_stale_parts(self, older_than: float) -> list[Accepted]:
        """Incomplete multi-part messages older than `older_than` go out with gaps marked."""
        joined = await self._outbox.flush_stale_parts(older_than)
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
                    ),
                )

    async def release_held(self, source: str, phone: str) -> list[int]:
        """Messages held because `source` had no phone number go out with `phone`."""
        released = await self._outbox.release_held(source, phone)
        for sms_id in released:
            log.info("sms.released", sms_id=sms_id, source=source, phone=phone)
        return released
