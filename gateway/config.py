"""Read the TOML configuration once into frozen, typed objects; every mistake names its key.

Each key is declared once, on its dataclass field: the field's default is the key's default,
and its metadata says how the key is read (bounds, choices, conversion, secrecy). One reader
walks the dataclasses (tables, arrays of tables, the `*_file` form of secrets) and `masked()`
follows the same metadata, so a new secret cannot be printed in clear. Checks that involve
more than one key are small functions in `_CHECKS`.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import math
import os
import re
import stat
import tomllib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_type_hints
from urllib.parse import urlsplit

from gateway.errors import ConfigError
from gateway.fields import normalize_phone

DEFAULT_CONFIG_PATH = "/etc/sms-gateway/config.toml"
DEFAULT_DROP_ON = ("NO_OPERATION", "NO_OP", "BAD_SERVICE")
MASK = "********"

T = TypeVar("T")

_RULE = "gateway.config.rule"  # the metadata key that makes a field a config key


# -- conversions used by the declarations below ------------------------------------------------


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


# -- how a key is read: the rules a field's metadata carries ----------------------------------

# `default` is the field's default, or _MISSING when the key is required.
_MISSING: Any = dataclasses.MISSING


class _Rule:
    """Reads one key from its table; the field's type hint and default come with it."""

    def read(self, t: _Table, key: str, default: Any, hint: Any, ctx: _Reading) -> Any:
        raise NotImplementedError

    def keys(self, key: str) -> tuple[str, ...]:
        """The names this field may take in the file."""
        return (key,)


@dataclass(frozen=True)
class _Text(_Rule):
    nonempty: bool = False
    convert: Callable[[str], str] | None = None
    longest: int | None = None  # an SMPP string field: this many Latin-1 characters at most

    def read(self, t: _Table, key: str, default: Any, hint: Any, ctx: _Reading) -> Any:
        value = t.string(key, default, nonempty=self.nonempty)
        if self.longest is not None:
            _check_smpp_string(t.where(key), value, self.longest)
        return self.convert(value) if self.convert else value


@dataclass(frozen=True)
class _Required(_Rule):
    """A string that must be given and not empty; `what` says what belongs there."""

    what: str
    longest: int | None = None  # an SMPP string field: this many Latin-1 characters at most

    def read(self, t: _Table, key: str, default: Any, hint: Any, ctx: _Reading) -> Any:
        value = t.string(key, "", nonempty=True)
        if not value:
            raise ConfigError(f"{t.where(key)}: missing; {self.what}")
        if self.longest is not None:
            _check_smpp_string(t.where(key), value, self.longest)
        return value


@dataclass(frozen=True)
class _Name(_Rule):
    """A peer's name: it goes into URLs, logs and metric labels."""

    def read(self, t: _Table, key: str, default: Any, hint: Any, ctx: _Reading) -> Any:
        name = t.string(key, "", nonempty=True)
        if not name or not all(c.isalnum() or c in "-_." for c in name):
            raise ConfigError(f"{t.where(key)}: required; letters, digits, - _ . only")
        return name


@dataclass(frozen=True)
class _Seconds(_Rule):
    minimum: float
    maximum: float = math.inf

    def read(self, t: _Table, key: str, default: Any, hint: Any, ctx: _Reading) -> Any:
        return t.number(key, default, minimum=self.minimum, maximum=self.maximum)


@dataclass(frozen=True)
class _Integer(_Rule):
    minimum: int
    maximum: int = 2**62

    def read(self, t: _Table, key: str, default: Any, hint: Any, ctx: _Reading) -> Any:
        return t.integer(key, default, minimum=self.minimum, maximum=self.maximum)


@dataclass(frozen=True)
class _Flag(_Rule):
    def read(self, t: _Table, key: str, default: Any, hint: Any, ctx: _Reading) -> Any:
        return t.boolean(key, default)


@dataclass(frozen=True)
class _Choice(_Rule):
    """One of the field's Literal values: the type hint is the list of choices."""

    def read(self, t: _Table, key: str, default: Any, hint: Any, ctx: _Reading) -> Any:
        return t.choice(key, default, get_args(hint))


@dataclass(frozen=True)
class _Words(_Rule):
    convert: Callable[[str], str]

    def read(self, t: _Table, key: str, default: Any, hint: Any, ctx: _Reading) -> Any:
        return tuple(self.convert(w) for w in t.string_list(key, default))


@dataclass(frozen=True)
class _Checked(_Rule):
    """A value `convert` checks; its ValueError or TypeError becomes the key's error."""

    convert: Callable[[object], Any]

    def read(self, t: _Table, key: str, default: Any, hint: Any, ctx: _Reading) -> Any:
        return t.check(key, None if default is _MISSING else default, self.convert)


@dataclass(frozen=True)
class _Secret(_Rule):
    """Inline as `key` or from the file `key_file`; masked in every output."""

    required: bool
    longest: int | None = None  # characters the protocol can carry

    def read(self, t: _Table, key: str, default: Any, hint: Any, ctx: _Reading) -> Any:
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

    def read(self, t: _Table, key: str, default: Any, hint: Any, ctx: _Reading) -> Any:
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

    def read(self, t: _Table, key: str, default: Any, hint: Any, ctx: _Reading) -> Any:
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

    def read(self, t: _Table, key: str, default: Any, hint: Any, ctx: _Reading) -> Any:
        return _read(hint, t.table(key, required=default is _MISSING), ctx)


@dataclass(frozen=True)
class _OptionalSection(_Rule):
    """A [table] that switches a feature on: None when the file has no such table."""

    def read(self, t: _Table, key: str, default: Any, hint: Any, ctx: _Reading) -> Any:
        if not t.has(key):
            return None
        (cls, _) = get_args(hint)
        return _read(cls, t.table(key), ctx)


@dataclass(frozen=True)
class _Sections(_Rule):
    """[[tables]] read into the field's tuple of dataclasses; `unique` keys must all differ."""

    unique: tuple[str, ...] = ()

    def read(self, t: _Table, key: str, default: Any, hint: Any, ctx: _Reading) -> Any:
        (cls, _) = get_args(hint)
        items = tuple(_read(cls, sub, ctx) for sub in t.tables(key))
        for attr in self.unique:
            _unique(items, attr, key)
        return items


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


# -- the configuration -------------------------------------------------------------------------


@dataclass(frozen=True)
class UpstreamConfig:
    url: str = _checked(_upstream_url)
    api_key: str = _secret(required=True)
    retry_interval: float = _seconds(10.0, minimum=0.01)
    timeout: float = _seconds(10.0, minimum=0.01)
    concurrency: int = _integer(32, minimum=1, maximum=1024)
    max_age: float = _seconds(86400.0, minimum=0)
    drop_on: tuple[str, ...] = _words(DEFAULT_DROP_ON, str.upper)
    circuit_after: int = _integer(5, minimum=1)
    bearer_header: bool = _flag(True)
    phone_type: Literal["string", "integer"] = _choice("string")


@dataclass(frozen=True)
class StoreConfig:
    path: str = _string("/var/lib/sms-gateway/outbox.sqlite3", nonempty=True)
    keep_finished: float = _seconds(604800.0, minimum=0)


@dataclass(frozen=True)
class IdsConfig:
    node: int = _integer(0, minimum=0)
    nodes: int = _integer(1, minimum=1)


@dataclass(frozen=True)
class HttpConfig:
    listen: str = _checked(_listen_address, "127.0.0.1:8080")
    ingest_token: str = _secret(required=False)
    status_token: str = _secret(required=False)  # the status page, SIM identities on /health
    allow: tuple[str, ...] = _checked(_networks, ())  # client addresses or networks; empty: any
    request_timeout: float = _seconds(10.0, minimum=0.01)  # to receive a request's head and body
    keepalive_timeout: float = _seconds(15.0, minimum=0.01)  # an idle kept-alive connection
    max_connections: int = _integer(256, minimum=1, maximum=65535)  # open on http.listen
    status_show_text: bool = _flag(False)  # the status page shows message texts (else length)

    @property
    def host(self) -> str:
        return self.listen.rsplit(":", 1)[0].strip("[]")

    @property
    def port(self) -> int:
        return int(self.listen.rsplit(":", 1)[1])


@dataclass(frozen=True)
class LogConfig:
    level: Literal["debug", "info", "warning", "error"] = _choice("info")
    format: Literal["json", "console"] = _choice("json")


@dataclass(frozen=True)
class ModemsConfig:
    """Settings shared by every [[modem]] port."""

    # full AT+CMGL scan, besides +CMTI indications
    scan_interval: float = _seconds(60.0, minimum=1)
    # then an incomplete multi-part SMS goes out with gaps
    multipart_timeout: float = _seconds(300.0, minimum=1)
    # one AT command; a modem silent this long is reset
    command_timeout: float = _seconds(10.0, minimum=0.1)
    # longest wait between attempts to reopen a lost port
    reopen_max: float = _seconds(60.0, minimum=0.1)


@dataclass(frozen=True)
class ModemConfig:
    port: str = _required_string("the serial device, e.g. /dev/ttyUSB0")
    # label in logs, metrics and /health; "" in the file: the port's file name (_modem_name)
    name: str = _string()
    baudrate: int = _integer(115200, minimum=300, maximum=4_000_000)
    pin: str = _secret(required=False)
    phone: str = _phone_number(required=False)


@dataclass(frozen=True)
class SimConfig:
    """How a message's phone is found; the first matching entry wins."""

    phone: str = _phone_number(required=True)
    iccid: str = _string(convert=_iccid)
    imsi: str = _string()
    source: str = _string()  # with port: a source's own port (gateway boxes), e.g. "dinstar-1"
    port: str = _string()


@dataclass(frozen=True)
class HookConfig:
    """[gammu] / [smstools]: the hook's own modem name -> the phone it receives for."""

    phones: dict[str, str] = _phone_table()  # noqa: RUF009 - field(default_factory=dict)


@dataclass(frozen=True)
class HttpPeerConfig:
    """[[dinstar]] / [[ejoin]]: a gateway box that pushes to /v1/inbound/<kind>/<name>."""

    name: str = _peer_name()
    token: str = _secret(required=True)
    allow: tuple[str, ...] = _checked(_networks, ())  # source addresses or networks; empty: any


@dataclass(frozen=True)
class GoipConfig:
    name: str = _peer_name()
    id: str = _required_string("the GoIP's SMS-server id")
    password: str = _secret(required=True)
    listen: str = _checked(_listen_address, "127.0.0.1:44444")
    allow: tuple[str, ...] = _checked(_networks, ())  # source addresses or networks; empty: any
    # seconds of silence that end a long SMS sent as several packets
    quiet_period: float = _seconds(3.0, minimum=0.1)


@dataclass(frozen=True)
class YeastarConfig:
    name: str = _peer_name()
    host: str = _required_string("the TG's address")
    username: str = _required_string("API user")
    password: str = _secret(required=True)
    port: int = _integer(5038, minimum=1, maximum=65535)
    reconnect_max: float = _seconds(60.0, minimum=0.1)


@dataclass(frozen=True)
class NumberQueryConfig:
    """[[partner.number_query]]: how to ask one operator for a SIM's own number."""

    network: str = _checked(_mcc_mnc)  # MCC-MNC of the SIM's home network, e.g. "250-01"
    code: str = _required_string("the USSD code, e.g. *111*0887#")
    answer: Literal["ussd", "sms"] = _choice("ussd")  # the number comes as a USSD reply or an SMS
    pattern: str = _checked(_pattern, r"(\d{10,15})")  # its first group is the number
    sender: str = _string()  # answer = "sms": the operator's sender; "" any
    timeout: float = _seconds(60.0, minimum=1)  # how long to wait for the answer
    prefix: str = _checked(_digits_only, "")  # put before the group (a country code left out)
    request: Literal["auto", "text", "packed"] = _choice("auto")  # packed: GSM-7 hex (old Huawei)


@dataclass(frozen=True)
class PartnerConfig:
    """[partner]: the partner side (Onlinesim's calls for numbers); off without this table."""

    listen: str = _checked(_listen_address, "0.0.0.0:8443")  # faces the internet
    key: str = _secret(required=False)  # the key Onlinesim's calls carry; "": the upstream key
    allow: tuple[str, ...] = _checked(_networks, ())  # Onlinesim's addresses; empty: any
    tls_cert: str = _checked(_optional_path, "")  # PEM files; "" = plain HTTP (behind a proxy)
    tls_key: str = _checked(_optional_path, "")
    services: tuple[str, ...] = _words((), str.lower)  # the services offered, Onlinesim's names
    push_without_activation: bool = _flag(False)
    stale_after: float = _seconds(900.0, minimum=0)  # after an activation's end, no FINISH yet
    cancel_retries: int = _integer(3, minimum=0, maximum=1000)
    activation_time: float = _seconds(900.0, minimum=60)  # single-service operation length
    rent_period: float = _seconds(86400.0, minimum=60)  # rent length when GET_NUMBER omits it
    rent_push_url: str = _checked(_optional_url, "")  # "": the upstream URL's /pushSmsRent
    rate: float = _seconds(20.0, minimum=0.1)  # requests per second per client address
    max_body: int = _integer(65536, minimum=1024, maximum=16 * 1024 * 1024)
    request_timeout: float = _seconds(10.0, minimum=0.01)
    max_connections: int = _integer(256, minimum=1, maximum=65535)
    names: dict[str, str] = field(  # MCC or MCC-MNC -> Onlinesim's name
        default_factory=dict, metadata={_RULE: _Checked(_network_names)}
    )
    number_query: tuple[NumberQueryConfig, ...] = _sections("network")


def _retransmit_window() -> float:
    """An SMPP PDU sent again with the same sequence number and bytes within this many seconds
    is a retransmission (stored once); later, a new SMS (a peer that numbers from 1 again)."""
    return _seconds(3600.0, minimum=1, maximum=30 * 86400)


@dataclass(frozen=True)
class SmppAccountConfig:
    """[[smpp_server.account]]: an ESME (a GSM gateway box, Kannel) allowed to bind to us."""

    system_id: str = _required_string(
        "the system_id the peer binds with (up to 15 characters)", longest=15
    )
    password: str = _secret(required=True, longest=8)  # SMPP carries 8 characters at most
    allow: tuple[str, ...] = _checked(_networks, ())  # source addresses or networks; empty: any
    # destinations (phone numbers, or a box's port names for [[sim]] source+port) it may
    # deliver for; a message for any other is refused (ESME_RINVDSTADR). Empty: any.
    claims: tuple[str, ...] = _words((), str.strip)
    alphabet: Literal["gsm", "latin1", "ia5"] = _choice("gsm")  # what data_coding 0 means
    retransmit_window: float = _retransmit_window()  # a resend within it is stored once
    max_binds: int = _integer(4, minimum=1, maximum=1000)  # sessions open at once


@dataclass(frozen=True)
class SmppServerConfig:
    """[smpp_server]: the SMSC side that GSM gateways and Kannel bind to; off without it."""

    listen: str = _checked(_listen_address, "0.0.0.0:2775")
    system_id: str = _string("smsgw", nonempty=True, longest=15)  # ours, in every bind_resp
    window: int = _integer(10, minimum=1, maximum=1000)  # PDUs committing at once per bind
    enquire_link: float = _seconds(30.0, minimum=0.1)  # silence before we ask
    response_timeout: float = _seconds(10.0, minimum=0.1)  # for an enquire_link_resp
    bind_timeout: float = _seconds(10.0, minimum=0.1)  # a connection must bind within
    max_connections: int = _integer(256, minimum=1, maximum=65535)
    account: tuple[SmppAccountConfig, ...] = _sections("system_id")


@dataclass(frozen=True)
class SmppClientConfig:
    """[[smpp_client]]: one bind to an operator's or aggregator's SMSC, which sends deliver_sm."""

    name: str = _peer_name()
    host: str = _required_string("the SMSC's address")
    system_id: str = _required_string("the system_id the SMSC gave you", longest=15)
    password: str = _secret(required=True, longest=8)
    port: int = _integer(2775, minimum=1, maximum=65535)
    bind: Literal["receiver", "transceiver"] = _choice("receiver")
    tls: bool = _flag(False)
    system_type: str = _string(longest=12)
    address_range: str = _string(longest=40)  # the SMSC routes MO matching it here; "" any
    alphabet: Literal["gsm", "latin1", "ia5"] = _choice("gsm")  # what data_coding 0 means
    window: int = _integer(10, minimum=1, maximum=1000)  # deliver_sm committing at once
    enquire_link: float = _seconds(30.0, minimum=0.1)
    response_timeout: float = _seconds(10.0, minimum=0.1)
    reconnect_max: float = _seconds(60.0, minimum=0.1)  # longest wait between attempts
    retransmit_window: float = _retransmit_window()  # a resend within it is stored once


@dataclass(frozen=True)
class Config:
    # A field typed as a config dataclass is a [table] (required without a default); a tuple
    # of them is an array of [[tables]].
    upstream: UpstreamConfig
    store: StoreConfig = StoreConfig()
    ids: IdsConfig = IdsConfig()
    http: HttpConfig = HttpConfig()
    log: LogConfig = LogConfig()
    modems: ModemsConfig = ModemsConfig()
    modem: tuple[ModemConfig, ...] = _sections("name", "port")
    sim: tuple[SimConfig, ...] = _sections()
    gammu: HookConfig = HookConfig()
    smstools: HookConfig = HookConfig()
    dinstar: tuple[HttpPeerConfig, ...] = _sections("name")
    ejoin: tuple[HttpPeerConfig, ...] = _sections("name")
    goip: tuple[GoipConfig, ...] = _sections("name", "listen")
    yeastar: tuple[YeastarConfig, ...] = _sections("name")
    partner: PartnerConfig | None = _optional_section()  # noqa: RUF009 - a field specifier
    smpp_server: SmppServerConfig | None = _optional_section()  # noqa: RUF009 - a field specifier
    smpp_client: tuple[SmppClientConfig, ...] = _sections("name")
    # Not keys of the file (no rule): where it was read from, and what the operator should see.
    source_path: str = ""
    # Not errors, but worth the operator's eye (a secret file others can read). Config is
    # read before logging is set up, so the caller shows them: the CLI on stderr.
    warnings: tuple[str, ...] = field(default=(), compare=False)


# -- checks across keys of one table -----------------------------------------------------------


def _check_ids(cfg: IdsConfig, t: _Table) -> IdsConfig:
    if cfg.node >= cfg.nodes:
        raise ConfigError(f"ids.node: is {cfg.node}, must be below ids.nodes ({cfg.nodes})")
    return cfg


def _modem_name(cfg: ModemConfig, t: _Table) -> ModemConfig:
    if cfg.name:
        return cfg
    return dataclasses.replace(cfg, name=cfg.port.rstrip("/").rsplit("/", 1)[-1])


def _check_sim(cfg: SimConfig, t: _Table) -> SimConfig:
    if not (cfg.iccid or cfg.imsi or cfg.source):
        raise ConfigError(f"{t.where('iccid')}: a [[sim]] needs iccid, imsi or source to match")
    if cfg.port and not cfg.source:
        raise ConfigError(f"{t.where('port')}: port is matched together with source; add source")
    return cfg


_CHECKS: dict[type, Callable[[Any, _Table], Any]] = {
    IdsConfig: _check_ids,
    ModemConfig: _modem_name,
    SimConfig: _check_sim,
}


# -- reading -----------------------------------------------------------------------------------


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


def _unique(items: tuple[Any, ...], attr: str, table: str) -> None:
    seen: set[str] = set()
    for i, item in enumerate(items):
        value = getattr(item, attr)
        if value in seen:
            raise ConfigError(f"{table}[{i}].{attr}: {value!r} is used twice; each must differ")
        seen.add(value)


class _Reading:
    """What one parse carries along: where secret files are, and the warnings found."""

    def __init__(self, base_dir: Path, read_secrets: bool) -> None:
        self._base_dir = base_dir
        self._read = read_secrets
        self.warnings: list[str] = []

    def secret(self, t: _Table, key: str, *, required: bool) -> str:
        """A secret given inline as `key` or in the file named by `key_file`."""
        inline = t.string(key, "")
        file_name = t.string(f"{key}_file", "")
        where = t.where(key)
        if inline and file_name:
            raise ConfigError(f"{where}: give either {key} or {key}_file, not both")
        if not self._read:
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


# -- what the declarations give the rest of the program ----------------------------------------


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
