"""Gateway-box pushes (Dinstar, Ejoin) served for tests: PeerSources' routes on a free port."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from aiohttp import web

from gateway.peers import PeerSources


@contextlib.asynccontextmanager
async def serving(peers: PeerSources) -> AsyncIterator[str]:
    """Serve `peers`' routes on 127.0.0.1 (any free port); yields the base URL."""
    app = web.Application()
    app.add_routes(peers.routes())
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()
