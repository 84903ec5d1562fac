"""Read the TOML configuration once into frozen, typed objects; every mistake names its key."""

from __future__ import annotations

import dataclasses
import ipaddress
import math
import os
import stat
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar
from urllib.parse import urlsplit

from gateway.errors import ConfigError

DEFAULT_CONFIG_PATH = "/etc/sms-gateway/config.toml"
DEFAULT_DROP_ON = ("NO_OPERATION", "NO_OP", "BAD_SERVICE")
MASK = "********"

T = TypeVar("T")


@dataclass(frozen=True)
class UpstreamConfig:
    url: str
    api_key: str = field(repr=False)
    retry_interval: float = 10.0
    timeout: float = 10.0
    concurrency: int = 32
    max_age: float = 86400.0
    drop_on: tuple[str, ...] = DEFAULT_DROP_ON
    circuit_after: int = 5
    bearer_header: bool = True
    phone_type: Literal["string", "integer"] = "string"


@dataclass(frozen=True)
class StoreConfig:
    path: str = "/var/lib/sms-gateway/outbox.sqlite3"
    keep_finished: float = 604800.0


@dataclass(frozen=True)
class IdsConfig:
    node: int = 0
    nodes: int = 1


@dataclass(frozen=True)
class HttpConfig:
    listen: str = "127.0.0.1:8080"
    ingest_token: str = field(default="", repr=False)
    status_token: str = field(default="", repr=False)  # SIM identities on /health need it
    allow: tuple[str, ...] = ()  # client addresses or networks allowed; empty: any
    request_timeout: float = 10.0  # to receive a request's head and body
    keepalive_timeout: float = 15.0  # an idle kept-alive connection is closed after this
    max_connections: int = 256  # open connections on http.listen at most

    @property
    def host(self) -> str:
        return self.listen.rsplit(":", 1)[0].strip("[]")

    @property
    def port(self) -> int:
        return int(self.listen.rsplit(":", 1)[1])


@dataclass(frozen=True)
class LogConfig:
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["json", "console"] = "json"


@dataclass(frozen=True)
class ModemsConfig:
    """Settings shared by every [[modem]] port."""

    scan_interval: float = 60.0  # full AT+CMGL scan, besides +CMTI indications
    multipart_timeout: float = 300.0  # then an incomplete multi-part SMS goes out with gaps
    command_timeout: float = 10.0  # one AT command; a modem silent this long is reset
    reopen_max: float = 60.0  # longest wait between attempts to reopen a lost port


@dataclass(frozen=True)
class ModemConfig:
    port: str
    name: str  # label in logs, metrics and /health; default: the port's file name
    baudrate: int = 115200
    pin: str = field(default="", repr=False)
    phone: str = ""


@dataclass(frozen=True)
class SimConfig:
    """How a message's phone is found; the first matching entry wins."""

    phone: str
    iccid: str = ""
    imsi: str = ""
    source: str = ""  # with port: a source's own port (gateway boxes), e.g. "dinstar-1"
    port: str = ""


@dataclass(frozen=True)
class HookConfig:
    """[gammu] / [smstools]: the hook's own modem name -> the phone it receives for."""

    phones: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class HttpPeerConfig:
    """[[dinstar]] / [[ejoin]]: a gateway box that pushes to /v1/inbound/<kind>/<name>."""

    name: str
    token: str = field(default="", repr=False)
    allow: tuple[str, ...] = ()  # source addresses or networks allowed; empty: any


@dataclass(frozen=True)
class GoipConfig:
    name: str
    id: str
    password: str = field(default="", repr=False)
    listen: str = "127.0.0.1:44444"
    allow: tuple[str, ...] = ()  # source addresses or networks allowed; empty: any
    quiet_period: float = 3.0  # seconds of silence that end a long SMS sent as several packets


@dataclass(frozen=True)
class YeastarConfig:
    name: str
    host: str
    username: str
    password: str = field(default="", repr=False)
    port: int = 5038
    reconnect_max: float = 60.0


@dataclass(frozen=True)
class Config:
    upstream: UpstreamConfig
    store: StoreConfig = StoreConfig()
    ids: IdsConfig = IdsConfig()
    http: HttpConfig = HttpConfig()
    log: LogConfig = LogConfig()
    modems: ModemsConfig = ModemsConfig()
    modem: tuple[ModemConfig, ...] = ()
    sim: tuple[SimConfig, ...] = ()
    gammu: HookConfig = HookConfig()
    smstools: HookConfig = HookConfig()
    dinstar: tuple[HttpPeerConfig, ...] = ()
    ejoin: tuple[HttpPeerConfig, ...] = ()
    goip: tuple[GoipConfig, ...] = ()
    yeastar: tuple[YeastarConfig, ...] = ()
    source_path: str = ""
    # Not errors, but worth the operator's eye (a secret file others can read). Config is
    # read before logging is set up, so the caller shows them: the CLI on stderr.
    warnings: tuple[str, ...] = field(default=(), compare=False)


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
    t = _Table(raw, "")
    secrets = _Secrets(base_dir, read_secrets)
    upstream = _parse_upstream(t.table("upstream", required=True), secrets)
    store_t = t.table("store")
    store = StoreConfig(
        path=store_t.string("path", StoreConfig.path, nonempty=True),
        keep_finished=store_t.number("keep_finished", StoreConfig.keep_finished, minimum=0),
    )
    ids_t = t.table("ids")
    nodes = ids_t.integer("nodes", IdsConfig.nodes, minimum=1)
    node = ids_t.integer("node", IdsConfig.node, minimum=0)
    if node >= nodes:
        raise ConfigError(f"ids.node: is {node}, must be below ids.nodes ({nodes})")
    http_t = t.table("http")
    http = HttpConfig(
        listen=http_t.check("listen", HttpConfig.listen, _listen_address),
        ingest_token=secrets.get(http_t, "ingest_token", required=False),
        status_token=secrets.get(http_t, "status_token", required=False),
        allow=http_t.check("allow", (), _networks),
        request_timeout=http_t.number("request_timeout", HttpConfig.request_timeout, minimum=0.01),
        keepalive_timeout=http_t.number(
            "keepalive_timeout", HttpConfig.keepalive_timeout, minimum=0.01
        ),
        max_connections=http_t.integer(
            "max_connections", HttpConfig.max_connections, minimum=1, maximum=65535
        ),
    )
    log_t = t.table("log")
    log = LogConfig(
        level=log_t.choice("level", LogConfig.level, ("debug", "info", "warning", "error")),
        format=log_t.choice("format", LogConfig.format, ("json", "console")),
    )
    modems_t = t.table("modems")
    d = ModemsConfig
    modems = ModemsConfig(
        scan_interval=modems_t.number("scan_interval", d.scan_interval, minimum=1),
        multipart_timeout=modems_t.number("multipart_timeout", d.multipart_timeout, minimum=1),
        command_timeout=modems_t.number("command_timeout", d.command_timeout, minimum=0.1),
        reopen_max=modems_t.number("reopen_max", d.reopen_max, minimum=0.1),
    )
    modem = tuple(_parse_modem(m, secrets) for m in t.tables("modem"))
    _unique(modem, "name", "modem")
    _unique(modem, "port", "modem")
    sim = tuple(_parse_sim(m) for m in t.tables("sim"))
    gammu = _parse_hook(t.table("gammu"))
    smstools = _parse_hook(t.table("smstools"))
    dinstar = tuple(_parse_http_peer(x, secrets) for x in t.tables("dinstar"))
    ejoin = tuple(_parse_http_peer(x, secrets) for x in t.tables("ejoin"))
    goip = tuple(_parse_goip(x, secrets) for x in t.tables("goip"))
    yeastar = tuple(_parse_yeastar(x, secrets) for x in t.tables("yeastar"))
    for kind, peers in (
        ("dinstar", dinstar),
        ("ejoin", ejoin),
        ("goip", goip),
        ("yeastar", yeastar),
    ):
        _unique(peers, "name", kind)
    _unique(goip, "listen", "goip")
    for sub in (store_t, ids_t, http_t, log_t, modems_t):
        sub.finish()
    t.finish()
    return Config(
        upstream=upstream,
        store=store,
        ids=IdsConfig(node=node, nodes=nodes),
        http=http,
        log=log,
        modems=modems,
        modem=modem,
        sim=sim,
        gammu=gammu,
        smstools=smstools,
        dinstar=dinstar,
        ejoin=ejoin,
        goip=goip,
        yeastar=yeastar,
        source_path=source_path,
        warnings=tuple(secrets.warnings),
    )


def _phone(t: _Table, key: str, *, required: bool) -> str:
    value = t.string(key, "")
    if not value:
        if required:
            raise ConfigError(f"{t.where(key)}: missing; the number as digits, e.g. 79001234567")
        return ""
    digits = _phone_digits(value)
    if digits is None:
        raise ConfigError(f"{t.where(key)}: {value!r} is not a phone number (3 to 20 digits)")
    return digits


def _phone_digits(value: str) -> str | None:
    """'+7 (900) 123-45-67' -> '79001234567'; None when it is not 3 to 20 digits."""
    digits = "".join(c for c in value if c not in "+ -()")
    if not (digits.isascii() and digits.isdigit() and 3 <= len(digits) <= 20):
        return None
    return digits


def _parse_modem(t: _Table, secrets: _Secrets) -> ModemConfig:
    port = t.string("port", "", nonempty=True)
    if not port:
        raise ConfigError(f"{t.where('port')}: missing; the serial device, e.g. /dev/ttyUSB0")
    cfg = ModemConfig(
        port=port,
        name=t.string("name", "") or port.rstrip("/").rsplit("/", 1)[-1],
        baudrate=t.integer("baudrate", ModemConfig.baudrate, minimum=300, maximum=4_000_000),
        pin=secrets.get(t, "pin", required=False),
        phone=_phone(t, "phone", required=False),
    )
    t.finish()
    return cfg


def _parse_sim(t: _Table) -> SimConfig:
    cfg = SimConfig(
        phone=_phone(t, "phone", required=True),
        iccid=t.string("iccid", "").upper().removesuffix("F"),
        imsi=t.string("imsi", ""),
        source=t.string("source", ""),
        port=t.string("port", ""),
    )
    if not (cfg.iccid or cfg.imsi or cfg.source):
        raise ConfigError(f"{t.where('iccid')}: a [[sim]] needs iccid, imsi or source to match")
    if cfg.port and not cfg.source:
        raise ConfigError(f"{t.where('port')}: port is matched together with source; add source")
    t.finish()
    return cfg


def _name(t: _Table) -> str:
    name = t.string("name", "", nonempty=True)
    if not name or not all(c.isalnum() or c in "-_." for c in name):
        raise ConfigError(f"{t.where('name')}: required; letters, digits, - _ . only")
    return name


def _parse_hook(t: _Table) -> HookConfig:
    raw: dict[str, str] = t.check("phones", {}, _string_map)
    phones = {}
    for key, value in raw.items():
        digits = _phone_digits(value)
        if digits is None:
            raise ConfigError(f"{t.where('phones')}.{key}: {value!r} is not a phone number")
        phones[key] = digits
    t.finish()
    return HookConfig(phones=phones)


def _string_map(value: object) -> dict[str, str]:
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise ValueError('expected a table of strings, e.g. { "modem1" = "79001234567" }')
    return dict(value)


def _parse_http_peer(t: _Table, secrets: _Secrets) -> HttpPeerConfig:
    cfg = HttpPeerConfig(
        name=_name(t),
        token=secrets.get(t, "token", required=True),
        allow=t.check("allow", (), _networks),
    )
    t.finish()
    return cfg


def _parse_goip(t: _Table, secrets: _Secrets) -> GoipConfig:
    cfg = GoipConfig(
        name=_name(t),
        id=t.string("id", "", nonempty=True) or _missing(t, "id", "the GoIP's SMS-server id"),
        password=secrets.get(t, "password", required=True),
        listen=t.check("listen", GoipConfig.listen, _listen_address),
        allow=t.check("allow", (), _networks),
        quiet_period=t.number("quiet_period", GoipConfig.quiet_period, minimum=0.1),
    )
    t.finish()
    return cfg


def _parse_yeastar(t: _Table, secrets: _Secrets) -> YeastarConfig:
    cfg = YeastarConfig(
        name=_name(t),
        host=t.string("host", "", nonempty=True) or _missing(t, "host", "the TG's address"),
        username=t.string("username", "", nonempty=True) or _missing(t, "username", "API user"),
        password=secrets.get(t, "password", required=True),
        port=t.integer("port", YeastarConfig.port, minimum=1, maximum=65535),
        reconnect_max=t.number("reconnect_max", YeastarConfig.reconnect_max, minimum=0.1),
    )
    t.finish()
    return cfg


def _missing(t: _Table, key: str, what: str) -> str:
    raise ConfigError(f"{t.where(key)}: missing; {what}")


def _unique(items: tuple[Any, ...], attr: str, table: str) -> None:
    seen: set[str] = set()
    for i, item in enumerate(items):
        value = getattr(item, attr)
        if value in seen:
            raise ConfigError(f"{table}[{i}].{attr}: {value!r} is used twice; each must differ")
        seen.add(value)


def _parse_upstream(t: _Table, secrets: _Secrets) -> UpstreamConfig:
    d = UpstreamConfig
    url = t.check("url", None, _upstream_url)
    drop_on = t.string_list("drop_on", DEFAULT_DROP_ON)
    cfg = UpstreamConfig(
        url=url,
        api_key=secrets.get(t, "api_key", required=True),
        retry_interval=t.number("retry_interval", d.retry_interval, minimum=0.01),
        timeout=t.number("timeout", d.timeout, minimum=0.01),
        concurrency=t.integer("concurrency", d.concurrency, minimum=1, maximum=1024),
        max_age=t.number("max_age", d.max_age, minimum=0),
        drop_on=tuple(code.upper() for code in drop_on),
        circuit_after=t.integer("circuit_after", d.circuit_after, minimum=1),
        bearer_header=t.boolean("bearer_header", d.bearer_header),
        phone_type=t.choice("phone_type", d.phone_type, ("string", "integer")),
    )
    t.finish()
    return cfg


class _Secrets:
    """Reads secrets given inline as `key` or from the file named by `key_file`."""

    def __init__(self, base_dir: Path, read: bool) -> None:
        self._base_dir = base_dir
        self._read = read
        self.warnings: list[str] = []

    def get(self, t: _Table, key: str, *, required: bool) -> str:
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


def _listen_address(value: object) -> str:
    if not isinstance(value, str) or ":" not in value:
        raise ValueError("expected HOST:PORT such as 127.0.0.1:8080")
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{value!r} is not HOST:PORT with a port 0-65535")
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


def masked(cfg: Config) -> dict[str, Any]:
    """The effective configuration as plain data, every secret replaced by a mask."""
    data = dataclasses.asdict(cfg)
    data.pop("source_path", None)
    data.pop("warnings", None)
    for section, key in (
        ("upstream", "api_key"),
        ("http", "ingest_token"),
        ("http", "status_token"),
    ):
        if data[section][key]:
            data[section][key] = MASK
    for kind, key in (
        ("modem", "pin"),
        ("dinstar", "token"),
        ("ejoin", "token"),
        ("goip", "password"),
        ("yeastar", "password"),
    ):
        for table in data[kind]:
            if table[key]:
                table[key] = MASK
        data[kind] = list(data[kind])
    data["upstream"]["drop_on"] = list(data["upstream"]["drop_on"])
    data["http"]["allow"] = list(data["http"]["allow"])
    for kind in ("dinstar", "ejoin", "goip"):
        for table in data[kind]:
            table["allow"] = list(table["allow"])
    data["sim"] = list(data["sim"])
    return data
