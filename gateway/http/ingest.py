"""Read the body of POST /v1/sms (and `sms-gateway ingest`) into Incoming messages by the field
rules of `gateway.fields`; every error names its field (`[3].phone` in a list)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gateway.fields import (
    MAX_FIELD,
    MAX_ITEMS,
    MAX_TEXT,
    FieldError,
    check_string,
    normalize_phone,
    parse_received_at,
)
from gateway.outbox import Incoming

FIELDS = ("phone", "phoneFrom", "text", "receivedAt", "id")
_KNOWN = frozenset(FIELDS)
_EXPECTED = ", ".join(FIELDS)


@dataclass(frozen=True)
class ParsedBody:
    items: list[Incoming]
    is_list: bool


def parse_body(payload: Any, *, source: str, now: float) -> ParsedBody:
    """One JSON object or a list of 1..1000 of them -> Incoming items, or FieldError."""
    if isinstance(payload, list):
        if not payload:
            raise FieldError("body", "empty list; send 1 to 1000 messages")
        if len(payload) > MAX_ITEMS:
            raise FieldError("body", f"{len(payload)} messages; at most {MAX_ITEMS} per request")
        return ParsedBody([_item(p, i, source, now) for i, p in enumerate(payload)], is_list=True)
    return ParsedBody([_item(payload, None, source, now)], is_list=False)


def _item(obj: Any, index: int | None, source: str, now: float) -> Incoming:
    # The common case (a valid item) runs without building the field names the errors use:
    # a list of a thousand costs a thousand of these.
    if not isinstance(obj, dict):
        raise FieldError("body" if index is None else f"[{index}]", "expected a JSON object")
    if not _KNOWN.issuperset(obj):
        for key in obj:
            if key not in _KNOWN:
                name = key if key else '""'
                raise FieldError(_field(index, name), f"unknown field; expected {_EXPECTED}")
    phone_raw = _string(obj, "phone", index, required=True)
    phone = normalize_phone(phone_raw)
    if phone is None:
        raise FieldError(
            _field(index, "phone"),
            "expected 3 to 20 digits (+, spaces, dashes, dots, parentheses allowed)",
        )
    phone_from = _string(obj, "phoneFrom", index, required=True)
    if not phone_from or phone_from.isspace():
        raise FieldError(_field(index, "phoneFrom"), "must not be empty")
    text = _string(obj, "text", index, required=True, limit=MAX_TEXT)
    ref = _string(obj, "id", index, required=False)
    received = _string(obj, "receivedAt", index, required=False)
    return Incoming(
        source,
        phone,
        phone_from,
        text,
        parse_received_at(_field(index, "receivedAt"), received, now) if received else now,
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
            raise FieldError(_field(index, key), "missing")
        return ""
    if not isinstance(value, str):
        raise FieldError(_field(index, key), f"expected a string, got {type(value).__name__}")
    return check_string(_field(index, key), value, limit=limit)
