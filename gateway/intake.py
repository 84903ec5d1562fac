"""The one accept path every source uses: commit to the outbox, then count and log what came in."""

from __future__ import annotations

from collections.abc import Sequence

import structlog

from gateway.metrics import Metrics
from gateway.outbox import Accepted, Incoming, Outbox, Part, PartResult

log = structlog.get_logger(__name__)


class Intake:
    def __init__(self, outbox: Outbox, metrics: Metrics | None = None) -> None:
        self._outbox = outbox
        self._metrics = metrics

    async def accept(self, items: Sequence[Incoming]) -> list[Accepted]:
        """Commit `items` (raises StoreUnavailable when nothing could be taken)."""
        accepted = await self._outbox.accept(items)
        for item, a in zip(items, accepted, strict=True):
            if a.duplicate:
                log.info(
                    "sms.duplicate_ignored",
                    sms_id=a.sms_id,
                    source=item.source,
                    source_ref=item.source_ref,
                )
                if self._metrics:
                    self._metrics.duplicates.labels(item.source).inc()
            else:
                self._log_accepted(a.sms_id, item)
        return accepted

    def _log_accepted(self, sms_id: int, item: Incoming) -> None:
        if item.hold is not None:
            log.warning(
                "sms.held",
                sms_id=sms_id,
                source=item.source,
                reason=item.hold.value,
                phone_from=item.phone_from,
            )
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
            self._metrics.received.labels(item.source).inc()

    async def accept_part(self, part: Part) -> PartResult:
        """Commit one part of a concatenated SMS; joins the message when the last one is in."""
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
                self._metrics.duplicates.labels(part.source).inc()
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
