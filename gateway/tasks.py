"""Stopping a task we own without swallowing a cancellation of our own."""

from __future__ import annotations

import asyncio
from typing import Any

__all__ = ["cancel_and_wait"]


async def cancel_and_wait(task: asyncio.Future[Any]) -> None:
    """Cancel ``task`` and wait until it has ended.

    Its own ``CancelledError`` is the expected end and is not raised. But if the caller is
    being cancelled meanwhile (a stop landing while we wait), that cancellation propagates:
    ``contextlib.suppress(CancelledError)`` around the await would eat it, and the caller
    would carry on (a modem would reopen its port instead of stopping). Any other exception
    the task ended with is raised.
    """
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if current is not None and current.cancelling():
            raise
