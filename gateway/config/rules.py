"""How a key is read: the rules a field's metadata carries, the field specifiers that declare a
key with its default and rule, and which fields of a dataclass are keys."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar, get_args, get_type_hints

from gateway.config.table import _Table
from gateway.config.values import _check_smpp_string, _string_map
from gateway.errors import ConfigError
from gateway.fields import normalize_phone

T = TypeVar("T")

_RULE = "gateway.config.rule"  # the metadata key that makes a field a config key

# `default` is the field's default, or _MISSING when the key is required.
_MISSING: Any = dataclasses.MISSING


class _Context(Protocol):
    """What a rule needs from the reading it is part of (reading.py's _Reading)."""

    def secret(self, t: _Table, key: str, *, required: bool) -> str:
        """A secret given inline as `key` or in the file named by `key_file`."""
        ...

    def read(self, cls: type[Any], t: _Table) -> Any:
        """One table into the dataclass `cls`: a [table], or one of [[tables]]."""
        ...


class _Rule:
    """Reads one key from its table; the field's type hint and default come with it."""

    def read(self, t: _Table, key: str, default: Any, hint: Any, ctx: _Context) -> Any:
        raise NotImplementedError

    def keys(self, key: str) -> tuple[str, ...]:
        """The names this field may take in the file."""
        return (key,)


@dataclass(frozen=True)
class _Text(_Rule):
    nonempty: bool = False
    convert: Callable[[str], str] | None = None
    longest: int | None = None  # an SMPP string field: this many Latin-1 characters at most

    def read(self, t: _Table, key: str, default: Any, hint: Any, ctx: _Context) -> Any:
        value = t.string(key, default, nonempty=self.nonempty)
        if self.longest is not None:
            _check_smpp_string(t.where(key), value, self.longest)
        return self.convert(value) if self.convert else value


@dataclass(frozen=True)
class _Required(_Rule):
    """A string that must be given and not empty; `what` says what belongs there."""

    what: str
    longest: int | None = None  # an SMPP string field: this many Latin-1 characters at most

    def read(self, t: _Table, key: str, default: Any, hint: Any, ctx: _Context) -> Any:
        value = t.string(key, "", nonempty=True)
        if not value:
            raise ConfigError(f"{t.where(key)}: missing; {self.what}")
        if self.longest is not None:
            _check_smpp_string(t.where(key), value, self.longest)
        return value


@dataclass(frozen=True)
class _Name(_Rule):
    """A peer's name: it goes into URLs, logs and metric labels."""

    def read(self, t: _Table, key: str, default: Any, hint: Any, ctx: _Context) -> Any:
        name = t.string(key, "", nonempty=True)
        if not name or not all(c.isalnum() or c in "-_." for c in name):
            raise ConfigError(f"{t.where(key)}: required; letters, digits, - _ . only")
        return name


@dataclass(frozen=True)
class _Seconds(_Rule):
    minimum: float
    maximum: float = math.inf

    def read(self, t: _Table, key: str, default: Any, hint: Any, ctx: _Context) -> Any:
        return t.number(key, default, minimum=self.minimum, maximum=self.maximum)


@dataclass(frozen=True)
class _Integer(_Rule):
    minimum: int
    maximum: int = 2**62

    def read(self, t: _Table, key: str, default: Any, hint: Any, ctx: _Context) -> Any:
        return t.integer(key, default, minimum=self.minimum, maximum=self.maximum)


@dataclass(frozen=True)
class _Flag(_Rule):
    def read(self, t: _Table, key: str, default: Any, hint: Any, ctx: _Context) -> Any:
        return t.boolean(key, default)


@dataclass(frozen=True)
class _Choice(_Rule):
    """One of the field's Literal values: the type hint is the list of choices."""

    def read(self, t: _Table, key: str, default: Any, hint: Any, ctx: _Context) -> Any:
        return t.choice(key, default, get_args(hint))


@dataclass(frozen=True)
class _Words(_Rule):
    convert: Callable[[str], str]

    def read(self, t: _Table, key: str, default: Any, hint: Any, ctx: _Context) -> Any:
        return tuple(self.convert(w) for w in t.string_list(key, default))


@dataclass(frozen=True)
class _Checked(_Rule):
    """A value `convert` checks; its ValueError or TypeError becomes the key's error."""

    convert: Callable[[object], Any]

    def read(self, t: _Table, key: str, default: Any, hint: Any, ctx: _Context) -> Any:
        return t.check(key, None if default is _MISSING else default, self.convert)


@dataclass(frozen=True)
class _Secret(_Rule):
    """Inline as `key` or from the file `key_file`; masked in every output."""

    required: bool
    longest: int | None = None  # characters the protocol can carry

    def read(self, t: _Table, key: str, default: Any, hint: Any, ctx: _Context) -> Any:
        value = ctx.secret(t, key, required=self.required)
        if self.longest is not None and isinstance(value, str) and len(value) > self.longest:
            # the length only: the value is a secret
            raise ConfigError(
                f"{t.where(key)}: {len(value)} characters; SMPP 3.4 carries {self.longest} at"
                " most (the peer would see a cut or refused password)"
            )
        return value

    def keys(self, key: str) -> tuple[str, ...]:
        return (key, f"{key}_file")


@dataclass(frozen=True)
class _Phone(_Rule):
    required: bool

    def read(self, t: _Table, key: str, default: Any, hint: Any, ctx: _Context) -> Any:
        value = t.string(key, "")
        if not value:
            if self.required:
                raise ConfigError(
                    f"{t.where(key)}: missing; the number as digits, e.g. 79001234567"
                )
            return ""
        digits = normalize_phone(value)
        if digits is None:
            raise ConfigError(f"{t.where(key)}: {value!r} is not a phone number (3 to 20 digits)")
        return digits


@dataclass(frozen=True)
class _Phones(_Rule):
    """A table of name -> phone number."""

    def read(self, t: _Table, key: str, default: Any, hint: Any, ctx: _Context) -> Any:
        raw: dict[str, str] = t.check(key, {}, _string_map)
        phones = {}
        for name, value in raw.items():
            digits = normalize_phone(value)
            if digits is None:
                raise ConfigError(f"{t.where(key)}.{name}: {value!r} is not a phone number")
            phones[name] = digits
        return phones


@dataclass(frozen=True)
class _Section(_Rule):
    """A [table] read into the field's dataclass; required when the field has no default."""

    def read(self, t: _Table, key: str, default: Any, hint: Any, ctx: _Context) -> Any:
        return ctx.read(hint, t.table(key, required=default is _MISSING))


@dataclass(frozen=True)
class _OptionalSection(_Rule):
    """A [table] that switches a feature on: None when the file has no such table."""

    def read(self, t: _Table, key: str, default: Any, hint: Any, ctx: _Context) -> Any:
        if not t.has(key):
            return None
        (cls, _) = get_args(hint)
        return ctx.read(cls, t.table(key))


@dataclass(frozen=True)
class _Sections(_Rule):
    """[[tables]] read into the field's tuple of dataclasses; `unique` keys must all differ."""

    unique: tuple[str, ...] = ()

    def read(self, t: _Table, key: str, default: Any, hint: Any, ctx: _Context) -> Any:
        (cls, _) = get_args(hint)
        items = tuple(ctx.read(cls, sub) for sub in t.tables(key))
        for attr in self.unique:
            _unique(items, attr, key)
        return items


def _unique(items: tuple[Any, ...], attr: str, table: str) -> None:
    seen: set[str] = set()
    for i, item in enumerate(items):
        value = getattr(item, attr)
        if value in seen:
            raise ConfigError(f"{table}[{i}].{attr}: {value!r} is used twice; each must differ")
        seen.add(value)


# Field specifiers: each declares one key, its default and the rule that reads it. A specifier
# without a default makes the key required.


def _key(rule: _Rule, default: T, *, shown: bool = True) -> T:
    return field(default=default, repr=shown, metadata={_RULE: rule})


def _required_key(rule: _Rule) -> Any:
    return field(metadata={_RULE: rule})


def _seconds(default: float, *, minimum: float, maximum: float = math.inf) -> float:
    """A number of seconds (an integer is taken as a float)."""
    return _key(_Seconds(minimum, maximum), default)


def _integer(default: int, *, minimum: int, maximum: int = 2**62) -> int:
    return _key(_Integer(minimum, maximum), default)


def _flag(default: bool) -> bool:
    return _key(_Flag(), default)


def _string(
    default: str = "",
    *,
    nonempty: bool = False,
    convert: Callable[[str], str] | None = None,
    longest: int | None = None,
) -> str:
    """A string; with `longest`, an SMPP 3.4 field of that many Latin-1 characters at most."""
    return _key(_Text(nonempty, convert, longest), default)


def _choice(default: str) -> Any:
    """One of the values of the field's Literal type."""
    return _key(_Choice(), default)


def _words(default: tuple[str, ...], convert: Callable[[str], str]) -> tuple[str, ...]:
    """A list of non-empty strings, each converted."""
    return _key(_Words(convert), default)


def _checked(convert: Callable[[object], Any], default: Any = None) -> Any:
    """A value `convert` checks; without a default the key is required."""
    if default is None:
        return _required_key(_Checked(convert))
    return _key(_Checked(convert), default)


def _secret(*, required: bool, longest: int | None = None) -> str:
    """A secret: `key` inline or `key_file`; never in repr, masked by masked()."""
    return _key(_Secret(required, longest), "", shown=False)


def _required_string(what: str, *, longest: int | None = None) -> Any:
    """A string that must be given; `longest` as for _string."""
    return _required_key(_Required(what, longest))


def _peer_name() -> Any:
    return _required_key(_Name())


def _phone_number(*, required: bool) -> Any:
    if required:
        return _required_key(_Phone(required))
    return _key(_Phone(required), "")


def _phone_table() -> Any:
    return field(default_factory=dict, metadata={_RULE: _Phones()})


def _optional_section() -> Any:
    """A [table] whose presence turns a feature on; None when absent."""
    return _key(_OptionalSection(), None)


def _sections(*unique: str) -> Any:
    """An array of [[tables]]; none when absent. Each key in `unique` must differ among them."""
    return _key(_Sections(unique), ())


# -- which fields of a config dataclass are keys of the file -----------------------------------

_Key = tuple[dataclasses.Field[Any], _Rule, Any]
_KEYS: dict[type[Any], tuple[_Key, ...]] = {}


def _keys_of(cls: type[Any]) -> tuple[_Key, ...]:
    """(field, rule, type hint) for each field of `cls` that is a key of the file."""
    if cls not in _KEYS:
        _KEYS[cls] = _find_keys(cls)
    return _KEYS[cls]


def _find_keys(cls: type[Any]) -> tuple[_Key, ...]:
    hints = get_type_hints(cls)
    found = []
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        rule = f.metadata.get(_RULE)
        if rule is None and isinstance(hint, type) and dataclasses.is_dataclass(hint):
            rule = _Section()
        if rule is not None:
            found.append((f, rule, hint))
    return tuple(found)


def _default(f: dataclasses.Field[Any]) -> Any:
    if f.default is not _MISSING:
        return f.default
    if callable(f.default_factory):
        return f.default_factory()
    return _MISSING
