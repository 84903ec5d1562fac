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
``status-report`` pushes; they are acknowledged and ignored here.

For the SIM inventory, ``sightings`` lists the port of each SMS row with what the row carries
(IMSI and ICCID when the firmware appends them, the recipient number): such a port is listed
for operators (``ready`` at its ``last_sms``) but never live, never counted toward GET_SERVICES
(the ``port-status`` pushes are not read yet).
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
from gateway.sources.sim_match import phone_for

__all__ = ["KIND", "SUCCESS", "decode_content", "parse_push", "sightings"]

KIND = "ejoin"
SUCCESS: dict[str, Any] = {"code": 0, "reason": "OK"}
MAX_CONTENT = 4 * MAX_TEXT  # base64 characters
_HEADER = re.compile(r"^[A-Za-z][A-Za-z0-9_-]*:")
_IMSI = re.compile(r"^\d{14,15}$")
_ICCID = re.compile(r"^(89\d{16,20})F?$", re.IGNORECASE)


def parse_push(
    payload: Any, *, source: str, sims: Sequence[SimConfig], now: float
) -> list[Incoming]:
    """The SMS in one push (delivery reports and other push kinds give none); ``FieldError``
    names the field that is wrong."""
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
    """The ports the SMS rows of a push (one ``parse_push`` took) came in on, one sighting
    each, listed and not live; delivery reports and other push kinds name no SIM here."""
    if not isinstance(payload, dict) or payload.get("type") != "recv-sms":
        return []
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
