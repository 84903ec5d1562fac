"""The one accept path every source uses: commit to the outbox, then count and log what came in."""

from __future__ import annotations

from collections.abc import Sequence

import structlog

from gateway.metrics import Metrics
from gateway.outbox import Accepted, Incoming, Outbox

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
                log.info(
                    "sms.accepted",
                    sms_id=a.sms_id,
                    source=item.source,
                    phone=item.phone,
                    phone_from=item.phone_from,
                    chars=len(item.text),
                )
                if self._metrics:
                    self._metrics.received.labels(item.source).inc()
        return accepted
