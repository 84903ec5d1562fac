"""One TOML table being read: typed getters whose errors name the key, and unknown keys refused."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from gateway.errors import ConfigError

T = TypeVar("T")


class _Table:
    """One TOML table being read: typed getters that name the key, and a check for leftovers."""

    def __init__(self, raw: Mapping[str, Any], prefix: str) -> None:
        self._raw = raw
        self._prefix = prefix
        self._seen: set[str] = set()

    def where(self, key: str) -> str:
        return f"{self._prefix}.{key}" if self._prefix else key

    def _get(self, key: str) -> Any:
        self._seen.add(key)
        return self._raw.get(key)

    def has(self, key: str) -> bool:
        return self._raw.get(key) is not None

    def table(self, key: str, *, required: bool = False) -> _Table:
        value = self._get(key)
        if value is None:
            if required:
                raise ConfigError(f"[{self.where(key)}]: missing; this table is required")
            value = {}
        if not isinstance(value, dict):
            raise ConfigError(f"{self.where(key)}: expected a table [{key}]")
        return _Table(value, self.where(key))

    def tables(self, key: str) -> list[_Table]:
        """An array of tables ([[key]]); absent means none."""
        value = self._get(key)
        if value is None:
            return []
        if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
            raise ConfigError(f"{self.where(key)}: expected tables written [[{key}]]")
        return [_Table(v, f"{self.where(key)}[{i}]") for i, v in enumerate(value)]

    def check(self, key: str, default: T | None, convert: Callable[[object], T]) -> T:
        value = self._get(key)
        if value is None:
            if default is None:
                raise ConfigError(f"{self.where(key)}: missing; this key is required")
            return default
        try:
            return convert(value)
        except (ValueError, TypeError) as e:
            raise ConfigError(f"{self.where(key)}: {e}") from None

    def string(self, key: str, default: str, *, nonempty: bool = False) -> str:
        value = self._get(key)
        if value is None:
            return default
        if not isinstance(value, str):
            raise ConfigError(f"{self.where(key)}: expected a string, got {_kind(value)}")
        if nonempty and not value:
            raise ConfigError(f"{self.where(key)}: must not be empty")
        return value

    def string_list(self, key: str, default: tuple[str, ...]) -> tuple[str, ...]:
        value = self._get(key)
        if value is None:
            return default
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise ConfigError(f"{self.where(key)}: expected a list of non-empty strings")
        return tuple(value)

    def boolean(self, key: str, default: bool) -> bool:
        value = self._get(key)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise ConfigError(f"{self.where(key)}: expected true or false, got {_kind(value)}")
        return value

    def number(
        self, key: str, default: float, *, minimum: float, maximum: float = math.inf
    ) -> float:
        value = self._get(key)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(
                f"{self.where(key)}: expected a number of seconds, got {_kind(value)}"
            )
        try:
            usable = math.isfinite(value) and minimum <= value <= maximum
        except OverflowError:
            usable = False
        if not usable:
            raise ConfigError(
                f"{self.where(key)}: is {value}, must be between {minimum} and {maximum}"
            )
        return float(value)

    def integer(self, key: str, default: int, *, minimum: int, maximum: int = 2**62) -> int:
        value = self._get(key)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{self.where(key)}: expected an integer, got {_kind(value)}")
        if not minimum <= value <= maximum:
            raise ConfigError(
                f"{self.where(key)}: is {value}, must be between {minimum} and {maximum}"
            )
        return value

    def choice(self, key: str, default: Any, allowed: tuple[str, ...]) -> Any:
        value = self._get(key)
        if value is None:
            return default
        if value not in allowed:
            raise ConfigError(
                f"{self.where(key)}: is {value!r}, expected one of {', '.join(allowed)}"
            )
        return value

    def finish(self) -> None:
        """Unknown keys are errors: a typo must not be silently ignored."""
        unknown = sorted(set(self._raw) - self._seen)
        if unknown:
            raise ConfigError(
                f"{self.where(unknown[0])}: unknown key (check the spelling; "
                "config.example.toml lists every key)"
            )


def _kind(value: object) -> str:
    return {
        str: "a string",
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        list: "a list",
        dict: "a table",
    }.get(type(value), type(value).__name__)
