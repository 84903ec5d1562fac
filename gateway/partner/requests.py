"""Onlinesim's partner calls, parsed from untrusted JSON into typed values; errors name the field.

The body comes from the internet: every field is checked for type, size and range, unknown
fields are ignored (Onlinesim may add some), and nothing here raises anything but `BadRequest`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

from gateway.errors import GatewayError
from gateway.outbox.partner import FinishStatus

__all__ = [
    "Action",
    "BadRequest",
    "FinishActivation",
    "GetNumber",
    "GetServices",
    "Request",
    "parse_request",
]

MAX_NAME = 64  # country, operator and service names
MAX_PREFIXES = 1000  # exceptionPhoneSet entries
MAX_ID = 2**63 - 1


class BadRequest(GatewayError):
    """The partner call is malformed; `error` is the text of the ERROR answer."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field


class Action(enum.Enum):
    GET_SERVICES = "GET_SERVICES"
    GET_NUMBER = "GET_NUMBER"
    FINISH_ACTIVATION = "FINISH_ACTIVATION"


@dataclass(frozen=True)
class GetServices:
    rent: bool


@dataclass(frozen=True)
class GetNumber:
    rent: bool
    country: str
    operator: str  # "any" = any operator
    service: str
    exceptions: tuple[str, ...]  # digit prefixes never to hand out
    sum: float | None
    period: int | None  # rent: hours, when sent


@dataclass(frozen=True)
class FinishActivation:
    rent: bool
    activation_id: int
    status: FinishStatus
    sum: float | None


Request = GetServices | GetNumber | FinishActivation


def action_of(body: Any, default: Action | None) -> Action:
    """The body's `action`, else the one the URL names."""
    raw = body.get("action") if isinstance(body, dict) else None
    if raw is None:
        if default is None:
            raise BadRequest(
                "action", "missing; expected GET_SERVICES, GET_NUMBER or FINISH_ACTIVATION"
            )
        return default
    if not isinstance(raw, str):
        raise BadRequest("action", "must be a string")
    try:
        action = Action(raw.upper())
    except ValueError:
        raise BadRequest("action", f"unknown action {raw[:40]!r}") from None
    if default is not None and action is not default:
        raise BadRequest("action", f"{action.value} sent to the {default.value} URL")
    return action


def parse_request(body: Any, *, default: Action | None = None, rent: bool = False) -> Request:
    """One partner call. `default` is the action the URL names (None on the one-URL form)."""
    if not isinstance(body, dict):
        raise BadRequest("body", "expected a JSON object")
    action = action_of(body, default)
    rent = rent or _is_rent(body)
    match action:
        case Action.GET_SERVICES:
            return GetServices(rent=rent)
        case Action.GET_NUMBER:
            return GetNumber(
                rent=rent,
                country=_name(body, "country"),
                operator=_name(body, "operator", default="any"),
                service=_name(body, "service", default="rent" if rent else None),
                exceptions=_prefixes(body.get("exceptionPhoneSet")),
                sum=_number(body, "sum"),
                period=_optional_int(body, "period", 1, 24 * 366),
            )
        case Action.FINISH_ACTIVATION:
            status = _int(body, "status", 0, 99)
            try:
                finish = FinishStatus(status)
            except ValueError:
                raise BadRequest("status", f"{status} is not 1, 3, 4 or 5") from None
            return FinishActivation(
                rent=rent,
                activation_id=_int(body, "activationId", 1, MAX_ID),
                status=finish,
                sum=_number(body, "sum"),
            )


def _is_rent(body: dict[str, Any]) -> bool:
    service = body.get("service")
    return isinstance(service, str) and service.lower() == "rent"


def _name(body: dict[str, Any], key: str, default: str | None = None) -> str:
    value = body.get(key, default)
    if value is None:
        raise BadRequest(key, "missing")
    if not isinstance(value, str):
        raise BadRequest(key, "must be a string")
    value = value.strip().lower()
    if not value or len(value) > MAX_NAME or not value.isprintable():
        raise BadRequest(key, f"must be 1 to {MAX_NAME} printable characters")
    return value


def _prefixes(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise BadRequest("exceptionPhoneSet", "must be a list of numbers or digit strings")
    if len(value) > MAX_PREFIXES:
        raise BadRequest("exceptionPhoneSet", f"{len(value)} entries; at most {MAX_PREFIXES}")
    out: list[str] = []
    for i, item in enumerate(value):
        if isinstance(item, bool) or not isinstance(item, int | str):
            raise BadRequest(f"exceptionPhoneSet[{i}]", "must be a number or a digit string")
        text = str(item) if isinstance(item, int) else item.strip().lstrip("+")
        if not (text.isascii() and text.isdigit() and 1 <= len(text) <= 20):
            raise BadRequest(f"exceptionPhoneSet[{i}]", "must be 1 to 20 digits")
        out.append(text)
    return tuple(out)


def _int(body: dict[str, Any], key: str, low: int, high: int) -> int:
    value = body.get(key)
    if value is None:
        raise BadRequest(key, "missing")
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 20:
        value = int(value)  # tolerated: some callers quote ids
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise BadRequest(key, f"must be an integer from {low} to {high}")
    return value


def _optional_int(body: dict[str, Any], key: str, low: int, high: int) -> int | None:
    return None if body.get(key) is None else _int(body, key, low, high)


def _number(body: dict[str, Any], key: str) -> float | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BadRequest(key, "must be a number")
    number = float(value)
    if not 0 <= number <= 1e9:
        raise BadRequest(key, "must be from 0 to 1e9")
    return number
