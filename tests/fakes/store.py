"""Waiting on a real outbox from tests: woken by each commit, bounded in time."""

from __future__ import annotations

import asyncio

from gateway.outbox import Message, Outbox


async def wait_messages(outbox: Outbox, count: int, timeout: float = 5.0) -> list[Message]:
    """The store's messages once it holds at least `count` of them (newest first)."""
    changed = asyncio.Event()
    outbox.on_accepted(changed.set)

    async def enough() -> list[Message]:
        while True:
            changed.clear()
            found = await outbox.list_messages()
            if len(found) >= count:
                return found
            await changed.wait()

    return await asyncio.wait_for(enough(), timeout)
