"""All configured modems as one source: start and stop them together, report their health,
and apply new phone numbers on reload.

Each modem runs in its own task and fails alone; the bank only starts, stops and asks.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable, Sequence
from typing import Any

import structlog

from gateway.config import Config, ModemConfig
from gateway.health import Check, Level
from gateway.intake import Intake
from gateway.inventory.sims import Inventory
from gateway.metrics import Metrics
from gateway.sources.modem.device import Modem, ModemStatus
from gateway.sources.modem.discovery import Discovery

__all__ = ["NO_PHONE_PROBLEM", "ModemBank"]

log = structlog.get_logger(__name__)

NO_PHONE_PROBLEM = "no phone number known: add a [[sim]] with this ICCID or set phone"


def _restart_needed(old: ModemConfig, new: ModemConfig) -> bool:
    return (old.port, old.baudrate, old.pin) != (new.port, new.baudrate, new.pin)


class ModemBank:
    """One :class:`Modem` per ``[[modem]]`` table."""

    def __init__(
        self,
        intake: Intake,
        cfg: Config,
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.time,
        inventory: Inventory | None = None,
    ) -> None:
        self._intake = intake
        self._cfg = cfg
        self._metrics = metrics
        self._clock = clock
        queries = cfg.partner.number_query if cfg.partner is not None else ()
        self._modems = [
            Modem(
                m,
                cfg.modems,
                cfg.sim,
                intake=intake,
                metrics=metrics,
                clock=clock,
                inventory=inventory,
                queries=queries,
            )
            for m in cfg.modem
        ]

    @property
    def modems(self) -> tuple[Modem, ...]:
        return tuple(self._modems)

    def start(self) -> None:
        """Start every modem (stale multi-part messages are the housekeeper's)."""
        for modem in self._modems:
            modem.start()

    async def stop(self) -> None:
        await asyncio.gather(*(m.stop() for m in self._modems))

    async def discover(self, wanted: Sequence[str] = ()) -> dict[str, Discovery]:
        """Own-number discovery on the modems named or whose port is given (all when
        ``wanted`` is empty), side by side; by modem name. Unknown names are answered too."""
        chosen = [m for m in self._modems if not wanted or {m.name, m.config.port} & set(wanted)]
        results = await asyncio.gather(*(m.discover() for m in chosen))
        out = {m.name: r for m, r in zip(chosen, results, strict=True)}
        known = {m.name for m in self._modems} | {m.config.port for m in self._modems}
        for name in wanted:
            if name not in known:
                out[name] = Discovery(None, None, "no [[modem]] with this name or port")
        return out

    def statuses(self) -> list[ModemStatus]:
        return [m.status() for m in self._modems]

    def health_check(self) -> Check:
        """OK when every modem is up with a known phone; DEGRADED otherwise (what is queued
        still goes out, so a modem problem never makes the gateway as a whole FAILING)."""
        statuses = self.statuses()
        now = self._clock()
        up = sum(1 for s in statuses if s.up)
        no_phone = sum(1 for s in statuses if s.phone is None)
        level = Level.OK if up == len(statuses) and not no_phone else Level.DEGRADED
        return Check(
            level,
            {
                "up": up,
                "total": len(statuses),
                "without_phone": no_phone,
                "modems": {s.name: _details(s, now) for s in statuses},
            },
        )

    async def reload(self, cfg: Config) -> None:
        """SIGHUP: new ``[[sim]]`` entries and modem phones apply at once (messages held for
        want of a phone are released). New or removed ports and changed port, baudrate, pin
        or ``[modems]`` settings need a restart and are only logged."""
        by_name = {m.name: m for m in cfg.modem}
        for modem in self._modems:
            new = by_name.get(modem.name)
            if new is None:
                log.warning("modem.reload_needs_restart", modem=modem.name, change="removed")
                continue
            if _restart_needed(modem.config, new):
                log.warning("modem.reload_needs_restart", modem=modem.name, change="port or pin")
                new = dataclasses.replace(modem.config, phone=new.phone)
            await modem.apply_config(new, cfg.sim)
        known = {m.name for m in self._modems}
        for name in by_name.keys() - known:
            log.warning("modem.reload_needs_restart", modem=name, change="added")
        if cfg.modems != self._cfg.modems:
            log.warning("modem.reload_needs_restart", change="[modems] settings")
        self._cfg = cfg


def _details(status: ModemStatus, now: float) -> dict[str, Any]:
    out = status.as_dict()
    out["up"] = status.up
    out["last_sms_age"] = round(now - status.last_sms_at, 3) if status.last_sms_at else None
    problem: str | None = None
    if not status.sim_ready and status.sim_state not in (None, "READY"):
        problem = f"SIM not ready: {status.last_error or status.sim_state}"
    elif not status.port_open:
        problem = f"port not open: {status.last_error or 'not opened yet'}"
    elif not status.sim_ready:
        problem = "starting up"
    elif status.phone is None:
        problem = NO_PHONE_PROBLEM
    if status.phone is None and problem != NO_PHONE_PROBLEM:
        out["phone_problem"] = NO_PHONE_PROBLEM
    out["problem"] = problem
    return out
