"""The configuration file (CONTRACT section 3): defaults, mistakes named by their key, secrets."""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
import string
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway import cli, config
from gateway.config import (
    MASK,
    Config,
    HttpConfig,
    IdsConfig,
    LogConfig,
    StoreConfig,
    UpstreamConfig,
)
from gateway.errors import ConfigError
from gateway.fields import normalize_phone

URL = "https://partner-host.example/v1/PUSH_SMS"
KEY = "s3cret-API-key-0123456789"
TOKEN = "ingest-token-abcdef"


def minimal(**upstream: Any) -> dict[str, Any]:
    return {"upstream": {"url": URL, "api_key": KEY, **upstream}}


def with_table(table: str, **values: Any) -> dict[str, Any]:
    doc = minimal()
    doc.setdefault(table, {}).update(values)
    return doc


def config_error(doc: dict[str, Any], **kwargs: Any) -> str:
    with pytest.raises(ConfigError) as info:
        config.parse(doc, **kwargs)
    return str(info.value)


# -- a valid file and its defaults ------------------------------------------------------------


def test_minimal_config_takes_every_documented_default() -> None:
    cfg = config.parse(minimal())

    assert cfg == Config(
        upstream=UpstreamConfig(
            url=URL,
            api_key=KEY,
            retry_interval=10.0,
            timeout=10.0,
            concurrency=32,
            max_age=86400.0,
            drop_on=("NO_OPERATION", "NO_OP", "BAD_SERVICE"),
            circuit_after=5,
            bearer_header=True,
            phone_type="string",
        ),
        store=StoreConfig(path="/var/lib/sms-gateway/outbox.sqlite3", keep_finished=604800.0),
        ids=IdsConfig(node=0, nodes=1),
        http=HttpConfig(listen="127.0.0.1:8080", ingest_token=""),
        log=LogConfig(level="info", format="json"),
        source_path="",
    )
    assert (cfg.http.host, cfg.http.port) == ("127.0.0.1", 8080)


def test_every_key_can_be_set_from_a_toml_file(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(
        f"""
[upstream]
url = "{URL}"
api_key = "{KEY}"
retry_interval = 2.5
timeout = 3
concurrency = 8
max_age = 0
drop_on = ["no_op", "SERVICE_BAN"]
circuit_after = 2
bearer_header = false
phone_type = "integer"

[store]
path = "/srv/outbox.sqlite3"
keep_finished = 60

[ids]
node = 2
nodes = 3

[http]
listen = "[::1]:9090"
ingest_token = "{TOKEN}"

[log]
level = "debug"
format = "console"
""",
        encoding="utf-8",
    )

    cfg = config.load(path)

    assert cfg == Config(
        upstream=UpstreamConfig(
            url=URL,
            api_key=KEY,
            retry_interval=2.5,
            timeout=3.0,
            concurrency=8,
            max_age=0.0,
            drop_on=("NO_OP", "SERVICE_BAN"),  # codes are upper-cased
            circuit_after=2,
            bearer_header=False,
            phone_type="integer",
        ),
        store=StoreConfig(path="/srv/outbox.sqlite3", keep_finished=60.0),
        ids=IdsConfig(node=2, nodes=3),
        http=HttpConfig(listen="[::1]:9090", ingest_token=TOKEN),
        log=LogConfig(level="debug", format="console"),
        source_path=str(path),
    )
    assert (cfg.http.host, cfg.http.port) == ("::1", 9090)
    assert isinstance(cfg.upstream.timeout, float)


def test_durations_accept_integers_and_give_floats() -> None:
    cfg = config.parse(minimal(retry_interval=1, timeout=7, max_age=60))
    assert (cfg.upstream.retry_interval, cfg.upstream.timeout, cfg.upstream.max_age) == (
        1.0,
        7.0,
        60.0,
    )
    assert all(
        type(v) is float
        for v in (cfg.upstream.retry_interval, cfg.upstream.timeout, cfg.upstream.max_age)
    )


# -- wrong values name their key -------------------------------------------------------------

WRONG_VALUES = [
    # (table, key, value)
    ("upstream", "url", 42),
    ("upstream", "url", "ftp://partner-host.example/x"),
    ("upstream", "url", "partner-host.example/v1/PUSH_SMS"),
    ("upstream", "url", "https://"),
    ("upstream", "retry_interval", "10"),
    ("upstream", "retry_interval", True),
    ("upstream", "retry_interval", 0),
    ("upstream", "retry_interval", -1.0),
    ("upstream", "retry_interval", float("inf")),
    ("upstream", "retry_interval", float("nan")),
    ("upstream", "retry_interval", [10]),
    ("upstream", "timeout", 0.0),
    ("upstream", "timeout", "10s"),
    ("upstream", "concurrency", 0),
    ("upstream", "concurrency", 1025),
    ("upstream", "concurrency", 1.5),
    ("upstream", "concurrency", True),
    ("upstream", "concurrency", "32"),
    ("upstream", "max_age", -1),
    ("upstream", "max_age", "1d"),
    ("upstream", "drop_on", "NO_OP"),
    ("upstream", "drop_on", [1]),
    ("upstream", "drop_on", [""]),
    ("upstream", "drop_on", {"a": "NO_OP"}),
    ("upstream", "circuit_after", 0),
    ("upstream", "circuit_after", 2.0),
    ("upstream", "bearer_header", "yes"),
    ("upstream", "bearer_header", 1),
    ("upstream", "phone_type", "int"),
    ("upstream", "phone_type", 1),
    ("upstream", "api_key", 42),
    ("upstream", "api_key", ""),
    ("upstream", "api_key", "two words"),
    ("store", "path", ""),
    ("store", "path", 5),
    ("store", "keep_finished", -1),
    ("store", "keep_finished", "week"),
    ("ids", "node", -1),
    ("ids", "node", "0"),
    ("ids", "nodes", 0),
    ("ids", "nodes", 1.0),
    ("http", "listen", "8080"),
    ("http", "listen", ":8080"),
    ("http", "listen", "127.0.0.1:99999"),
    ("http", "listen", "127.0.0.1:http"),
    ("http", "listen", 8080),
    ("http", "ingest_token", 5),
    ("http", "ingest_token", "has space"),
    ("log", "level", "verbose"),
    ("log", "level", "INFO"),
    ("log", "format", "text"),
]


@pytest.mark.parametrize(("table", "key", "value"), WRONG_VALUES)
def test_a_wrong_value_is_an_error_naming_its_key(table: str, key: str, value: Any) -> None:
    message = config_error(with_table(table, **{key: value}))
    assert message.startswith(f"{table}.{key}: ")


@pytest.mark.parametrize(
    ("doc", "expected"),
    [
        ({}, "[upstream]: missing; this table is required"),
        ({"upstream": {"api_key": KEY}}, "upstream.url: missing; this key is required"),
        ({"upstream": {"url": URL}}, "upstream.api_key: missing; set api_key or api_key_file"),
        ({"upstream": "https://x"}, "upstream: expected a table [upstream]"),
        ({**minimal(), "store": "/tmp/x"}, "store: expected a table [store]"),
        ({**minimal(), "log": ["info"]}, "log: expected a table [log]"),
    ],
)
def test_missing_or_misshapen_tables_are_named(doc: dict[str, Any], expected: str) -> None:
    assert config_error(doc) == expected


def test_impossible_node_numbering_is_an_error() -> None:
    assert config_error(with_table("ids", node=2, nodes=2)) == (
        "ids.node: is 2, must be below ids.nodes (2)"
    )
    assert config_error(with_table("ids", node=3)) == "ids.node: is 3, must be below ids.nodes (1)"
    assert config.parse(with_table("ids", node=1, nodes=2)).ids == IdsConfig(node=1, nodes=2)


# -- unknown keys ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("doc", "name"),
    [
        ({**minimal(), "upstrem": {}}, "upstrem"),
        ({**minimal(), "debug": True}, "debug"),
        (minimal(retry_intervall=5), "upstream.retry_intervall"),
        (minimal(api_token="x"), "upstream.api_token"),
        (with_table("store", paht="/x"), "store.paht"),
        (with_table("ids", node_id=1), "ids.node_id"),
        (with_table("http", listen_port=80), "http.listen_port"),
        (with_table("log", colour=True), "log.colour"),
    ],
)
def test_an_unknown_key_is_an_error_naming_it(doc: dict[str, Any], name: str) -> None:
    assert config_error(doc) == (
        f"{name}: unknown key (check the spelling; config.example.toml lists every key)"
    )


def test_the_first_unknown_key_in_sorted_order_is_reported() -> None:
    assert config_error(minimal(zz=1, aa=2)).startswith("upstream.aa: unknown key")


# -- secrets from files ----------------------------------------------------------------------


def test_api_key_file_is_relative_to_the_config_files_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "api_key").write_text(f"  {KEY}\n", encoding="utf-8")
    (etc / "config.toml").write_text(
        f'[upstream]\nurl = "{URL}"\napi_key_file = "api_key"\n', encoding="utf-8"
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)

    cfg = config.load(Path("..") / "etc" / "config.toml")

    assert cfg.upstream.api_key == KEY  # surrounding whitespace and the newline are stripped


def test_api_key_file_may_be_absolute(tmp_path: Path) -> None:
    key_file = tmp_path / "secrets" / "key"
    key_file.parent.mkdir()
    key_file.write_text(KEY, encoding="utf-8")
    cfg = config.parse(
        {"upstream": {"url": URL, "api_key_file": str(key_file)}}, base_dir=Path("/nonexistent")
    )
    assert cfg.upstream.api_key == KEY


def test_ingest_token_file_is_read_like_the_api_key(tmp_path: Path) -> None:
    (tmp_path / "token").write_text(TOKEN + "\n", encoding="utf-8")
    cfg = config.parse(with_table("http", ingest_token_file="token"), base_dir=tmp_path)
    assert cfg.http.ingest_token == TOKEN


def test_both_api_key_and_api_key_file_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "key").write_text(KEY, encoding="utf-8")
    message = config_error(minimal(api_key_file="key"), base_dir=tmp_path)
    assert message == "upstream.api_key: give either api_key or api_key_file, not both"


def test_a_missing_key_file_is_an_error_naming_the_key_and_path(tmp_path: Path) -> None:
    doc = {"upstream": {"url": URL, "api_key_file": "nope"}}
    message = config_error(doc, base_dir=tmp_path)
    assert message.startswith(f"upstream.api_key_file: cannot read {tmp_path / 'nope'}: ")


def test_an_empty_key_file_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "key").write_text("\n  \n", encoding="utf-8")
    doc = {"upstream": {"url": URL, "api_key_file": "key"}}
    assert config_error(doc, base_dir=tmp_path) == (
        f"upstream.api_key_file: {tmp_path / 'key'} is empty"
    )


def test_a_key_with_inner_whitespace_is_refused_without_showing_it(tmp_path: Path) -> None:
    (tmp_path / "key").write_text("abc def\n", encoding="utf-8")
    message = config_error({"upstream": {"url": URL, "api_key_file": "key"}}, base_dir=tmp_path)
    assert message == "upstream.api_key: contains whitespace; check the value (not shown)"
    assert "abc" not in message


@pytest.mark.parametrize("key", ["abc\x00def", "ключ123", "abc\x7fdef"])
def test_a_key_that_cannot_go_in_a_header_is_refused_without_showing_it(key: str) -> None:
    message = config_error({"upstream": {"url": URL, "api_key": key}})
    assert message == (
        "upstream.api_key: contains control or non-ASCII characters; check the value (not shown)"
    )
    assert key[:3] not in message


@pytest.mark.parametrize(
    "url", ["https://h/v1/PUSH SMS", "https://хост.рф/v1/PUSH_SMS", "https://h/v1/\x00PUSH_SMS"]
)
def test_an_upstream_url_that_cannot_go_in_a_request_line_is_refused(url: str) -> None:
    message = config_error({"upstream": {"url": url, "api_key": KEY}})
    assert message.startswith("upstream.url: contains spaces, control or non-ASCII characters")


LONG_LABEL = "a" * 64


@pytest.mark.parametrize(
    "host",
    [
        f"{LONG_LABEL}.example",  # a label over 63 characters
        "partner..example",  # an empty label
        ".partner.example",
        "x." * 126 + "com",  # 255 characters, over DNS's 253
    ],
)
def test_an_upstream_host_dns_cannot_resolve_is_refused_naming_the_url(host: str) -> None:
    message = config_error({"upstream": {"url": f"https://{host}/v1/PUSH_SMS", "api_key": KEY}})
    assert message.startswith("upstream.url: ")
    assert "not a valid host name" in message


@pytest.mark.parametrize(
    "host",
    [
        "a" * 63 + ".example",
        "x." * 125 + "com",  # 253 characters
        "x." * 125 + "com.",  # the root's dot does not count
        "partner-host.example.",
        "xn--80ak6aa92e.com",
        "192.0.2.10",
        "[2001:db8::1]",
        "partner-host.example:8443",
    ],
)
def test_an_upstream_host_dns_can_resolve_is_accepted(host: str) -> None:
    url = f"https://{host}/v1/PUSH_SMS"
    assert config.parse({"upstream": {"url": url, "api_key": KEY}}).upstream.url == url


@pytest.mark.parametrize("port", ["99999", "x", "-1"])
def test_an_upstream_url_with_an_impossible_port_is_refused(port: str) -> None:
    url = f"https://partner-host.example:{port}/v1/PUSH_SMS"
    message = config_error({"upstream": {"url": url, "api_key": KEY}})
    assert message.startswith("upstream.url: ")


@pytest.mark.parametrize(
    "url",
    [
        "https://user:pa55-SECRET@partner-host.example/v1/PUSH_SMS",
        "https://pa55-SECRET@partner-host.example/v1/PUSH_SMS",
        "https://user:pa55-SECRET@/v1/PUSH_SMS",
        "ftp://user:pa55-SECRET@partner-host.example/x",
        "user:pa55-SECRET@partner-host.example/v1/PUSH_SMS",
        "https://:pa55-SECRET@partner-host.example/v1/PUSH_SMS",
    ],
)
def test_userinfo_in_the_upstream_url_is_refused_without_showing_it(url: str) -> None:
    message = config_error({"upstream": {"url": url, "api_key": KEY}})
    assert message.startswith("upstream.url: ")
    assert "pa55-SECRET" not in message
    assert "user" in message  # says what is wrong


def test_an_at_sign_in_the_upstream_path_or_query_is_not_userinfo() -> None:
    url = "https://partner-host.example/v1/PUSH_SMS?from=a@b"
    assert config.parse({"upstream": {"url": url, "api_key": KEY}}).upstream.url == url


# -- loading files ---------------------------------------------------------------------------


def test_an_empty_file_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_bytes(b"")
    with pytest.raises(ConfigError, match=re.escape("[upstream]: missing")):
        config.load(path)


def test_a_missing_file_is_an_error_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "absent.toml"
    with pytest.raises(ConfigError) as info:
        config.load(path)
    assert str(info.value) == f"{path}: no such config file (give one with -c PATH)"


def test_invalid_toml_is_an_error_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('[upstream]\nurl = "https://x\n', encoding="utf-8")
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(path))}: not valid TOML: "):
        config.load(path)


def test_a_file_that_is_not_utf8_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_bytes(b'[upstream]\nurl = "\xff"\n')
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(path))}: not UTF-8 text"):
        config.load(path)


def test_a_directory_instead_of_a_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=re.escape(str(tmp_path))):
        config.load(tmp_path)


def test_a_key_file_name_with_a_nul_byte_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(f'[upstream]\nurl = "{URL}"\napi_key_file = "a\\u0000b"\n', encoding="utf-8")
    with pytest.raises(ConfigError, match=r"^upstream\.api_key_file: "):
        config.load(path)


def test_a_number_too_big_for_a_float_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(
        f'[upstream]\nurl = "{URL}"\napi_key = "{KEY}"\nretry_interval = {"9" * 400}\n',
        encoding="utf-8",
    )
    with pytest.raises(ConfigError, match=r"^upstream\.retry_interval: "):
        config.load(path)


# -- secrets never shown ---------------------------------------------------------------------


def test_masked_replaces_every_secret_and_keeps_the_rest() -> None:
    cfg = config.parse(with_table("http", ingest_token=TOKEN), source_path="/etc/x.toml")

    data = config.masked(cfg)

    assert data["upstream"]["api_key"] == MASK == "********"
    assert data["http"]["ingest_token"] == MASK
    assert data["upstream"]["url"] == URL
    assert data["upstream"]["drop_on"] == ["NO_OPERATION", "NO_OP", "BAD_SERVICE"]
    assert "source_path" not in data
    assert set(data) == {
        "upstream", "store", "ids", "http", "log", "modems", "modem", "sim",
        "gammu", "smstools", "dinstar", "ejoin", "goip", "yeastar", "partner",
        "smpp_server", "smpp_client",
    }  # fmt: skip
    assert data["partner"] is None  # off without a [partner] table
    assert KEY not in repr(data)
    assert TOKEN not in repr(data)


def test_an_unset_ingest_token_is_shown_empty_not_masked() -> None:
    assert config.masked(config.parse(minimal()))["http"]["ingest_token"] == ""


def test_the_config_objects_repr_hides_the_secrets() -> None:
    cfg = config.parse(with_table("http", ingest_token=TOKEN))
    assert KEY not in repr(cfg)
    assert TOKEN not in repr(cfg)


@given(
    # A prefix keeps a random secret from being, say, the word "multipart_timeou".
    key=st.text(alphabet=string.ascii_letters + string.digits, min_size=16, max_size=64).map(
        lambda k: "sk-" + k
    ),
    token=st.text(alphabet=string.ascii_letters + string.digits, min_size=16, max_size=64).map(
        lambda t: "tk-" + t
    ),
)
def test_masked_never_contains_a_secret(key: str, token: str) -> None:
    data = config.masked(
        config.parse(with_table("http", ingest_token=token) | minimal(api_key=key))
    )
    assert data["upstream"]["api_key"] == MASK
    assert data["http"]["ingest_token"] == MASK
    assert key not in repr(data)
    assert token not in repr(data)


# -- properties: nothing but Config or ConfigError -------------------------------------------

# TOML has 64-bit integers; larger ones and NUL in strings are the xfail cases above.
toml_scalars = st.one_of(
    st.text(alphabet=st.characters(blacklist_characters="\x00"), max_size=30),
    st.sampled_from([URL, "http://h:1/p", "127.0.0.1:80", "info", "json", "string", "x y"]),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.datetimes(),
    st.dates(),
    st.times(),
)
toml_values = st.recursive(
    toml_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=10,
)
KNOWN = {
    "upstream": [
        "url",
        "api_key",
        "api_key_file",
        "retry_interval",
        "timeout",
        "concurrency",
        "max_age",
        "drop_on",
        "circuit_after",
        "bearer_header",
        "phone_type",
    ],
    "store": ["path", "keep_finished"],
    "ids": ["node", "nodes"],
    "http": ["listen", "ingest_token", "ingest_token_file"],
    "log": ["level", "format"],
}


@st.composite
def toml_documents(draw: st.DrawFn) -> dict[str, Any]:
    """Mostly well-formed documents with a few random keys and values, to reach every check."""
    doc: dict[str, Any] = minimal() if draw(st.booleans()) else {}
    for table, keys in KNOWN.items():
        if draw(st.booleans()):
            sub = doc.setdefault(table, {})
            for key in draw(st.lists(st.sampled_from(list(sub) or ["-"]), max_size=1)):
                sub.pop(key, None)  # sometimes drop url or api_key, to reach api_key_file
            for key in draw(st.lists(st.sampled_from(keys), max_size=3, unique=True)):
                sub[key] = draw(toml_values)
            if draw(st.integers(0, 9)) == 0:
                sub[draw(st.text(max_size=8))] = draw(toml_values)
    if draw(st.integers(0, 9)) == 0:
        doc[draw(st.text(max_size=8))] = draw(toml_values)
    return doc


def config_or_error(read: Callable[[], Config]) -> Config | ConfigError:
    """Any other exception propagates and fails the property."""
    try:
        return read()
    except ConfigError as e:
        return e


@given(doc=toml_documents() | st.dictionaries(st.text(max_size=10), toml_values, max_size=5))
@settings(max_examples=300)
def test_any_document_gives_a_config_or_a_config_error(doc: dict[str, Any]) -> None:
    result = config_or_error(lambda: config.parse(doc, base_dir=Path("/nonexistent-dir")))
    if isinstance(result, ConfigError):
        assert str(result)
    else:
        assert isinstance(result, Config)
        assert config.masked(result)["upstream"]["api_key"] == MASK


VALID_HEAD = f'[upstream]\nurl = "{URL}"\napi_key = "{KEY}"\n'.encode()


@given(
    head=st.sampled_from([b"", VALID_HEAD]),
    data=st.binary(max_size=200) | st.text(max_size=200).map(lambda s: s.encode()),
)
@settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_any_file_content_gives_a_config_or_a_config_error(
    tmp_path: Path, head: bytes, data: bytes
) -> None:
    path = tmp_path / "config.toml"
    path.write_bytes(head + data)
    result = config_or_error(lambda: config.load(path))
    if isinstance(result, ConfigError):
        assert str(result)
    else:
        assert isinstance(result, Config)
        assert result.source_path == str(path)


def test_a_toml_datetime_where_a_number_belongs_is_named() -> None:
    doc = minimal(timeout=dt.datetime(2026, 1, 1, tzinfo=dt.UTC))
    assert config_error(doc) == "upstream.timeout: expected a number of seconds, got datetime"


# -- who may connect, and how long they may take --------------------------------------------


def test_http_connection_limits_and_status_token_have_defaults() -> None:
    http = config.parse(minimal()).http
    assert (http.allow, http.status_token) == ((), "")
    assert (http.request_timeout, http.keepalive_timeout, http.max_connections) == (
        10.0,
        15.0,
        256,
    )


def test_http_connection_limits_and_status_token_can_be_set(tmp_path: Path) -> None:
    (tmp_path / "status").write_text("status-SECRET-1\n", encoding="utf-8")
    doc = with_table(
        "http",
        allow=["127.0.0.1", "10.1.0.0/16", "::1", "10.2.3.4/8"],
        status_token_file="status",
        request_timeout=2,
        keepalive_timeout=0.5,
        max_connections=65535,
    )
    http = config.parse(doc, base_dir=tmp_path).http
    assert http.allow == ("127.0.0.1", "10.1.0.0/16", "::1", "10.2.3.4/8")  # host bits allowed
    assert http.status_token == "status-SECRET-1"
    assert (http.request_timeout, http.keepalive_timeout, http.max_connections) == (
        2.0,
        0.5,
        65535,
    )
    assert type(http.request_timeout) is float


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("allow", "127.0.0.1"),
        ("allow", [""]),
        ("allow", [1]),
        ("allow", ["localhost"]),
        ("allow", ["10.0.0.0/33"]),
        ("allow", ["300.1.2.3"]),
        ("status_token", "two words"),
        ("status_token", 5),
        ("request_timeout", 0),
        ("request_timeout", -1),
        ("request_timeout", "10"),
        ("keepalive_timeout", 0),
        ("keepalive_timeout", float("inf")),
        ("max_connections", 0),
        ("max_connections", 65536),
        ("max_connections", 1.5),
    ],
)
def test_a_wrong_http_connection_setting_names_its_key(key: str, value: Any) -> None:
    assert config_error(with_table("http", **{key: value})).startswith(f"http.{key}: ")


@pytest.mark.parametrize(
    ("kind", "entry"),
    [
        ("dinstar", {"name": "d1", "token": TOKEN}),
        ("ejoin", {"name": "e1", "token": TOKEN}),
        ("goip", {"name": "g1", "id": "goip01", "password": TOKEN}),
    ],
)
def test_a_peer_allow_list_takes_addresses_and_networks_and_names_a_bad_entry(
    kind: str, entry: dict[str, Any]
) -> None:
    ok = config.parse({**minimal(), kind: [{**entry, "allow": ["192.0.2.10", "10.1.0.0/16"]}]})
    assert getattr(ok, kind)[0].allow == ("192.0.2.10", "10.1.0.0/16")
    assert getattr(config.parse({**minimal(), kind: [entry]}), kind)[0].allow == ()
    message = config_error({**minimal(), kind: [{**entry, "allow": ["192.0.2.10", "gw.lan"]}]})
    assert message == (
        f"{kind}[0].allow: 'gw.lan' is not an IP address or network, e.g. 192.0.2.10 or 10.1.0.0/16"
    )


def test_the_status_token_is_masked_and_hidden_from_repr() -> None:
    cfg = config.parse(with_table("http", status_token=TOKEN))
    assert config.masked(cfg)["http"]["status_token"] == MASK
    assert TOKEN not in repr(cfg)
    assert config.masked(config.parse(minimal()))["http"]["status_token"] == ""


# -- secret files others can read -------------------------------------------------------------


def secret_file(tmp_path: Path, name: str, mode: int) -> Path:
    path = tmp_path / name
    path.write_text("file-SECRET-value\n", encoding="utf-8")
    path.chmod(mode)
    return path


@pytest.mark.parametrize(
    ("table", "key", "entry"),
    [
        ("upstream", "api_key", None),
        ("http", "ingest_token", None),
        ("http", "status_token", None),
        ("dinstar", "token", {"name": "d1"}),
        ("goip", "password", {"name": "g1", "id": "goip01"}),
        ("yeastar", "password", {"name": "t1", "host": "192.0.2.1", "username": "api"}),
        ("modem", "pin", {"port": "/dev/ttyUSB0"}),
    ],
)
def test_a_secret_file_others_can_read_gives_a_warning_naming_file_and_key(
    tmp_path: Path, table: str, key: str, entry: dict[str, Any] | None
) -> None:
    path = secret_file(tmp_path, "secret", 0o644)
    doc = minimal()
    if entry is None:
        doc.setdefault(table, {}).pop(key, None)
        doc[table][f"{key}_file"] = str(path)
        where = f"{table}.{key}_file"
    else:
        doc[table] = [{**entry, f"{key}_file": str(path)}]
        where = f"{table}[0].{key}_file"

    cfg = config.parse(doc)

    assert len(cfg.warnings) == 1
    assert cfg.warnings[0].startswith(f"{where}: {path} is readable by every user")
    assert "0644" in cfg.warnings[0]
    assert "file-SECRET-value" not in repr(cfg.warnings)
    assert "warnings" not in config.masked(cfg)


@pytest.mark.parametrize("mode", [0o600, 0o640, 0o400, 0o660])
def test_a_secret_file_closed_to_others_gives_no_warning(tmp_path: Path, mode: int) -> None:
    path = secret_file(tmp_path, "api_key", mode)
    doc = {"upstream": {"url": URL, "api_key_file": str(path)}}
    assert config.parse(doc).warnings == ()


def test_secret_files_not_read_give_no_warning(tmp_path: Path) -> None:
    path = secret_file(tmp_path, "api_key", 0o644)
    doc = {"upstream": {"url": URL, "api_key_file": str(path)}}
    assert config.parse(doc, read_secrets=False).warnings == ()
    assert config.parse(minimal()).warnings == ()  # inline secrets: nothing to warn about


# -- every key declared once: the example and the masking follow the declarations ---------------

EXAMPLE = Path(__file__).resolve().parents[1] / "config.example.toml"
_HEADER = re.compile(r"^(#\s*)?\[\[?([a-z_.]+)\]\]?(\s|$)")  # [t], [[t]], commented or not
_KEY_LINE = re.compile(r"^(#\s*)?([a-z_]+) = (.*)$")
_ALTERNATIVE = re.compile(r"\bor ([a-z_]+_file) = ")  # "...; or pin_file = ..." in a comment


def example_keys() -> dict[tuple[str, str], tuple[Any, bool]]:
    """(table, key) -> (value or MISSING, in a table the example leaves commented out).

    Keys written commented out count, and so do `*_file` alternatives named in a comment.
    """
    found: dict[tuple[str, str], tuple[Any, bool]] = {}
    table, table_commented = "", False
    for line in EXAMPLE.read_text(encoding="utf-8").splitlines():
        if m := _HEADER.match(line):
            table, table_commented = m.group(2), m.group(1) is not None
            continue
        m = _KEY_LINE.match(line)
        if not table or not m:
            continue
        key, rest = m.group(2), m.group(3)
        value_text, _, comment = rest.partition("  #")
        value = tomllib.loads(f"v = {value_text.strip()}")["v"]
        assert (table, key) not in found, f"{table}.{key} is in the example twice"
        found[(table, key)] = (value, table_commented)
        for alternative in _ALTERNATIVE.findall(comment):
            found.setdefault((table, alternative), (dataclasses.MISSING, table_commented))
    return found


def comparable(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def test_every_key_in_the_example_is_declared() -> None:
    declared = {(k.table, k.key) for k in config.declared_keys()}
    undeclared = [f"{t}.{k}" for t, k in example_keys() if (t, k) not in declared]
    assert not undeclared, f"config.example.toml has keys the config does not take: {undeclared}"


def test_every_declared_key_is_in_the_example() -> None:
    documented = example_keys()
    missing = [
        f"{k.table}.{k.key}" for k in config.declared_keys() if (k.table, k.key) not in documented
    ]
    assert not missing, f"config.example.toml does not show: {missing}"


def test_the_example_shows_each_declared_default() -> None:
    """Values in a live table are the defaults; in a commented-out [[table]] example a key
    whose default is empty ("none") may show a sample value instead."""
    documented = example_keys()
    wrong = []
    for k in config.declared_keys():
        value, sample_table = documented.get((k.table, k.key), (dataclasses.MISSING, False))
        if k.default is dataclasses.MISSING or value is dataclasses.MISSING:
            continue  # required, the file form of a secret, or not shown (test above)
        if sample_table and k.default in ("", (), {}):
            continue
        if comparable(value) != comparable(k.default):
            wrong.append(f"{k.table}.{k.key} = {value!r}, declared {k.default!r}")
    assert not wrong, wrong


def test_the_walk_finds_every_table_and_the_file_form_of_every_secret() -> None:
    keys = list(config.declared_keys())
    tops = {k.table.split(".")[0] for k in keys}
    assert tops == set(config.masked(config.parse(minimal())))
    secrets = {(k.table, k.key) for k in keys if k.secret}
    assert secrets == {
        ("upstream", "api_key"), ("upstream", "api_key_file"),
        ("http", "ingest_token"), ("http", "ingest_token_file"),
        ("http", "status_token"), ("http", "status_token_file"),
        ("modem", "pin"), ("modem", "pin_file"),
        ("dinstar", "token"), ("dinstar", "token_file"),
        ("ejoin", "token"), ("ejoin", "token_file"),
        ("goip", "password"), ("goip", "password_file"),
        ("yeastar", "password"), ("yeastar", "password_file"),
        ("partner", "key"), ("partner", "key_file"),
        ("smpp_server.account", "password"), ("smpp_server.account", "password_file"),
        ("smpp_client", "password"), ("smpp_client", "password_file"),
    }  # fmt: skip


ARRAY_MINIMUM: dict[str, dict[str, Any]] = {
    "modem": {"port": "/dev/ttyUSB0"},
    "dinstar": {"name": "d1", "token": "t"},
    "ejoin": {"name": "e1", "token": "t"},
    "goip": {"name": "g1", "id": "goip01", "password": "p"},
    "yeastar": {"name": "y1", "host": "192.0.2.1", "username": "u", "password": "p"},
    "smpp_client": {"name": "s1", "host": "192.0.2.1", "system_id": "esme", "password": "p"},
}


@pytest.mark.parametrize(
    "declared",
    [k for k in config.declared_keys() if k.secret and not k.key.endswith("_file")],
    ids=lambda k: f"{k.table}.{k.key}",
)
def test_every_declared_secret_is_masked_hidden_from_repr_and_given_to_the_scrubber(
    declared: config.DeclaredKey,
) -> None:
    value = f"SECRET-{declared.table}-{declared.key}-0123456789"
    if declared.table.startswith("smpp"):
        value = "Zq7$kW2!"  # SMPP 3.4 carries 8 characters
    doc = minimal()
    if declared.table in ARRAY_MINIMUM:
        doc[declared.table] = [{**ARRAY_MINIMUM[declared.table], declared.key: value}]
    elif declared.table == "smpp_server.account":
        doc["smpp_server"] = {"account": [{"system_id": "box1", declared.key: value}]}
    else:
        doc.setdefault(declared.table, {})[declared.key] = value

    cfg = config.parse(doc)

    assert value not in repr(cfg)
    assert value not in repr(config.masked(cfg))
    assert value in config.secret_values(cfg)
    assert MASK in repr(config.masked(cfg))


def test_secret_values_lists_only_what_is_set() -> None:
    assert config.secret_values(config.parse(minimal())) == (KEY,)


# -- phone numbers: the same rule as every source's (gateway.fields) -------------------------------


def phones_in_config(number: str) -> list[str | ConfigError]:
    """The number as read from [[modem]] phone, [[sim]] phone and [gammu]/[smstools] phones."""
    places: list[tuple[dict[str, Any], Callable[[Config], str]]] = [
        ({"modem": [{"port": "/dev/ttyUSB0", "phone": number}]}, lambda c: c.modem[0].phone),
        ({"sim": [{"iccid": "8970199", "phone": number}]}, lambda c: c.sim[0].phone),
        ({"gammu": {"phones": {"m1": number}}}, lambda c: c.gammu.phones["m1"]),
        ({"smstools": {"phones": {"GSM1": number}}}, lambda c: c.smstools.phones["GSM1"]),
    ]
    results: list[str | ConfigError] = []
    for tables, get in places:
        try:
            results.append(get(config.parse({**minimal(), **tables})))
        except ConfigError as e:
            results.append(e)
    return results


@pytest.mark.parametrize("number", ["+7.900.123.45.67", "+7 (900) 123-45-67", "7\t900 1234567"])
def test_a_phone_the_ingest_api_accepts_is_accepted_in_config(number: str) -> None:
    assert phones_in_config(number) == ["79001234567"] * 4


@given(number=st.text(max_size=30) | st.from_regex(r"\+?[0-9 ().\-]{0,25}", fullmatch=True))
def test_config_and_the_ingest_api_agree_on_every_phone(number: str) -> None:
    expected = normalize_phone(number)
    for result in phones_in_config(number):
        if isinstance(result, ConfigError):
            # An empty [[modem]] phone is simply unset; everywhere else it must be a number.
            assert expected is None, (number, str(result))
            assert "phone" in str(result)
        else:
            assert result == expected or (result == "" and number == "")


def test_a_bad_phone_in_config_is_named_as_before() -> None:
    doc = {**minimal(), "modem": [{"port": "/dev/ttyUSB0", "phone": "12"}]}
    assert config_error(doc) == "modem[0].phone: '12' is not a phone number (3 to 20 digits)"
    doc = {**minimal(), "gammu": {"phones": {"m1": "abc"}}}
    assert config_error(doc) == "gammu.phones.m1: 'abc' is not a phone number"
    doc = {**minimal(), "sim": [{"iccid": "8970199"}]}
    assert config_error(doc) == "sim[0].phone: missing; the number as digits, e.g. 79001234567"


# -- [partner] ---------------------------------------------------------------------------------


def test_the_partner_side_is_off_without_its_table() -> None:
    assert config.parse(minimal()).partner is None


def test_a_partner_table_turns_it_on_with_its_defaults() -> None:
    raw = with_table("partner", services=["VK", "wa"])
    raw["partner"]["names"] = {"250": "russia", "250-01": "mts"}
    raw["partner"]["number_query"] = [{"network": "250-01", "code": "*111*0887#", "answer": "sms"}]
    p = config.parse(raw).partner
    assert p is not None
    assert p.services == ("vk", "wa") and p.cancel_retries == 3 and p.stale_after == 900.0
    assert p.names == {"250": "russia", "250-01": "mts"}
    (q,) = p.number_query
    assert (q.network, q.code, q.answer, q.pattern) == (
        "250-01",
        "*111*0887#",
        "sms",
        r"(\d{10,15})",
    )


def test_the_partner_key_is_a_secret() -> None:
    cfg = config.parse(with_table("partner", key=TOKEN))
    assert cfg.partner is not None and cfg.partner.key == TOKEN
    assert config.masked(cfg)["partner"]["key"] == MASK
    assert TOKEN in config.secret_values(cfg) and TOKEN not in repr(cfg)


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"names": {"russia": "ru"}}, "partner.names: 'russia' is not an MCC (250) or MCC-MNC"),
        ({"listen": "8443"}, "partner.listen: expected HOST:PORT"),
        ({"rent_push_url": "ftp://x/"}, "partner.rent_push_url: 'ftp://x/' is not an http(s) URL"),
        ({"number_query": [{"code": "*1#"}]}, "partner.number_query[0].network: missing"),
        (
            {"number_query": [{"network": "250-01", "code": "*1#", "pattern": "\\d+"}]},
            "partner.number_query[0].pattern: needs a group",
        ),
        (
            {"number_query": [{"network": "25001", "code": "*1#"}]},
            "partner.number_query[0].network: expected MCC-MNC",
        ),
        (
            {"number_query": [{"network": "250-01", "code": "*1#", "answer": "fax"}]},
            "partner.number_query[0].answer",
        ),
        ({"bogus": 1}, "partner.bogus"),
    ],
)
def test_a_wrong_partner_key_is_named(table: dict[str, Any], message: str) -> None:
    raw = minimal()
    raw["partner"] = table
    with pytest.raises(ConfigError, match=re.escape(message)):
        config.parse(raw)


@pytest.mark.parametrize("table", ["smpp_server", "smpp_client"])
def test_an_smpp_password_longer_than_8_characters_is_refused_without_showing_it(
    table: str, tmp_path: Path
) -> None:
    secret = "nine-char"  # 9 characters: SMPP 3.4 carries 8
    doc = minimal()
    if table == "smpp_server":
        doc["smpp_server"] = {"account": [{"system_id": "box1", "password": secret}]}
        where = "smpp_server.account[0].password"
    else:
        doc["smpp_client"] = [
            {"name": "s1", "host": "192.0.2.1", "system_id": "esme", "password": secret}
        ]
        where = "smpp_client[0].password"
    with pytest.raises(ConfigError) as e:
        config.parse(doc)
    assert where in str(e.value) and "8" in str(e.value)
    assert secret not in str(e.value)
    doc_ok = minimal()
    doc_ok[table] = doc[table]
    if table == "smpp_server":
        doc_ok[table]["account"][0]["password"] = "eight-ch"
    else:
        doc_ok[table][0]["password"] = "eight-ch"
    config.parse(doc_ok)  # 8 is fine


# SMPP 3.4 C-octet strings: (where, longest, required, the document around the value, the value
# read back). The wire is Latin-1 with a NUL at the end; longest counts the characters before it.
SMPP_STRINGS: list[tuple[str, int, bool, Callable[[str], dict[str, Any]], Callable[[Config], str]]]
SMPP_STRINGS = [
    (
        "smpp_client[0].system_id",
        15,
        True,
        lambda v: {"smpp_client": [{**ARRAY_MINIMUM["smpp_client"], "system_id": v}]},
        lambda c: c.smpp_client[0].system_id,
    ),
    (
        "smpp_client[0].system_type",
        12,
        False,
        lambda v: {"smpp_client": [{**ARRAY_MINIMUM["smpp_client"], "system_type": v}]},
        lambda c: c.smpp_client[0].system_type,
    ),
    (
        "smpp_client[0].address_range",
        40,
        False,
        lambda v: {"smpp_client": [{**ARRAY_MINIMUM["smpp_client"], "address_range": v}]},
        lambda c: c.smpp_client[0].address_range,
    ),
    (
        "smpp_server.system_id",
        15,
        True,
        lambda v: {"smpp_server": {"system_id": v}},
        lambda c: c.smpp_server.system_id if c.smpp_server else "-",
    ),
    (
        "smpp_server.account[0].system_id",
        15,
        True,
        lambda v: {"smpp_server": {"account": [{"system_id": v, "password": "p"}]}},
        lambda c: c.smpp_server.account[0].system_id if c.smpp_server else "-",
    ),
]
smpp_string_cases = pytest.mark.parametrize(
    ("where", "longest", "required", "document", "read_back"),
    SMPP_STRINGS,
    ids=[s[0] for s in SMPP_STRINGS],
)


def smpp_can_carry(value: str, longest: int) -> bool:
    return len(value) <= longest and all(0 < ord(c) < 256 for c in value)


@smpp_string_cases
@given(
    value=st.text(max_size=60)  # garbage: any text
    | st.text(st.characters(exclude_categories=()), max_size=20)  # surrogates, controls too
    | st.text(st.characters(max_codepoint=0xFF), max_size=45)  # Latin-1, NUL among them
    | st.integers(10, 42).map(lambda n: "esme-" + "x" * (n - 5))  # around each limit
)
def test_an_smpp_string_is_taken_only_when_smpp_3_4_can_carry_it(
    where: str,
    longest: int,
    required: bool,
    document: Callable[[str], dict[str, Any]],
    read_back: Callable[[Config], str],
    value: str,
) -> None:
    result = config_or_error(lambda: config.parse({**minimal(), **document(value)}))
    if smpp_can_carry(value, longest) and (value or not required):
        assert not isinstance(result, ConfigError), (value, str(result))
        assert read_back(result) == value
        return
    assert isinstance(result, ConfigError), value
    assert str(result).startswith(f"{where}: "), str(result)
    if value and all(0 < ord(c) < 256 for c in value):  # too long, nothing else
        assert str(result) == (
            f"{where}: {len(value)} characters; SMPP 3.4 carries {longest} at most"
        )


@smpp_string_cases
def test_an_smpp_string_one_over_its_limit_is_refused_naming_key_and_limit(
    where: str,
    longest: int,
    required: bool,
    document: Callable[[str], dict[str, Any]],
    read_back: Callable[[Config], str],
) -> None:
    assert read_back(config.parse({**minimal(), **document("A" * longest)})) == "A" * longest
    assert config_error({**minimal(), **document("A" * (longest + 1))}) == (
        f"{where}: {longest + 1} characters; SMPP 3.4 carries {longest} at most"
    )


@smpp_string_cases
@pytest.mark.parametrize(
    ("char", "shown"),
    [("ж", "'ж' (U+0436)"), ("\x00", "'\\x00' (U+0000)"), ("€", "'€' (U+20AC)")],
)
def test_an_smpp_string_outside_latin1_or_with_nul_is_refused_naming_the_character(
    where: str,
    longest: int,
    required: bool,
    document: Callable[[str], dict[str, Any]],
    read_back: Callable[[Config], str],
    char: str,
    shown: str,
) -> None:
    assert config_error({**minimal(), **document(f"ab{char}")}) == (
        f"{where}: contains {shown}, which SMPP 3.4 cannot carry; use Latin-1 characters"
        " other than NUL (plain ASCII is safest)"
    )
    assert read_back(config.parse({**minimal(), **document("café")})) == "café"  # Latin-1


def test_check_config_refuses_a_long_smpp_system_id_with_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "config.toml"
    path.write_text(
        f'[upstream]\nurl = "{URL}"\napi_key = "{KEY}"\n\n'
        '[[smpp_client]]\nname = "op1"\nhost = "192.0.2.1"\npassword = "p"\n'
        'system_id = "sixteen-chars-id"\n',
        encoding="utf-8",
    )
    assert cli.main(["check-config", "-c", str(path)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err == (
        "sms-gateway: smpp_client[0].system_id: 16 characters; SMPP 3.4 carries 15 at most\n"
    )


# -- what check-config prints: the effective config, as TOML that loads again ---------------------


def check_config_output(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str
) -> tuple[str, Config]:
    path = tmp_path / "config.toml"
    path.write_text(f'[upstream]\nurl = "{URL}"\napi_key = "{KEY}"\n\n{text}', encoding="utf-8")
    assert cli.main(["check-config", "-c", str(path)]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    return out, config.load(path)


def test_check_config_does_not_print_an_absent_optional_table(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out, cfg = check_config_output(tmp_path, capsys, "")
    assert (cfg.partner, cfg.smpp_server) == (None, None)
    assert "None" not in out
    effective = tomllib.loads(out)
    assert "partner" not in effective and "smpp_server" not in effective
    # said as a comment, as an empty array of tables is
    assert {"# no [partner]", "# no [smpp_server]", "# no [[smpp_client]]"} <= set(out.splitlines())


def test_check_config_prints_toml_that_reads_back_as_the_effective_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    present = (
        '[partner]\nservices = ["vk"]\nnames = { "250-01" = "mts" }\n\n'
        '[[partner.number_query]]\nnetwork = "250-01"\ncode = "*111*0887#"\n\n'
        '[smpp_server]\nsystem_id = "gw-fifteen-char"\n\n'
        '[[smpp_server.account]]\nsystem_id = "box1"\npassword = "eight-ch"\n\n'
        '[[smpp_client]]\nname = "op1"\nhost = "192.0.2.1"\nsystem_id = "esme1"\n'
        'password = "p"\naddress_range = "^7900"\n'
    )
    for text in ("", present):
        out, cfg = check_config_output(tmp_path, capsys, text)
        expected = {k: v for k, v in config.masked(cfg).items() if v is not None and v != []}
        assert tomllib.loads(out) == expected
        assert KEY not in out and "eight-ch" not in out


def test_a_retransmit_window_longer_than_half_keep_finished_is_warned_of() -> None:
    client = {**ARRAY_MINIMUM["smpp_client"], "retransmit_window": 86400}
    doc = {**minimal(), "store": {"keep_finished": 600}, "smpp_client": [client]}
    (warning,) = config.parse(doc).warnings
    assert warning.startswith("smpp_client[0].retransmit_window: 86400 s")
    assert "keep_finished at least 172800 s" in warning
    account = {"system_id": "box1", "password": "p", "retransmit_window": 3600}
    fine = {**minimal(), "smpp_server": {"account": [account]}}  # the default keeps 7 days
    assert config.parse(fine).warnings == ()
    short = {**fine, "store": {"keep_finished": 0}}
    (warning,) = config.parse(short).warnings
    assert warning.startswith("smpp_server.account[0].retransmit_window")
