"""Which phone number a modem's SIM has: the one fact every message from it needs."""

from __future__ import annotations

from collections.abc import Sequence

from gateway.config import ModemConfig, SimConfig
from gateway.sources.sim_match import normalise_iccid, phone_for

__all__ = ["modem_source", "normalise_iccid", "resolve_phone"]


def modem_source(modem: ModemConfig) -> str:
    """The source name of a modem's messages in the outbox, logs and metrics."""
    return f"modem:{modem.name}"


def _digits(value: str) -> str:
    return "".join(ch for ch in value if ch.isascii() and ch.isdigit())


def resolve_phone(
    sims: Sequence[SimConfig],
    modem: ModemConfig,
    *,
    iccid: str | None,
    imsi: str | None,
    cnum: str | None,
) -> str | None:
    """The digits-only number of the SIM in ``modem``, or ``None`` when nothing says it.

    Order: the first ``[[sim]]`` entry matching the SIM (ICCID, IMSI, or the modem's source
    name), then the modem's own ``phone`` key, then what the SIM itself reports (``AT+CNUM``,
    often empty or stale, hence last).
    """
    matched = phone_for(sims, source=modem_source(modem), port=modem.port, imsi=imsi, iccid=iccid)
    if matched:
        return matched
    if _digits(modem.phone):
        return _digits(modem.phone)
    if cnum:
        return _digits(cnum) or None
    return None
