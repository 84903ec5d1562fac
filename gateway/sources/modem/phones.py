"""Which phone number a modem's SIM has: the one fact every message from it needs."""

from __future__ import annotations

from collections.abc import Sequence

from gateway.config import ModemConfig, SimConfig
from gateway.fields import normalize_phone
from gateway.sources.sim_match import normalise_iccid, phone_for

__all__ = ["modem_source", "normalise_iccid", "resolve_phone", "resolve_phone_origin"]


def modem_source(modem: ModemConfig) -> str:
    """The source name of a modem's messages in the outbox, logs and metrics."""
    return f"modem:{modem.name}"


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
    found = resolve_phone_origin(sims, modem, iccid=iccid, imsi=imsi, cnum=cnum)
    return found[0] if found else None


def resolve_phone_origin(
    sims: Sequence[SimConfig],
    modem: ModemConfig,
    *,
    iccid: str | None,
    imsi: str | None,
    cnum: str | None,
    phonebook: str | None = None,
    discovered: tuple[str, str] | None = None,
) -> tuple[str, str] | None:
    """The number and where it came from (``sim``, ``config``, ``cnum``, ``phonebook``, or a
    discovered one's ``ussd``/``sms``): what the config says first, then what the SIM says,
    then what the operator said when asked (remembered by ICCID across restarts)."""
    matched = phone_for(sims, source=modem_source(modem), port=modem.port, imsi=imsi, iccid=iccid)
    if matched:
        return matched, "sim"
    # Every number by the field rules: one they refuse (AT+CNUM answering "12") is no number,
    # and messages wait held for one instead of each being refused at the accept path.
    configured = normalize_phone(modem.phone) if modem.phone else None
    if configured:
        return configured, "config"
    for value, origin in ((cnum, "cnum"), (phonebook, "phonebook")):
        number = normalize_phone(value) if value else None
        if number:
            return number, origin
    number = normalize_phone(discovered[0]) if discovered is not None else None
    if discovered is not None and number:
        return number, discovered[1]
    return None
