"""Read what a Dinstar gateway (UC2000, DWG) pushes about received SMS. Pure: JSON in, messages out.

Reference: "Dinstar GSM Gateway HTTP API" v201910, section "Receive SMS" (the push is the
``query_incoming_sms`` answer without ``error_code``), e.g.
``{"sn":"xxxx-xxxx-xxxx-xxxx","sms":[{"incoming_sms_id":1,"port":1,"number":"6717",
"smsc":"+8613800757511","timestamp":"2016-07-12 15:46:18","text":"test"}]}``; newer firmware
adds ``imsi``. The device counts the push as delivered when the answer carries
``"error_code": 200``. The same page set pushes ``sms_result``, ``sms_deliver_status``, ``ussd``
and device events when enabled; those are acknowledged and ignored here.

For the SIM inventory, ``sightings`` lists the port (and IMSI when present) of each SMS in a
push: the box says nothing of its ports until an SMS arrives, so such a port is listed for
operators (``ready`` at its ``last_sms``) but never live, never counted toward GET_SERVICES.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from typing import Any
from urllib.parse import unquote

from gateway.config import SimConfig
from gateway.fields import (
    MAX_FIELD,
    MAX_ITEMS,
    MAX_TEXT,
    FieldError,
    check_json_strings,
    check_string,
    device_time,
)
from gateway.inventory.sims import PhoneOrigin, Sighting, SimState
from gateway.outbox.models import Hold, Incoming
from gateway.sources.dedup import digest
from gateway.sources.sim_match import phone_for

__all__ = ["KIND", "SUCCESS", "parse_push", "sightings"]

KIND = "dinstar"
SUCCESS: dict[str, Any] = {"error_code": 200}
_PLAIN = ("", "utf8", "utf-8", "unicode", "gsm-7bit", "gsm7", "7bit", "ucs2", "ascii")


def parse_push(
    payload: Any, *, source: str, sims: Sequence[SimConfig], now: float
) -> list[Incoming]:
    """The SMS in one push body (none for other push kinds); ``FieldError`` names the field."""
    if not isinstance(payload, dict):
        raise FieldError("body", "expected a JSON object with sn and sms")
    if "sms" not in payload:
        if payload.keys() & {"sms_result", "sms_deliver_status", "ussd", "sn"}:
            return []  # another push kind this gateway does not need
        raise FieldError("sms", "missing; expected the list of received SMS")
    sn = payload.get("sn", "")
    if not isinstance(sn, str) or len(sn) > MAX_FIELD:
        raise FieldError("sn", "expected the gateway's serial number as a string")
    check_string("sn", sn)
    items = payload["sms"]
    if not isinstance(items, list):
        raise FieldError("sms", "expected a list")
    if len(items) > MAX_ITEMS:
        raise FieldError("sms", f"{len(items)} entries; at most {MAX_ITEMS} per push")
    return [_item(item, f"sms[{i}]", sn, source, sims, now) for i, item in enumerate(items)]


def sightings(
    payload: Any, *, source: str, sims: Sequence[SimConfig], now: float
) -> list[Sighting]:
    """The ports the SMS of a push (one ``parse_push`` took) came in on, one sighting each,
    listed and not live; a row without a port names no SIM and is left out."""
    rows = payload.get("sms") if isinstance(payload, dict) else None
    found: dict[str, Sighting] = {}
    for i, item in enumerate(rows if isinstance(rows, list) else []):
        if not isinstance(item, dict):
            continue
        try:
            port = _optional_id(item.get("port"), f"sms[{i}].port")
            imsi = _string(item, "imsi", f"sms[{i}]", required=False)
        except FieldError:
            continue
        if port is None:
            continue
        imsi_ok = imsi if imsi.isascii() and imsi.isdigit() and 6 <= len(imsi) <= 15 else None
        phone = phone_for(sims, source=source, port=port, imsi=imsi_ok)
        found[port] = Sighting(
            source=source,
            location=port,
            state=SimState.READY,  # it received an SMS; nothing says it still can
            port=port,
            imsi=imsi_ok,
            phone=phone or "",
            phone_origin=PhoneOrigin.SIM.value if phone else None,
            last_sms=now,
            live=False,
        )
    return list(found.values())


def _item(
    item: Any, where: str, sn: str, source: str, sims: Sequence[SimConfig], now: float
) -> Incoming:
    if not isinstance(item, dict):
        raise FieldError(where, "expected an object")
    check_json_strings(where, item)  # all of it is kept (raw), so all of it must be valid
    sms_id = _id(item.get("incoming_sms_id"), f"{where}.incoming_sms_id")
    port = _optional_id(item.get("port"), f"{where}.port")
    number = _string(item, "number", where, required=True)
    imsi = _string(item, "imsi", where, required=False)
    timestamp = _string(item, "timestamp", where, required=False)
    text = _text(item, where)
    phone = phone_for(sims, source=source, port=port, imsi=imsi or None)
    return Incoming(
        source=source,
        phone=phone or "",
        phone_from=number,
        text=text,
        received_at=device_time(timestamp, now, source=source),
        # The device's id restarts after a factory reset: the content keeps a reused id apart.
        source_ref=f"{sn or '-'}|{sms_id}|{digest(number, timestamp, text)}",
        hold=None if phone else Hold.NO_PHONE,
        raw=json.dumps(item, ensure_ascii=False, sort_keys=True)[:4096],
    )


def _id(value: Any, where: str) -> str:
    if isinstance(value, bool) or value is None:
        raise FieldError(where, "missing; expected the gateway's message id")
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 18:
        value = int(value)
    if isinstance(value, int) and 0 <= value < 2**63:
        return str(value)
    raise FieldError(where, f"expected a whole number, got {type(value).__name__}")


def _optional_id(value: Any, where: str) -> str | None:
    return None if value is None or value == "" else _id(value, where)


def _string(item: dict[str, Any], key: str, where: str, *, required: bool) -> str:
    value = item.get(key)
    if value is None:
        if required:
            raise FieldError(f"{where}.{key}", "missing")
        return ""
    if not isinstance(value, str):
        raise FieldError(f"{where}.{key}", f"expected a string, got {type(value).__name__}")
    if len(value) > MAX_FIELD:
        raise FieldError(f"{where}.{key}", f"longer than {MAX_FIELD} characters")
    return value.strip()


def _text(item: dict[str, Any], where: str) -> str:
    """Plain by default; some firmware says ``"encoding": "base64"`` or ``"url"``."""
    text = item.get("text")
    if not isinstance(text, str):
        raise FieldError(f"{where}.text", "missing or not a string")
    encoding = item.get("encoding", "")
    if not isinstance(encoding, str):
        raise FieldError(f"{where}.encoding", "expected a string")
    kind = encoding.strip().lower()
    if kind in _PLAIN:
        decoded = text
    elif kind == "base64":
        try:
            decoded = base64.b64decode(text, validate=True).decode("utf-8")
        except (binascii.Error, ValueError):
            raise FieldError(f"{where}.text", "not base64 of UTF-8 text") from None
    elif kind in ("url", "urlencode", "urlencoded"):
        try:
            decoded = unquote(text, errors="strict")
        except UnicodeDecodeError:
            raise FieldError(f"{where}.text", "not URL-encoded UTF-8 text") from None
    else:
        raise FieldError(f"{where}.encoding", f"{encoding[:20]!r} is not plain, base64 or url")
    return check_string(f"{where}.text", decoded, limit=MAX_TEXT)
