"""SMPP 3.4 as a source: the SMSC side boxes and Kannel bind to ([smpp_server]) and the ESME
binds to operators' SMSCs ([[smpp_client]]), built, started and stopped together."""

from __future__ import annotations

import time
from collections.abc import Callable

from gateway.config import Config
from gateway.errors import GatewayError
from gateway.health import Check
from gateway.intake import Intake
from gateway.metrics import Metrics
from gateway.sources.sim_match import SimTable

from .client import SmppClient
from .inbound import Inbound
from .server import SmppServer

__all__ = ["SmppSources"]


class SmppSources:
    """The daemon calls ``start()`` / ``stop()`` and registers ``check_functions()``."""

    def __init__(
        self,
        cfg: Config,
        intake: Intake,
        metrics: Metrics,
        *,
        clock: Callable[[], float] = time.time,
        sims: SimTable | None = None,
    ) -> None:
        # `sims`: the daemon's table, so a SIGHUP's [[sim]] entries apply to the next message.
        inbound = Inbound(intake, sims if sims is not None else cfg.sim, clock=clock)
        self.server = (
            SmppServer(cfg.smpp_server, inbound, metrics, clock=clock)
            if cfg.smpp_server is not None
            else None
        )
        self.clients = [SmppClient(c, inbound, metrics, clock=clock) for c in cfg.smpp_client]

    async def start(self) -> None:
        if self.server is not None:
            try:
                await self.server.start()
            except OSError as e:
                raise GatewayError(
                    f"smpp_server.listen: cannot listen on {self.server.cfg.listen}: "
                    f"{e.strerror or e}"
                ) from e
        for client in self.clients:
            await client.start()

    async def stop(self) -> None:
        for client in self.clients:
            await client.stop()
        if self.server is not None:
            await self.server.stop()

    def check_functions(self) -> dict[str, Callable[[], Check]]:
        checks: dict[str, Callable[[], Check]] = {}
        if self.server is not None:
            checks["smpp-server"] = self.server.check
        for c in self.clients:
            checks[c.source] = c.check
        return checks
