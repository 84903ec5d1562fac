"""What the declarations give the rest of the program: the configuration masked for printing,
its secrets for the log scrubber, and every key the file may hold."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, get_args

from gateway.config.rules import (
    _MISSING,
    _default,
    _keys_of,
    _OptionalSection,
    _Rule,
    _Secret,
    _Section,
    _Sections,
)
from gateway.config.schema import Config

MASK = "********"


def masked(cfg: Config) -> dict[str, Any]:
    """The effective configuration as plain data, every secret replaced by a mask."""
    return _plain(cfg)


def _plain(obj: Any) -> dict[str, Any]:
    data: dict[str, Any] = {}
    for f, rule, _ in _keys_of(type(obj)):
        value = getattr(obj, f.name)
        if isinstance(rule, _Secret):
            value = MASK if value else ""
        elif isinstance(rule, _Section | _OptionalSection):
            value = None if value is None else _plain(value)
        elif isinstance(rule, _Sections):
            value = [_plain(item) for item in value]
        elif isinstance(value, tuple):
            value = list(value)
        elif isinstance(value, dict):
            value = dict(value)
        data[f.name] = value
    return data


def secret_values(cfg: Config) -> tuple[str, ...]:
    """Every secret set in `cfg`, for the log scrubber: whatever the metadata marks secret."""
    found: list[str] = []

    def walk(obj: Any) -> None:
        for f, rule, _ in _keys_of(type(obj)):
            value = getattr(obj, f.name)
            if isinstance(rule, _Secret) and value:
                found.append(value)
            elif isinstance(rule, _Section | _OptionalSection) and value is not None:
                walk(value)
            elif isinstance(rule, _Sections):
                for item in value:
                    walk(item)

    walk(cfg)
    return tuple(found)


@dataclass(frozen=True)
class DeclaredKey:
    """One key the file may hold, as declared on the dataclasses (for docs and tests)."""

    table: str  # "upstream", an array of tables such as "modem", or "partner.number_query"
    key: str
    default: Any  # _MISSING when the key is required or is the file form of a secret
    secret: bool


def declared_keys() -> Iterator[DeclaredKey]:
    """Every key of every table, in declaration order; a secret gives `key` and `key_file`."""
    for top, top_rule, hint in _keys_of(Config):
        yield from _declared(top.name, _table_class(top_rule, hint))


def _table_class(rule: _Rule, hint: Any) -> Any:
    return get_args(hint)[0] if isinstance(rule, _Sections | _OptionalSection) else hint


def _declared(table: str, cls: Any) -> Iterator[DeclaredKey]:
    for f, rule, hint in _keys_of(cls):
        if isinstance(rule, _Section | _Sections | _OptionalSection):
            yield from _declared(f"{table}.{f.name}", _table_class(rule, hint))
            continue
        is_secret = isinstance(rule, _Secret)
        default = _MISSING if isinstance(rule, _Secret) and rule.required else _default(f)
        for i, key in enumerate(rule.keys(f.name)):
            yield DeclaredKey(table, key, _MISSING if i else default, is_secret)
