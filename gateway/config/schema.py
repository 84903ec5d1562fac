"""The configuration: a frozen dataclass per table, each key declared once on its field, and
the checks across keys of one table."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from gateway.config.rules import (
    _RULE,
    _Checked,
    _checked,
    _choice,
    _flag,
    _integer,
    _optional_section,
    _peer_name,
    _phone_number,
    _phone_table,
    _required_string,
    _seconds,
    _secret,
    _sections,
    _string,
    _words,
)
from gateway.config.table import _Table
from gateway.config.values import (
    _digits_only,
    _iccid,
    _listen_address,
    _mcc_mnc,
    _network_names,
    _networks,
    _optional_path,
    _optional_url,
    _pattern,
    _upstream_url,
)
from gateway.errors import ConfigError

DEFAULT_DROP_ON = ("NO_OPERATION", "NO_OP", "BAD_SERVICE")


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
