"""Which phone number a modem's SIM has: the one fact every message from it needs."""

from __future__ import annotations

from collections.abc import Sequence

from gateway.config import ModemConfig, SimConfig

__all__ = ["modem_source", "normalise_iccid", "resolve_phone"]


def modem_source(modem: ModemConfig) -> str:
    """The source name of a modem's messages in the outbox, logs and metrics."""
    return f"modem:{modem.name}"


def normalise_iccid(value: str) -> str:
    """``"8970 1991 2345 6789 012F"`` -> ``"8970199123456789012"``: uppercase, one trailing
    filler ``F`` dropped, then only the digits kept (spaces and dashes from copy-paste go)."""
    upper = value.strip().upper().removesuffix("F")
    return "".join(ch for ch in upper if ch.isascii() and ch.isdigit())


def _digits(value: str) -> str:
    return "".join(ch for ch in value if ch.isascii() and ch.isdigit())


def _sim_matches(
    sim: SimConfig, modem: ModemConfig, *, iccid: str | None, imsi: str | None
) -> bool:
    if sim.iccid and iccid and normalise_iccid(sim.iccid) == normalise_iccid(iccid):
        return bool(normalise_iccid(iccid))
    if sim.imsi and imsi and _digits(sim.imsi) == _digits(imsi):
        return bool(_digits(imsi))
    # A [[sim]] may also name the modem's source ("modem:<name>"), optionally with its port.
    return bool(sim.source) and sim.source == modem_source(modem) and sim.port in ("", modem.port)


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
    for sim in sims:
        if _sim_matches(sim, modem, iccid=iccid, imsi=imsi):
            phone = _digits(sim.phone)
            if phone:
                return phone
    if _digits(modem.phone):
        return _digits(modem.phone)
    if cnum:
        return _digits(cnum) or None
    return None
