"""Validate the body of POST /v1/sms into Incoming messages; every error names its field."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from gateway.errors import GatewayError
from gateway.outbox import Incoming

MAX_ITEMS = 1000
MAX_TEXT = 100_000  # characters; 255 concatenated parts are under 40,000
MAX_FIELD = 256
_PHONE_JUNK = re.compile(r"[+\s\-().]")
FIELDS = ("phone", "phoneFrom", "text", "receivedAt", "id")


class IngestError(GatewayError):
    """Bad input; `field` says where (e.g. `[3].phone`)."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field


@dataclass(frozen=True)
class ParsedBody:
    items: list[Incoming]
    is_list: bool


def normalize_phone(value: str) -> str | None:
    """Digits only: '+7 (900) 123-45-67' -> '79001234567'; None when it is not a number."""
    digits = _PHONE_JUNK.sub("", value)
    if not digits.isascii() or not digits.isdigit() or not 3 <= len(digits) <= 20:
        return None
    return digits


def parse_body(payload: Any, *, source: str, now: float) -> ParsedBody:
    """One JSON object or a list of 1..1000 of them -> Incoming items, or IngestError."""
    if isinstance(payload, list):
        if not payload:
            raise IngestError("body", "empty list; send 1 to 1000 messages")
        if len(payload) > MAX_ITEMS:
            raise IngestError("body", f"{len(payload)} messages; at most {MAX_ITEMS} per request")
        return ParsedBody(
            [_item(p, f"[{i}].", source, now) for i, p in enumerate(payload)], is_list=True
        )
    return ParsedBody([_item(payload, "", source, now)], is_list=False)


def _item(obj: Any, where: str, source: str, now: float) -> Incoming:
    if not isinstance(obj, dict):
        raise IngestError(where.rstrip(".") or "body", "expected a JSON object")
    for key in obj:
        if key not in FIELDS:
            name = key if key else '""'
            raise IngestError(f"{where}{name}", f"unknown field; expected {', '.join(FIELDS)}")
    phone_raw = _string(obj, "phone", where, required=True)
    phone = normalize_phone(phone_raw)
    if phone is None:
        raise IngestError(f"{where}phone", "expected 3 to 20 digits (+, spaces, dashes allowed)")
    phone_from = _string(obj, "phoneFrom", where, required=True)
    if not phone_from.strip():
        raise IngestError(f"{where}phoneFrom", "must not be empty")
    text = _string(obj, "text", where, required=True, limit=MAX_TEXT)
    ref = _string(obj, "id", where, required=False)
    received = _string(obj, "receivedAt", where, required=False)
    return Incoming(
        source=source,
        phone=phone,
        phone_from=phone_from,
        text=text,
        received_at=_timestamp(received, f"{where}receivedAt") if received else now,
        source_ref=ref or None,
    )


def _string(
    obj: dict[str, Any], key: str, where: str, *, required: bool, limit: int = MAX_FIELD
) -> str:
    value = obj.get(key)
    if value is None:
        if required:
            raise IngestError(f"{where}{key}", "missing")
        return ""
    if not isinstance(value, str):
        raise IngestError(f"{where}{key}", f"expected a string, got {type(value).__name__}")
    if len(value) > limit:
        raise IngestError(f"{where}{key}", f"longer than {limit} characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise IngestError(f"{where}{key}", "contains an unpaired UTF-16 surrogate") from None
    return value


def _timestamp(value: str, field: str) -> float:
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise IngestError(field, "expected ISO-8601, e.g. 2026-11-27T15:04:05+03:00") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)  # documented: a time without offset is UTC
    return when.timestamp()
