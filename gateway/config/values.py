"""What a key's value may be: the checks and conversions the declarations and rules name.

Most take the value as TOML gave it and return it checked or converted; the ValueError (or
TypeError) they raise becomes an error naming the key. `_check_smpp_string` is given the key's
name and raises the ConfigError itself.
"""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import urlsplit

from gateway.errors import ConfigError


def _upstream_url(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError("expected a string such as https://host/v1/PUSH_SMS")
    if not (value.isascii() and value.isprintable()) or " " in value:
        raise ValueError(
            "contains spaces, control or non-ASCII characters; percent-encode them"
            " (and write an IDN host in its xn-- form)"
        )
    parts = urlsplit(value)
    if "@" in parts.netloc or (not parts.netloc and "@" in value.split("/", 1)[0]):
        # Not shown: the part before @ is a password. The client would drop it silently.
        raise ValueError(
            "has a user name or password (user:pass@host); remove it: the api_key authenticates"
        )
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{value!r} is not an http(s) URL; expected e.g. https://host/v1/PUSH_SMS")
    _check_host(parts.hostname)
    try:
        parts.port  # noqa: B018 - urlsplit checks the port only when asked
    except ValueError:
        raise ValueError(f"{value!r} has a port that is not 0-65535") from None
    return value


def _check_host(host: str) -> None:
    """Refuse a name DNS cannot carry: it would fail only on connect (as UnicodeError)."""
    try:
        ipaddress.ip_address(host)
        return
    except ValueError:
        pass
    name = host.removesuffix(".")
    try:
        host.encode("idna")
        usable = len(name) <= 253
    except UnicodeError:
        usable = False
    if not usable:
        raise ValueError(
            f"{host!r} is not a valid host name (labels of 1-63 characters between dots,"
            " 253 characters at most)"
        )


def _listen_address(value: object) -> str:
    if not isinstance(value, str) or ":" not in value:
        raise ValueError("expected HOST:PORT such as 127.0.0.1:8080")
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{value!r} is not HOST:PORT with a port 0-65535")
    return value


def _networks(value: object) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ValueError("expected a list of non-empty strings")
    for entry in value:
        try:
            ipaddress.ip_network(entry, strict=False)
        except ValueError:
            raise ValueError(
                f"{entry!r} is not an IP address or network, e.g. 192.0.2.10 or 10.1.0.0/16"
            ) from None
    return tuple(value)


def _string_map(value: object) -> dict[str, str]:
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise ValueError('expected a table of strings, e.g. { "modem1" = "79001234567" }')
    return dict(value)


def _network_names(value: object) -> dict[str, str]:
    names = _string_map(value)
    for code, name in names.items():
        if not re.fullmatch(r"[0-9]{3}(-[0-9]{2,3})?", code):
            raise ValueError(f"{code!r} is not an MCC (250) or MCC-MNC (250-01)")
        if not name.strip():
            raise ValueError(f"{code!r}: the name must not be empty")
    return names


def _mcc_mnc(value: object) -> str:
    if not isinstance(value, str) or not re.fullmatch(r"[0-9]{3}-[0-9]{2,3}", value):
        raise ValueError("expected MCC-MNC such as 250-01")
    return value


def _digits_only(value: object) -> str:
    if not isinstance(value, str) or (value and not (value.isascii() and value.isdigit())):
        raise ValueError("expected digits, e.g. 7")
    return value


def _pattern(value: object) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError("expected a regular expression whose first group is the number")
    try:
        compiled = re.compile(value)
    except re.error as e:
        raise ValueError(f"not a regular expression: {e}") from None
    if compiled.groups < 1:
        raise ValueError("needs a group, e.g. (\\d{10,15}), that captures the number")
    return value


def _optional_url(value: object) -> str:
    return "" if value == "" else _upstream_url(value)


def _optional_path(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError("expected a file path")
    return value


def _iccid(value: str) -> str:
    return value.upper().removesuffix("F")  # printed ICCIDs often carry the filler F


def _check_smpp_string(where: str, value: str, longest: int) -> None:
    """Refuse what an SMPP 3.4 C-octet string field cannot carry.

    The wire is Latin-1 ended by NUL (pdu.cstring sends "?" for any other character), and the
    field holds `longest` characters plus the NUL: a longer value would go out uncut, to a peer
    that refuses or cuts it; an account's longer system_id could never match a peer's bind.
    """
    bad = next((c for c in value if not "\x01" <= c <= "\xff"), None)
    if bad is not None:
        raise ConfigError(
            f"{where}: contains {bad!r} (U+{ord(bad):04X}), which SMPP 3.4 cannot carry;"
            " use Latin-1 characters other than NUL (plain ASCII is safest)"
        )
    if len(value) > longest:
        raise ConfigError(f"{where}: {len(value)} characters; SMPP 3.4 carries {longest} at most")
