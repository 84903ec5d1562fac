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
_KNOWN = frozenset(FIELDS)
_EXPECTED = ", ".join(FIELDS)


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
    digits = value if value.isdigit() else _PHONE_JUNK.sub("", value)
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
        return ParsedBody([_item(p, i, source, now) for i, p in enumerate(payload)], is_list=True)
    return ParsedBody([_item(payload, None, source, now)], is_list=False)


def _item(obj: Any, index: int | None, source: str, now: float) -> Incoming:
    # The common case (a valid item) runs without building the field names the errors use:
    # a list of a thousand costs a thousand of these.
    if not isinstance(obj, dict):
        raise IngestError("body" if index is None else f"[{index}]", "expected a JSON object")
    if not _KNOWN.issuperset(obj):
        for key in obj:
            if key not in _KNOWN:
                name = key if key else '""'
                raise IngestError(_field(index, name), f"unknown field; expected {_EXPECTED}")
    phone_raw = _string(obj, "phone", index, required=True)
    phone = normalize_phone(phone_raw)
    if phone is None:
        raise IngestError(
            _field(index, "phone"), "expected 3 to 20 digits (+, spaces, dashes allowed)"
        )
    phone_from = _string(obj, "phoneFrom", index, required=True)
    if not phone_from or phone_from.isspace():
        raise IngestError(_field(index, "phoneFrom"), "must not be empty")
    text = _string(obj, "text", index, required=True, limit=MAX_TEXT)
    ref = _string(obj, "id", index, required=False)
    received = _string(obj, "receivedAt", index, required=False)
    return Incoming(
        source,
        phone,
        phone_from,
        text,
        _timestamp(received, _field(index, "receivedAt")) if received else now,
        ref or None,
    )


def _field(index: int | None, name: str) -> str:
    """The name an error gives: `phone`, or `[3].phone` for the fourth item of a list."""
    return name if index is None else f"[{index}].{name}"


def _string(
    obj: dict[str, Any], key: str, index: int | None, *, required: bool, limit: int = MAX_FIELD
) -> str:
    value = obj.get(key)
    if value.__class__ is str and len(value) <= limit and value.isascii():
        return value  # the common case, checked first
    if value is None:
        if required:
            raise IngestError(_field(index, key), "missing")
        return ""
    if not isinstance(value, str):
        raise IngestError(_field(index, key), f"expected a string, got {type(value).__name__}")
    if len(value) > limit:
        raise IngestError(_field(index, key), f"longer than {limit} characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise IngestError(_field(index, key), "contains an unpaired UTF-16 surrogate") from None
    return value


def _timestamp(value: str, field: str) -> float:
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise IngestError(field, "expected ISO-8601, e.g. 2026-11-27T15:04:05+03:00") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)  # documented: a time without offset is UTC
    return when.timestamp()
