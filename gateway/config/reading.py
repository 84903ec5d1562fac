"""Reading: the file, or a decoded TOML document, into a Config; secrets' files; warnings."""

from __future__ import annotations

import dataclasses
import os
import stat
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from gateway.config.rules import _default, _keys_of
from gateway.config.schema import _CHECKS, Config
from gateway.config.table import _Table
from gateway.errors import ConfigError

DEFAULT_CONFIG_PATH = "/etc/sms-gateway/config.toml"


def default_path() -> str:
    """The config path when -c is not given: $SMS_GATEWAY_CONFIG, else the system path."""
    return os.environ.get("SMS_GATEWAY_CONFIG") or DEFAULT_CONFIG_PATH


def load(path: str | os.PathLike[str], *, read_secrets: bool = True) -> Config:
    """Read and validate the file at `path`; raise ConfigError naming the first wrong key.

    `read_secrets=False` leaves secrets empty and does not open their files: commands that
    only touch the store must work without the credentials only the service can read.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{p}: no such config file (give one with -c PATH)") from None
    except PermissionError:
        raise ConfigError(f"{p}: not readable by this user") from None
    except IsADirectoryError:
        raise ConfigError(f"{p}: is a directory; give the config file itself") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{p}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    except (OSError, ValueError) as e:
        raise ConfigError(f"{p}: cannot read: {e}") from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{p}: not valid TOML: {e}") from None
    return parse(raw, base_dir=p.parent, source_path=str(p), read_secrets=read_secrets)


def parse(
    raw: Mapping[str, Any],
    *,
    base_dir: Path = Path("."),
    source_path: str = "",
    read_secrets: bool = True,
) -> Config:
    """Turn a decoded TOML document into a Config (separate from load() for tests)."""
    ctx = _Reading(base_dir, read_secrets)
    cfg: Config = _read(Config, _Table(raw, ""), ctx)
    warnings = [*ctx.warnings, *_cross_warnings(cfg)]
    return dataclasses.replace(cfg, source_path=source_path, warnings=tuple(warnings))


def _cross_warnings(cfg: Config) -> list[str]:
    """Settings each valid alone that work against each other."""
    found: list[str] = []
    windows = [(f"smpp_client[{i}]", c.retransmit_window) for i, c in enumerate(cfg.smpp_client)]
    if cfg.smpp_server is not None:
        windows += [
            (f"smpp_server.account[{i}]", a.retransmit_window)
            for i, a in enumerate(cfg.smpp_server.account)
        ]
    for where, window in windows:
        if cfg.store.keep_finished < 2 * window:
            found.append(
                f"{where}.retransmit_window: {window:g} s, but store.keep_finished is"
                f" {cfg.store.keep_finished:g} s: a resend that comes after its first copy was"
                f" purged is stored twice; keep keep_finished at least {2 * window:g} s"
            )
    return found


def _read(cls: type[Any], t: _Table, ctx: _Reading) -> Any:
    """One table into `cls`: every declared key in field order, the cross checks, then leftovers."""
    values = {
        f.name: rule.read(t, f.name, _default(f), hint, ctx) for f, rule, hint in _keys_of(cls)
    }
    cfg = cls(**values)
    check = _CHECKS.get(cls)
    if check is not None:
        cfg = check(cfg, t)
    t.finish()
    return cfg


class _Reading:
    """What one parse carries along: where secret files are, and the warnings found."""

    def __init__(self, base_dir: Path, read_secrets: bool) -> None:
        self._base_dir = base_dir
        self._read_secrets = read_secrets
        self.warnings: list[str] = []

    def read(self, cls: type[Any], t: _Table) -> Any:
        """One table into the dataclass `cls`, for the rules of [tables] and [[tables]]."""
        return _read(cls, t, self)

    def secret(self, t: _Table, key: str, *, required: bool) -> str:
        """A secret given inline as `key` or in the file named by `key_file`."""
        inline = t.string(key, "")
        file_name = t.string(f"{key}_file", "")
        where = t.where(key)
        if inline and file_name:
            raise ConfigError(f"{where}: give either {key} or {key}_file, not both")
        if not self._read_secrets:
            return ""
        if file_name:
            inline = self._from_file(where, file_name)
        if required and not inline:
            raise ConfigError(f"{where}: missing; set {key} or {key}_file")
        if any(c.isspace() for c in inline):
            raise ConfigError(f"{where}: contains whitespace; check the value (not shown)")
        if not (inline.isascii() and inline.isprintable()):
            # Secrets go verbatim into HTTP headers and protocol lines, which take neither.
            raise ConfigError(
                f"{where}: contains control or non-ASCII characters; check the value (not shown)"
            )
        return inline

    def _from_file(self, where: str, file_name: str) -> str:
        path = Path(file_name) if os.path.isabs(file_name) else self._base_dir / file_name
        try:
            value = path.read_text(encoding="utf-8").strip()
        except (OSError, ValueError) as e:
            reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
            raise ConfigError(f"{where}_file: cannot read {path}: {reason}") from None
        if not value:
            raise ConfigError(f"{where}_file: {path} is empty")
        try:
            mode = path.stat().st_mode
        except OSError:
            mode = 0
        if mode & stat.S_IROTH:
            self.warnings.append(
                f"{where}_file: {path} is readable by every user on this host"
                f" (mode {stat.S_IMODE(mode):04o}); make it 0600 or 0640: chmod o-r {path}"
            )
        return value
