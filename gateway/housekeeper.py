"""Store housekeeping in one task: expire old messages, purge finished ones, join stale parts.

Nothing here talks to the upstream or to a source: expiry and purge used to run beside the
delivery worker and the flush of incomplete multi-part messages inside the modem bank (which
made GoIP and Yeastar depend on a bank being started). Timing is what it was there: expiry and
purge at start and then every 30 s; the flush every tenth of `[modems] multipart_timeout` (at
most every 30 s), for every source alike.
"""

from __future__ import annotations

import asyncio

import structlog

from gateway.errors import StoreUnavailable
from gateway.intake import Intake
from gateway.outbox import Outbox
from gateway.tasks import cancel_and_wait

__all__ = ["MAINTENANCE_EVERY", "Housekeeper", "flush_interval"]

log = structlog.get_logger(__name__)
MAINTENANCE_EVERY = 30.0  # seconds between expiry-and-purge rounds
_FLUSH_EVERY_MAX = 30.0


def flush_interval(multipart_timeout: float) -> float:
    """How often incomplete multi-part messages are looked at: a tenth of the timeout, at most
    every 30 s."""
    return min(_FLUSH_EVERY_MAX, multipart_timeout / 10)


class Housekeeper:
    def __init__(
        self,
        outbox: Outbox,
        intake: Intake,
        *,
        max_age: float,
        keep_finished: float,
        multipart_timeout: float,
        maintenance_every: float = MAINTENANCE_EVERY,
    ) -> None:
        self._outbox = outbox
        self._intake = intake
        self._max_age = max_age
        self._keep_finished = keep_finished
        self._multipart_timeout = multipart_timeout
        self._maintenance_every = maintenance_every
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="housekeeper")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            await cancel_and_wait(task)

    @property
    def alive(self) -> bool:
        return self._task is not None and not self._task.done()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        flush_every = flush_interval(self._multipart_timeout)
        # Each interval counts from the end of the round before, as it always did.
        maintain_at = loop.time()
        flush_at = loop.time() + flush_every
        while True:
            await asyncio.sleep(max(0.0, min(maintain_at, flush_at) - loop.time()))
            if loop.time() >= maintain_at:
                await self._maintain()
                maintain_at = loop.time() + self._maintenance_every
            if loop.time() >= flush_at:
                await self._flush_stale_parts()
                flush_at = loop.time() + flush_every

    async def _maintain(self) -> None:
        """Expire messages past max_age and purge finished ones past keep_finished."""
        try:
            expired = await self._outbox.expire_old(self._max_age)
            for sms_id in expired:
                log.warning("push.expired", sms_id=sms_id, max_age=self._max_age)
            purged = await self._outbox.purge_finished(self._keep_finished)
            if purged:
                log.info("store.purged", count=purged)
        except Exception as e:
            log.error("store.maintenance_failed", error=str(e))

    async def _flush_stale_parts(self) -> None:
        """Multi-part messages still incomplete after multipart_timeout go out, gaps marked."""
        try:
            joined = await self._intake.flush_stale_parts(self._multipart_timeout)
        except StoreUnavailable as exc:
            log.warning("modem.parts_flush_failed", error=str(exc))
            return
        except Exception:
            log.exception("modem.parts_flush_failed")
            return
        for accepted in joined:
            log.info("modem.parts_flushed", sms_id=accepted.sms_id, partial=True)
