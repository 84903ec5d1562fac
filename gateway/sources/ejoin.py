"""Read what an Ejoin / Skyline multi-port gateway pushes about received SMS. Pure: JSON in,
messages out.

Reference: Ejoin / Skyline "HTTP API" (v2.4, section "Receive SMS"): the device POSTs
``{"type": "recv-sms", "sms_num": n, "sms": [[flag, "port", ts, "sender", "recipient",
"content"], ...]}`` where ``flag`` 1 marks a delivery report (content ``"code scts"``), ``ts`` is
UTC epoch seconds and, for an SMS, ``content`` is base64 of UTF-8: header lines (``Sender``,
``Receiver``, ``SMSC``, ``SCTS``, ``Slot``), a blank line, then the text, e.g.
``Sender: Google\\r\\nReceiver: "24.01" \\r\\nSMSC: 34607008077\\r\\nSCTS: 25110914563088\\r\\n
Slot: "01"\\r\\n\\r\\nG-666266 is your Google verification code.`` Some firmware appends ICCID
and IMSI to the row. The same URL may receive ``dev-status``, ``port-status`` and
``status-report`` pushes: they are acknowledged with the same answer and never give an SMS.

For the SIM inventory, ``sightings`` reads two kinds of push:

* ``recv-sms``: the port of each SMS row with what the row carries (IMSI and ICCID when the
  firmware appends them, the recipient number): listed for operators (``ready`` at its
  ``last_sms``), never live.
* ``dev-status`` / ``port-status`` (Ejoin "HTTP MultiWan Router Development Spec" v2.2, section 3
  "Status Notification", turned on by ``GET /goip_get_status.html?url=...&period=...`` on the
  box): the box sends ``dev-status`` every ``period`` seconds (at least 60; ``expires`` in the
  push says the period) with one entry per port, and ``port-status`` at once when a port's state
  changes. An entry is ``{"port": "1.01", "st": 3, "iccid": ..., "imsi": ..., "sn": ...,
  "opr": "46001 CHINA UNICOM GSM", "sig": 15, "bal": ..., "imei": ...}``; ``st`` is the state
  (``port_state``), as a number or as "code detail" text (the spec's port-status example sends
  it under ``status`` as ``"3 OK"``). Each entry is a live sighting whose evidence stays good for
  ``fresh_window(expires)`` seconds (two periods and a margin: one lost push is forgiven), after
  which the inventory makes the SIM absent unless the box has reported it again.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Sequence
from typing import Any

from gateway.config import SimConfig
from gateway.errors import DecodeError
from gateway.fields import (
    MAX_FIELD,
    MAX_ITEMS,
    MAX_TEXT,
    FieldError,
    check_json_strings,
    device_time,
    normalize_phone,
)
from gateway.inventory.sims import PhoneOrigin, Sighting, SimState
from gateway.outbox.models import Hold, Incoming
from gateway.sources.dedup import digest
from gateway.sources.modem.answers import rssi_to_dbm
from gateway.sources.sim_match import phone_for

__all__ = [
    "DEFAULT_PERIOD",
    "KIND",
    "SUCCESS",
    "decode_content",
    "fresh_window",
    "parse_push",
    "port_state",
    "sightings",
    "status_code",
]

KIND = "ejoin"
SUCCESS: dict[str, Any] = {"code": 0, "reason": "OK"}
MAX_CONTENT = 4 * MAX_TEXT  # base64 characters
_HEADER = re.compile(r"^[A-Za-z][A-Za-z0-9_-]*:")
_IMSI = re.compile(r"^\d{14,15}$")
_ICCID = re.compile(r"^(89\d{16,20})F?$", re.IGNORECASE)

DEFAULT_PERIOD = 60.0  # goip_get_status.html's default report period, and its least
MAX_PERIOD = 3600.0  # a longer announced period is taken as this
STALE_PERIODS = 2  # a port stays live this many periods after its last report ...
STALE_SLACK = 15.0  # ... plus this (delivery and clock slack)
MAX_PORTS = 1024  # entries read from one dev-status (an ACOM532 has 512 slots)
_PORT = re.compile(r"^[0-9A-Za-z][0-9A-Za-z._-]{0,31}$")
_CODE = re.compile(r"^\s*(\d{1,4})(?!\d)")
# st (spec v2.2 section 3.1.4): 3 registered; 4 registered, in a call (the spec reads the
# operator "while st equal to 3 or 4"; v2.4 calls it "call connected"); 0 no SIM card; 5 no
# balance or alarm, 7 locked by the device, 8 locked by the operator, 9 SIM card error, 12 locked
# by the user; 1 idle SIM card, 2 registering, 6 register failed, 11 card detected. Anything
# else (13-16 appear only in a v2.4 summary; unknown codes) is not ready: never sold.
_READY = frozenset({3, 4})
_SIM_ERROR = frozenset({5, 7, 8, 9, 12})


def parse_push(
    payload: Any, *, source: str, sims: Sequence[SimConfig], now: float
) -> list[Incoming]:
    """The SMS in one push (delivery reports, ``dev-status``, ``port-status`` and other push kinds
    give none); ``FieldError`` names the field that is wrong."""
    if not isinstance(payload, dict):
        raise FieldError("body", "expected a JSON object with type recv-sms")
    kind = payload.get("type")
    if not isinstance(kind, str) or not kind:
        raise FieldError("type", "missing; expected recv-sms")
    if kind != "recv-sms":
        return []
    rows = payload.get("sms")
    if not isinstance(rows, list):
        raise FieldError("sms", "missing or not a list")
    if len(rows) > MAX_ITEMS:
        raise FieldError("sms", f"{len(rows)} entries; at most {MAX_ITEMS} per push")
    items = [_row(row, f"sms[{i}]", source, sims, now) for i, row in enumerate(rows)]
    return [item for item in items if item is not None]


def sightings(
    payload: Any, *, source: str, sims: Sequence[SimConfig], now: float
) -> list[Sighting]:
    """What a push says of the box's ports, for the SIM inventory; never raises.

    ``recv-sms`` (after ``parse_push`` took it): the port of each SMS row, listed, not live.
    ``dev-status`` / ``port-status``: each port's state now, live for ``fresh_window`` seconds
    (a no-SIM port is ``absent``); an entry without a usable port or state is left out."""
    if not isinstance(payload, dict):
        return []
    kind = payload.get("type")
    if kind == "recv-sms":
        return _sms_sightings(payload, source, sims, now)
    if kind == "port-status":
        entries: list[Any] = [payload]
        window = fresh_window(None)
    elif kind == "dev-status":
        rows = payload.get("status")
        entries = rows[:MAX_PORTS] if isinstance(rows, list) else []
        window = fresh_window(payload.get("expires"))
    else:
        return []
    found: dict[str, Sighting] = {}
    for entry in entries:
        seen = _port_sighting(entry, source, sims, window)
        if seen is not None:
            found.setdefault(seen.location, seen)
    return list(found.values())


def port_state(code: int) -> SimState:
    """The inventory state of an Ejoin port status code (``st``); see ``_READY`` above."""
    if code in _READY:
        return SimState.READY
    if code == 0:
        return SimState.ABSENT
    if code in _SIM_ERROR:
        return SimState.SIM_ERROR
    return SimState.NOT_REGISTERED


def status_code(value: Any) -> int | None:
    """``st`` as a number: ``3``, ``"3"`` or ``"3 OK"`` -> 3; ``None`` when it is not one."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value if 0 <= value <= 9999 else None
    if isinstance(value, str) and len(value) <= MAX_FIELD and value.isascii():
        match = _CODE.match(value)
        return int(match.group(1)) if match else None
    return None


def fresh_window(expires: Any) -> float:
    """Seconds a status report keeps a port live: ``STALE_PERIODS`` report periods and
    ``STALE_SLACK``. The period is the push's ``expires`` when it is a positive number (at most
    ``MAX_PERIOD``), else ``DEFAULT_PERIOD`` (a port-status carries none)."""
    period = DEFAULT_PERIOD
    if isinstance(expires, int | float) and not isinstance(expires, bool) and expires > 0:
        period = MAX_PERIOD if expires >= MAX_PERIOD else float(expires)  # NaN is not > 0
    return STALE_PERIODS * period + STALE_SLACK


def _port_sighting(
    entry: Any, source: str, sims: Sequence[SimConfig], window: float
) -> Sighting | None:
    if not isinstance(entry, dict):
        return None
    port = _port(entry.get("port"))
    code = status_code(entry["st"] if "st" in entry else entry.get("status"))
    if port is None or code is None:
        return None
    state = port_state(code)
    if state is SimState.READY and any(_flag(entry.get(k)) == 0 for k in ("active", "slot_active")):
        # Not in the spec: some firmware marks the slots its module is not using (all_sims=1)
        state = SimState.NOT_REGISTERED
    if state is SimState.ABSENT:
        # no SIM card: whatever identity the entry still carries is not of a SIM that is here
        return Sighting(source=source, location=port, state=state, port=port, fresh_for=window)
    iccid, imsi = _iccid(entry.get("iccid")), _imsi(entry.get("imsi"))
    phone = phone_for(sims, source=source, port=port, imsi=imsi, iccid=iccid)
    origin = PhoneOrigin.SIM
    if phone is None:
        sn = entry.get("sn")
        phone = normalize_phone(sn) if isinstance(sn, str) and len(sn) <= MAX_FIELD else None
        origin = PhoneOrigin.SOURCE
    sig = entry.get("sig")
    rssi = sig if isinstance(sig, int) and not isinstance(sig, bool) and 0 <= sig <= 31 else None
    return Sighting(
        source=source,
        location=port,
        state=state,
        port=port,
        iccid=iccid,
        imsi=imsi,
        phone=phone or "",
        phone_origin=origin.value if phone else None,
        signal=rssi_to_dbm(rssi) if rssi is not None else None,
        network_name=_operator(entry.get("opr")) if code in _READY else "",
        fresh_for=window,
    )


def _port(value: Any) -> str | None:
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 10**6:
        return str(value)
    if isinstance(value, str) and _PORT.fullmatch(value.strip()):
        return value.strip()
    return None


def _flag(value: Any) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip() in ("0", "1"):
        return int(value.strip())
    return None


def _iccid(value: Any) -> str | None:
    """18 to 22 digits (one trailing filler ``F`` dropped), else ``None``."""
    if not isinstance(value, str):
        return None
    digits = value.strip().upper().removesuffix("F")
    return digits if digits.isascii() and digits.isdigit() and 18 <= len(digits) <= 22 else None


def _imsi(value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    value = value.strip()
    return value if value.isascii() and _IMSI.fullmatch(value) else None


def _operator(value: Any) -> str:
    """``"46001 CHINA UNICOM GSM"`` -> ``"CHINA UNICOM GSM"``: the network's name, printable."""
    if not isinstance(value, str) or len(value) > MAX_FIELD:
        return ""
    head, _, rest = value.strip().partition(" ")
    name = rest if head.isascii() and head.isdigit() else value
    kept = "".join(c for c in name if c.isprintable())  # no controls, no lone surrogates
    return kept.strip()[:64]


def _sms_sightings(
    payload: dict[str, Any], source: str, sims: Sequence[SimConfig], now: float
) -> list[Sighting]:
    """The ports the SMS rows of a push (one ``parse_push`` took) came in on, one sighting
    each, listed and not live; delivery reports name no SIM here."""
    rows = payload.get("sms")
    found: dict[str, Sighting] = {}
    for i, row in enumerate(rows if isinstance(rows, list) else []):
        if not isinstance(row, list) or len(row) < 6 or row[0] not in (0, "0"):
            continue
        try:
            port = _field(row[1], f"sms[{i}][1]")
            recipient = _field(row[4], f"sms[{i}][4]")
        except FieldError:
            continue
        if not port:
            continue
        try:
            headers, _ = decode_content(row[5]) if isinstance(row[5], str) else ({}, "")
        except DecodeError:
            headers = {}
        extras = [str(x) for x in row[6:] if isinstance(x, str | int) and not isinstance(x, bool)]
        imsi = headers.get("IMSI") or next((x for x in extras if _IMSI.match(x)), None)
        imsi = imsi if imsi and _IMSI.match(imsi) else None
        iccid = next((m.group(1) for x in extras if (m := _ICCID.match(x.strip()))), None)
        phone = phone_for(sims, source=source, port=port, imsi=imsi, iccid=iccid)
        origin = PhoneOrigin.SIM
        if phone is None:
            phone, origin = normalize_phone(recipient), PhoneOrigin.SOURCE
        found[port] = Sighting(
            source=source,
            location=port,
            state=SimState.READY,  # it received an SMS; nothing says it still can
            port=port,
            iccid=iccid,
            imsi=imsi,
            phone=phone or "",
            phone_origin=origin.value if phone else None,
            last_sms=now,
            live=False,
        )
    return list(found.values())


def _row(
    row: Any, where: str, source: str, sims: Sequence[SimConfig], now: float
) -> Incoming | None:
    if not isinstance(row, list) or len(row) < 6:
        raise FieldError(where, "expected [flag, port, time, sender, recipient, content]")
    check_json_strings(where, row)  # all of it is kept (raw), so all of it must be valid
    flag = _int(row[0], f"{where}[0]")
    port = _field(row[1], f"{where}[1]")
    ts = _int(row[2], f"{where}[2]")
    sender = _field(row[3], f"{where}[3]")
    recipient = _field(row[4], f"{where}[4]")
    content = row[5]
    if not isinstance(content, str) or len(content) > MAX_CONTENT:
        raise FieldError(f"{where}[5]", "expected the content as a string")
    if flag == 1:
        return None  # a delivery report for something we never sent
    if flag != 0:
        raise FieldError(f"{where}[0]", f"flag {flag}; expected 0 (SMS) or 1 (delivery report)")
    try:
        headers, text = decode_content(content)
        hold = None
    except DecodeError:
        headers, text, hold = {}, "", Hold.UNDECODABLE  # kept for a person to look at
    extras = [str(x) for x in row[6:] if isinstance(x, str | int) and not isinstance(x, bool)]
    imsi = headers.get("IMSI") or next((x for x in extras if _IMSI.match(x)), None)
    phone = phone_for(sims, source=source, port=port, imsi=imsi) or normalize_phone(recipient)
    if hold is None and not phone:
        hold = Hold.NO_PHONE
    return Incoming(
        source=source,
        phone=phone or "",
        phone_from=sender or headers.get("Sender", ""),
        text=text,
        received_at=device_time(ts, now, source=source),
        source_ref=f"{port}|{ts}|{sender}|{digest(content)}",
        hold=hold,
        raw=json.dumps(row, ensure_ascii=False)[:4096],
    )


def decode_content(content: str) -> tuple[dict[str, str], str]:
    """(header fields, text) of a pushed SMS; ``DecodeError`` when it is not base64 UTF-8."""
    compact = "".join(content.split())
    try:
        data = base64.b64decode(compact + "=" * (-len(compact) % 4), validate=True)
        decoded = data.decode("utf-8")
    except (binascii.Error, ValueError):
        raise DecodeError("content: not base64 of UTF-8 text") from None
    if not _HEADER.match(decoded):
        return {}, _checked(decoded)  # older firmware: the text alone
    ends = [(i, len(s)) for s in ("\r\n\r\n", "\n\n") if (i := decoded.find(s)) >= 0]
    if not ends:
        return {}, _checked(decoded)
    at, size = min(ends)
    headers: dict[str, str] = {}
    for line in decoded[:at].splitlines():
        key, _, value = line.partition(":")
        headers.setdefault(key.strip(), value.strip())
    return headers, _checked(decoded[at + size :])


def _checked(text: str) -> str:
    if len(text) > MAX_TEXT:
        raise DecodeError(f"content: longer than {MAX_TEXT} characters")
    return text


def _int(value: Any, where: str) -> int:
    if isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
        value = int(value) if len(value.strip()) <= 18 else -1
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**53:
        raise FieldError(where, "expected a whole number")
    return value


def _field(value: Any, where: str) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, str) or len(value) > MAX_FIELD:
        raise FieldError(where, f"expected a string of at most {MAX_FIELD} characters")
    return value.strip()
