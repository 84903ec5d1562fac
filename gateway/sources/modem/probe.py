"""``sms-gateway modems probe``: ask a port who is there and print the config it needs.

Read-only towards the modem's settings: echo off and numeric errors, the PIN if one is given
and asked for; no SMS is read or deleted, no storage or indication setting is changed.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

from gateway.sources.modem.channel import AtChannel, AtCommandError, LinkClosed, Urc
from gateway.sources.modem.serial_link import LinkOpenError, open_serial_link
from gateway.sources.modem.session import Identity, Network, Session, SimNotReady, Storage

__all__ = ["ProbeResult", "probe_port", "render_snippet"]


@dataclass(frozen=True)
class ProbeResult:
    """What one port told us; ``error`` says why the rest may be missing."""

    port: str
    maker: str | None = None
    model: str | None = None
    imei: str | None = None
    iccid: str | None = None
    imsi: str | None = None
    own_number: str | None = None  # AT+CNUM, digits only
    sim_state: str | None = None
    signal_dbm: int | None = None
    registration: int | None = None  # +CREG stat: 1 home, 5 roaming
    operator: str | None = None
    storage: str | None = None
    storage_used: int | None = None
    storage_total: int | None = None
    error: str | None = None

    @property
    def registered(self) -> bool:
        return self.registration in (1, 5)


def _ignore(urc: Urc) -> None:
    pass


async def probe_port(
    port: str, baudrate: int = 115200, pin: str = "", timeout: float = 5
) -> ProbeResult:
    """Open ``port``, identify modem and SIM, close. Never raises for a modem problem: the
    result's ``error`` says what went wrong."""
    try:
        link = await open_serial_link(port, baudrate=baudrate)
    except LinkOpenError as exc:
        return ProbeResult(port, error=str(exc))
    channel = AtChannel(link, on_urc=_ignore)
    channel.start()
    identity, network, storage = Identity(), Network(), None
    sim_state: str | None = None
    error: str | None = None
    try:
        session = Session(channel, timeout=timeout)
        await session.wake(reset_if_silent=False)
        try:
            sim_state = await session.unlock(pin)
        except SimNotReady as exc:
            sim_state, error = exc.state, str(exc)
        identity = await session.identify()
        network = await session.network()
        storage = await session.storage() if error is None else None
    except AtCommandError as exc:
        error = f"the modem did not answer as expected: {exc}"
    except LinkClosed as exc:
        error = f"the port closed: {exc}"
    finally:
        await channel.close()
    return _result(port, identity, network, storage, sim_state, error)


def _result(
    port: str,
    identity: Identity,
    network: Network,
    storage: Storage | None,
    sim_state: str | None,
    error: str | None,
) -> ProbeResult:
    number = "".join(c for c in identity.cnum or "" if c.isdigit()) or None
    return ProbeResult(
        port=port,
        maker=identity.maker,
        model=identity.model,
        imei=identity.imei,
        iccid=identity.iccid,
        imsi=identity.imsi,
        own_number=number,
        sim_state=sim_state,
        signal_dbm=network.signal_dbm,
        registration=network.stat,
        operator=network.operator,
        storage=storage.name if storage else None,
        storage_used=storage.used if storage else None,
        storage_total=storage.total if storage else None,
        error=error,
    )


def _toml(value: str) -> str:
    """A TOML basic string (JSON's escapes are a subset TOML reads)."""
    return json.dumps(value, ensure_ascii=False)


def _comment(text: str) -> str:
    return "".join(c if c.isprintable() else " " for c in text)


def _answered(r: ProbeResult) -> bool:
    return r.maker is not None or r.imei is not None or r.iccid is not None


def _found(r: ProbeResult) -> list[str]:
    lines = [f"# {_comment(r.port)}"]
    if _answered(r):
        device = " ".join(v for v in (r.maker, r.model) if v) or "?"
        lines.append(f"#   modem: {_comment(device)}, IMEI {r.imei or '?'}")
        lines.append(
            f"#   SIM: ICCID {r.iccid or '?'}, IMSI {r.imsi or '?'}, state {r.sim_state or '?'}"
        )
        unknown = "not stored on the SIM" if r.sim_state == "READY" else "unknown"
        lines.append(f"#   own number (AT+CNUM): {r.own_number or unknown}")
        signal = f"{r.signal_dbm} dBm" if r.signal_dbm is not None else "unknown"
        network = (
            f"registered ({_comment(r.operator or '?')})" if r.registered else "not registered"
        )
        lines.append(f"#   network: {network}, signal {signal}")
        if r.storage_total is not None:
            lines.append(f"#   SMS storage {r.storage}: {r.storage_used}/{r.storage_total} used")
    if r.error:
        lines.append(f"#   problem: {_comment(r.error)}")
    return lines


def render_snippet(results: Sequence[ProbeResult]) -> str:
    """A ready ``[[modem]]`` / ``[[sim]]`` TOML snippet for the ports that answered, with what
    was found as comments; ports that did not answer appear as comments only."""
    out = ["# Generated by `sms-gateway modems probe`; check, then paste into the config.", ""]
    for r in results:
        out.extend(_found(r))
        if not _answered(r):
            out.append(f"# [[modem]] port = {_toml(r.port)}  # did not answer; not configured")
            out.append("")
            continue
        out.append("[[modem]]")
        out.append(f"port = {_toml(r.port)}")
        if r.sim_state == "SIM PIN":
            out.append('pin = ""  # fill in: this SIM asks for a PIN')
        if r.own_number:
            out.append(f"phone = {_toml(r.own_number)}  # from the SIM (AT+CNUM)")
        out.append("")
        if r.iccid or r.imsi:
            out.append("[[sim]]")
            if r.iccid:
                out.append(f"iccid = {_toml(r.iccid)}")
            else:
                out.append(f"imsi = {_toml(r.imsi or '')}  # the ICCID could not be read")
            if r.own_number:
                out.append(f"phone = {_toml(r.own_number)}")
            else:
                out.append('phone = ""  # fill in: this SIM\'s number, digits only')
            out.append("")
        else:
            out.append("# no [[sim]]: neither ICCID nor IMSI could be read; set phone above")
            out.append("")
    return "\n".join(out)
