"""What an acceptable incoming message is: limits, phone digits, Unicode validity, time bounds.

Every source (HTTP ingest, the CLI, gateway boxes, hooks, modems) and the config take their
field rules from here, and `Intake` checks every message against them before the store sees
it, so no source can commit a value the rules refuse.

Times: a message's receipt time must lie in the window ``[EARLIEST, now + MAX_AHEAD]`` (not
before 2000-01-01 UTC, not more than a day ahead of this host's clock). A time given by a
client at the door (``receivedAt`` of ``POST /v1/sms``, ``ingest --received-at``) outside it is
refused naming the field; a time a device supplies (box, hook, modem SCTS) outside it is a wrong
device clock, and the gateway's own receive time replaces it so the SMS is not lost.
"""

from __future__ import annotations

import math
import re
from dataclasses import replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import structlog

from gateway.errors import GatewayError

if TYPE_CHECKING:  # at run time only the errors: config reads phone numbers through this module
    from gateway.outbox.models import Incoming, Part

__all__ = [
    "DEVICE_TIME_FORMAT",
    "EARLIEST",
    "MAX_AHEAD",
    "MAX_FIELD",
    "MAX_ITEMS",
    "MAX_TEXT",
    "FieldError",
    "check_json_strings",
    "check_received_at",
    "check_string",
    "checked_incoming",
    "checked_part",
    "device_time",
    "in_window",
    "is_valid_unicode",
    "normalize_phone",
    "parse_received_at",
]

log = structlog.get_logger(__name__)

MAX_ITEMS = 1000  # messages in one request or push
MAX_TEXT = 100_000  # characters; 255 concatenated parts are under 40,000
MAX_FIELD = 256  # characters of any other string field (sender, id, ...)
PHONE_DIGITS = (3, 20)
EARLIEST = 946_684_800.0  # 2000-01-01T00:00:00Z: no SMS this gateway sees is older
MAX_AHEAD = 86_400.0  # seconds a receipt time may be ahead of our clock (time zones, skew)
# A device time (text or epoch) further from our clock than this is a wrong device clock: it
# would make a fresh SMS expire at once (max_age) or never; the receive time replaces it.
MAX_DEVICE_AHEAD = 600.0
MAX_DEVICE_AGE = 7 * 86_400.0
DEVICE_TIME_FORMAT = "%Y-%m-%d %H:%M:%S"

_PHONE_JUNK = re.compile(r"[+\s\-().]")


class FieldError(GatewayError):
    """A field of an incoming message is not acceptable; `field` names it (e.g. `[3].phone`)."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


def normalize_phone(value: str) -> str | None:
    """Digits only: '+7 (900) 123-45-67' or '+7.900.123.45.67' -> '79001234567'.

    ``+``, white space, dashes, dots and parentheses are dropped; what is left must be 3 to 20
    ASCII digits, else None.
    """
    digits = value if value.isdigit() else _PHONE_JUNK.sub("", value)
    if not digits.isascii() or not digits.isdigit() or not 3 <= len(digits) <= 20:
        return None
    return digits


def is_valid_unicode(value: str) -> bool:
    """True unless `value` holds a code point UTF-8 cannot carry (a lone UTF-16 surrogate)."""
    if value.isascii():
        return True
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def check_string(field: str, value: str, *, limit: int = MAX_FIELD) -> str:
    """`value` when it is at most `limit` characters of valid Unicode, else FieldError."""
    if len(value) > limit:
        raise FieldError(field, f"longer than {limit} characters")
    if not is_valid_unicode(value):
        raise FieldError(field, "contains an unpaired UTF-16 surrogate")
    return value


def check_json_strings(field: str, value: object) -> None:
    """FieldError naming a key or string inside a parsed JSON value that is not valid
    Unicode (e.g. ``sms[0].number``); for sources that keep the whole item as it came. A loop,
    not recursion: a body may nest as deep as the JSON parser allows."""
    todo: list[tuple[str, object]] = [(field, value)]
    while todo:
        where, item = todo.pop()
        if isinstance(item, str):
            if not is_valid_unicode(item):
                raise FieldError(where, "contains an unpaired UTF-16 surrogate")
        elif isinstance(item, dict):
            for key, inner in item.items():
                if not is_valid_unicode(str(key)):
                    raise FieldError(where, "a key contains an unpaired UTF-16 surrogate")
                todo.append((f"{where}.{key}", inner))
        elif isinstance(item, list):
            todo.extend((f"{where}[{i}]", inner) for i, inner in enumerate(item))


def in_window(when: float, now: float) -> bool:
    """Whether `when` (epoch seconds) is a plausible receipt time: 2000-01-01 to now + a day."""
    return EARLIEST <= when <= now + MAX_AHEAD  # NaN fails both comparisons


def check_received_at(field: str, when: float, now: float) -> float:
    """A client-given receipt time, or FieldError when it lies outside the window."""
    if not in_window(when, now):
        raise FieldError(
            field, "out of range; expected a time after 2000-01-01 and at most a day from now"
        )
    return when


def parse_received_at(field: str, value: str, now: float) -> float:
    """An ISO-8601 time given at the door (no offset: UTC) -> epoch seconds, or FieldError."""
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise FieldError(field, "expected ISO-8601, e.g. 2026-11-27T15:04:05+03:00") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)  # documented: a time without offset is UTC
    try:
        stamp = when.timestamp()
    except (OverflowError, ValueError):  # year 1 with a positive offset, year 9999 behind UTC
        stamp = math.nan
    return check_received_at(field, stamp, now)


def device_time(
    value: object, now: float, *, fmt: str = DEVICE_TIME_FORMAT, source: str | None = None
) -> float:
    """A device's receipt time (epoch seconds, or text in ``fmt`` read as this host's local
    time), or ``now`` when it is missing, unreadable or implausible: a clock far ahead or a week
    behind is a wrong clock, and the message must not expire early because of it. A time that
    is there but not taken is logged (``device_time.replaced``) with the source."""
    when: float | None = None
    if isinstance(value, int | float) and not isinstance(value, bool):
        when = float(value)
    elif isinstance(value, str) and value.strip():
        text = value.strip()
        if text.isascii() and text.isdigit():  # "²".isdigit(), yet float() refuses it
            when = float(text)
        else:
            try:
                when = datetime.strptime(text, fmt).timestamp()
            except (ValueError, OverflowError, OSError):
                when = None
    if when is not None and now - MAX_DEVICE_AGE <= when <= now + MAX_DEVICE_AHEAD:
        return when
    if value is not None and value != "":
        log.warning(
            "device_time.replaced", source=source, device_time=str(value)[:64], received_at=now
        )
    return now


def checked_incoming(item: Incoming, now: float) -> Incoming:
    """`item` if every field is acceptable, else FieldError naming the `Incoming` attribute.

    The gate `Intake` runs on every message of every source. Parsers check first with their own
    field names; this makes sure nothing they missed reaches the store. A receipt time outside
    the window can only be a device's (the door refuses a client's), so it is replaced by `now`.
    """
    phone, ref, raw = item.phone, item.source_ref, item.raw
    # The common case (ASCII everywhere, digits for a phone) in one expression: every message of
    # every source passes here, a list of a thousand included.
    if not (
        phone.isdigit()
        and phone.isascii()
        and 3 <= len(phone) <= 20
        and item.source.isascii()
        and len(item.source) <= MAX_FIELD
        and item.phone_from.isascii()
        and len(item.phone_from) <= MAX_FIELD
        and item.text.isascii()
        and len(item.text) <= MAX_TEXT
        and (ref is None or (ref.isascii() and len(ref) <= MAX_TEXT))
        and (raw is None or (raw.isascii() and len(raw) <= MAX_TEXT))
    ):
        if phone or item.hold is None:
            _check_phone(phone)
        _check_common(item.source, item.phone_from, ref, raw)
        check_string("text", item.text, limit=MAX_TEXT)
    if not EARLIEST <= item.received_at <= now + MAX_AHEAD:
        return replace(item, received_at=now)
    return item


def checked_part(part: Part, now: float) -> Part:
    """Like `checked_incoming` for one part of a concatenated SMS. Its text may start or end
    with half of a surrogate pair a network split between two parts (the store joins them), so
    the text is checked for length only."""
    if part.phone:
        _check_phone(part.phone)
    _check_common(part.source, part.phone_from, part.source_ref, part.raw)
    check_string("group_key", part.group_key, limit=MAX_TEXT)
    if len(part.text) > MAX_TEXT:
        raise FieldError("text", f"longer than {MAX_TEXT} characters")
    if not in_window(part.received_at, now):
        return replace(part, received_at=now)
    return part


def _check_phone(phone: str) -> None:
    if normalize_phone(phone) != phone:
        raise FieldError("phone", "expected 3 to 20 digits")


def _check_common(source: str, phone_from: str, ref: str | None, raw: str | None) -> None:
    check_string("source", source)
    check_string("phone_from", phone_from)
    if ref is not None:
        check_string("source_ref", ref, limit=MAX_TEXT)
    if raw is not None:
        check_string("raw", raw, limit=MAX_TEXT)
