"""Proxies from the environment (HTTPS_PROXY, HTTP_PROXY, NO_PROXY) and happy eyeballs.

A real proxy runs on 127.0.0.1 (tests/delivery/proxy.py): CONNECT for https, absolute form for
http. It resolves `upstream.test` itself, which this host cannot, so a request that arrives
went through it.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme
from hypothesis import given
from hypothesis import strategies as st

from gateway.delivery.client import (
    Proxy,
    UpstreamClient,
    UpstreamError,
    no_proxy_matches,
    parse_proxy,
    proxy_from_environment,
)
from gateway.errors import ConfigError
from gateway.play.standin import StandIn
from tests.delivery.proxy import TestProxy
from tests.delivery.test_client import BODY, HEADERS, LIMIT, RecordingUpstream, trusting
from tests.fakes.daemon import DaemonProcess, write_config

USER, PASSWORD = "gw", "s3cret p@ss:word"
PROXY_AUTH = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
QUOTED = "s3cret%20p%40ss%3Aword"  # PASSWORD as it is written in a URL


# -- which proxy, from the environment -----------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "environ", "expected"),
    [
        ("https://h.example/p", {"HTTPS_PROXY": "http://p:3128"}, ("p", 3128, "HTTPS_PROXY")),
        ("https://h.example/p", {"https_proxy": "p:8080"}, ("p", 8080, "https_proxy")),
        (
            "https://h.example/p",
            {"https_proxy": "http://low:1", "HTTPS_PROXY": "http://up:2"},
            ("low", 1, "https_proxy"),
        ),
        (
            "https://h.example/p",
            {"https_proxy": " ", "HTTPS_PROXY": "http://up:2"},
            ("up", 2, "HTTPS_PROXY"),
        ),
        ("https://h.example/p", {"HTTP_PROXY": "http://p:3128"}, None),
        ("http://h.example/p", {"HTTP_PROXY": "http://p:3128"}, ("p", 3128, "HTTP_PROXY")),
        ("http://h.example/p", {"http_proxy": "http://p"}, ("p", 80, "http_proxy")),
        ("http://h.example/p", {"HTTPS_PROXY": "http://p:3128"}, None),
        ("https://h.example/p", {}, None),
        ("https://h.example/p", {"HTTPS_PROXY": "http://[::1]:3128"}, ("::1", 3128, "HTTPS_PROXY")),
    ],
)
def test_the_proxy_is_picked_as_curl_picks_it(
    url: str, environ: dict[str, str], expected: tuple[str, int, str] | None
) -> None:
    proxy = proxy_from_environment(url, environ)
    assert (proxy and (proxy.host, proxy.port, proxy.variable)) == expected


def test_credentials_in_the_proxy_url_become_proxy_authorization_and_stay_out_of_repr() -> None:
    proxy = parse_proxy("HTTPS_PROXY", f"http://{USER}:{QUOTED}@proxy.example:3128")
    assert proxy.authorization == PROXY_AUTH
    assert proxy.address == "proxy.example:3128"
    assert "s3cret" not in repr(proxy) and QUOTED not in repr(proxy)


@pytest.mark.parametrize(
    ("no_proxy", "host", "port", "bypassed"),
    [
        ("*", "anything.example", 443, True),
        ("h.example", "h.example", 443, True),
        ("example", "h.example", 443, True),
        (".example", "h.example", 443, True),
        ("*.example", "h.example", 443, True),
        ("H.Example.", "h.example", 443, True),
        ("other.example, h.example", "h.example", 443, True),
        ("other.example h.example", "h.example", 443, True),
        ("xample", "h.example", 443, False),
        ("h.example:443", "h.example", 443, True),
        ("h.example:8443", "h.example", 443, False),
        ("10.0.0.0/8", "10.1.2.3", 443, True),
        ("10.0.0.0/8", "11.1.2.3", 443, False),
        ("127.0.0.1", "127.0.0.1", 80, True),
        ("127.0.0.1:80", "127.0.0.1", 80, True),
        ("::1", "::1", 443, True),
        ("[::1]:443", "::1", 443, True),
        ("fd00::/8", "fd12::1", 443, True),
        ("10.0.0.0/8", "h.example", 443, False),
        ("", "h.example", 443, False),
        (",,, ,", "h.example", 443, False),
        ("h.example:x", "h.example", 443, False),
    ],
)
def test_no_proxy_exempts_names_subdomains_addresses_and_networks(
    no_proxy: str, host: str, port: int, bypassed: bool
) -> None:
    assert no_proxy_matches(no_proxy, host, port) is bypassed


def test_no_proxy_makes_the_connection_direct_in_either_case() -> None:
    env = {"HTTPS_PROXY": "http://p:3128", "no_proxy": "h.example"}
    assert proxy_from_environment("https://api.h.example/p", env) is None
    env = {"HTTPS_PROXY": "http://p:3128", "NO_PROXY": "other.example"}
    assert proxy_from_environment("https://api.h.example/p", env) is not None


@pytest.mark.parametrize(
    ("value", "says"),
    [
        (f"socks5://{USER}:{QUOTED}@p:1080", "socks5:// proxies are not supported"),
        (f"https://{USER}:{QUOTED}@p:3128", "https:// proxies are not supported"),
        (f"http://{USER}:{QUOTED}@p:99999", "not a proxy URL"),
        (f"http://{USER}:{QUOTED}@:3128", "not a proxy URL"),
    ],
)
def test_an_unusable_proxy_is_refused_naming_the_variable_but_not_the_password(
    value: str, says: str
) -> None:
    with pytest.raises(ConfigError) as info:
        proxy_from_environment("https://h.example/p", {"HTTPS_PROXY": value})
    message = str(info.value)
    assert message.startswith("HTTPS_PROXY: ") and says in message
    assert "s3cret" not in message and QUOTED not in message


@given(st.text(max_size=80))
def test_any_proxy_value_gives_a_proxy_or_a_config_error(value: str) -> None:
    proxy: Proxy | ConfigError
    try:
        proxy = parse_proxy("HTTPS_PROXY", value)
    except ConfigError as e:
        proxy = e
    if isinstance(proxy, ConfigError):
        assert str(proxy).startswith("HTTPS_PROXY: ")
    else:
        assert proxy.host and 0 <= proxy.port <= 65535


@given(
    st.text(max_size=80), st.sampled_from(["h.example", "10.1.2.3", "::1"]), st.integers(1, 65535)
)
def test_any_no_proxy_value_is_read_without_error(no_proxy: str, host: str, port: int) -> None:
    assert isinstance(no_proxy_matches(no_proxy, host, port), bool)


# -- through a real proxy ------------------------------------------------------------------------


@pytest.fixture
async def proxies() -> AsyncIterator[Callable[..., Any]]:
    started: list[TestProxy] = []

    async def make(**kw: Any) -> TestProxy:
        proxy = TestProxy(hosts={"upstream.test": "127.0.0.1"}, **kw)
        await proxy.start()
        started.append(proxy)
        return proxy

    yield make
    for proxy in started:
        await proxy.stop()


@pytest.fixture
async def plain_upstream() -> AsyncIterator[RecordingUpstream]:
    server = RecordingUpstream()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
async def tls_upstream(ca: trustme.CA) -> AsyncIterator[RecordingUpstream]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("upstream.test").configure_cert(context)
    server = RecordingUpstream(ssl_context=context)
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def clients() -> AsyncIterator[Callable[..., UpstreamClient]]:
    made: list[UpstreamClient] = []

    def make(url: str, environ: dict[str, str], **kw: Any) -> UpstreamClient:
        client = UpstreamClient(
            url,
            HEADERS,
            timeout=kw.pop("timeout", 3.0),
            body_limit=LIMIT,
            proxy=proxy_from_environment(url, environ),
            **kw,
        )
        made.append(client)
        return client

    yield make
    for client in made:
        await client.close()


def header(seen_headers: list[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    found = [v for k, v in seen_headers if k.lower() == name.lower()]
    return found[0] if found else None


async def test_https_goes_through_a_connect_tunnel_with_tls_to_the_upstream(
    proxies: Callable[..., Any],
    tls_upstream: RecordingUpstream,
    ca: trustme.CA,
    clients: Callable[..., UpstreamClient],
) -> None:
    proxy: TestProxy = await proxies(credentials=(USER, PASSWORD))
    url = f"https://upstream.test:{tls_upstream.port}/v1/PUSH_SMS"
    env = {"HTTPS_PROXY": f"http://{USER}:{QUOTED}@127.0.0.1:{proxy.port}"}
    client = clients(url, env, ssl_context=trusting(ca))
    assert (await client.post(BODY)).status == 200
    assert (await client.post(BODY)).status == 200
    (connect,) = proxy.requests  # one tunnel, kept alive for both requests
    assert connect.method == "CONNECT" and connect.target == f"upstream.test:{tls_upstream.port}"
    assert connect.headers["host"] == f"upstream.test:{tls_upstream.port}"
    assert connect.headers["proxy-authorization"] == PROXY_AUTH
    assert [s.body for s in tls_upstream.seen] == [BODY, BODY]
    seen = tls_upstream.seen[0]
    assert seen.target == "/v1/PUSH_SMS"  # origin form inside the tunnel
    assert header(seen.headers, b"Host") == f"upstream.test:{tls_upstream.port}".encode()
    assert header(seen.headers, b"Proxy-Authorization") is None  # the origin never sees it


async def test_the_upstream_certificate_is_checked_inside_the_tunnel(
    proxies: Callable[..., Any], ca: trustme.CA, clients: Callable[..., UpstreamClient]
) -> None:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("someone-else.test").configure_cert(context)
    impostor = RecordingUpstream(ssl_context=context)
    await impostor.start()
    try:
        proxy: TestProxy = await proxies()
        url = f"https://upstream.test:{impostor.port}/v1/PUSH_SMS"
        client = clients(url, {"HTTPS_PROXY": proxy.url}, ssl_context=trusting(ca))
        with pytest.raises(UpstreamError) as info:
            await client.post(BODY)
        assert info.value.kind == "CertificateError"
        assert proxy.tunnels == 1 and impostor.seen == []
    finally:
        await impostor.stop()


async def test_plain_http_goes_to_the_proxy_in_absolute_form(
    proxies: Callable[..., Any],
    plain_upstream: RecordingUpstream,
    clients: Callable[..., UpstreamClient],
) -> None:
    proxy: TestProxy = await proxies(credentials=(USER, PASSWORD))
    url = f"http://upstream.test:{plain_upstream.port}/v1/PUSH_SMS?x=1"
    client = clients(url, {"http_proxy": f"{USER}:{QUOTED}@127.0.0.1:{proxy.port}"})
    assert (await client.post(BODY)).status == 200
    assert (await client.post(BODY)).status == 200
    assert [r.target for r in proxy.requests] == [url, url]
    assert all(r.method == "POST" for r in proxy.requests)
    assert proxy.requests[0].headers["proxy-authorization"] == PROXY_AUTH
    assert proxy.requests[0].headers["host"] == f"upstream.test:{plain_upstream.port}"
    assert proxy.connections == 1  # kept alive to the proxy
    assert [s.body for s in plain_upstream.seen] == [BODY, BODY]


async def test_wrong_proxy_credentials_are_a_proxy_error_that_never_shows_them(
    proxies: Callable[..., Any], clients: Callable[..., UpstreamClient]
) -> None:
    proxy: TestProxy = await proxies(credentials=(USER, "the right one"))
    env = {"HTTPS_PROXY": f"http://{USER}:{QUOTED}@127.0.0.1:{proxy.port}"}
    client = clients("https://upstream.test:1/p", env)
    with pytest.raises(UpstreamError) as info:
        await client.post(BODY)
    assert info.value.kind == "ProxyError"
    assert "407" in str(info.value) and f"127.0.0.1:{proxy.port}" in str(info.value)
    assert "s3cret" not in str(info.value) and QUOTED not in str(info.value)


async def test_a_proxy_that_is_down_is_named_in_the_error_with_its_cause(
    clients: Callable[..., UpstreamClient],
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    client = clients("https://upstream.test/p", {"HTTPS_PROXY": f"http://127.0.0.1:{port}"})
    with pytest.raises(UpstreamError) as info:
        await client.post(BODY)
    assert info.value.kind == "ConnectionRefused"
    assert f"proxy 127.0.0.1:{port}" in str(info.value)
    assert isinstance(info.value.__cause__, ConnectionRefusedError)


async def test_no_proxy_sends_the_request_direct(
    proxies: Callable[..., Any],
    plain_upstream: RecordingUpstream,
    clients: Callable[..., UpstreamClient],
) -> None:
    proxy: TestProxy = await proxies()
    url = f"http://127.0.0.1:{plain_upstream.port}/v1/PUSH_SMS"
    client = clients(url, {"HTTP_PROXY": proxy.url, "NO_PROXY": "localhost,127.0.0.1"})
    assert (await client.post(BODY)).status == 200
    assert proxy.requests == [] and len(plain_upstream.seen) == 1


# -- happy eyeballs ------------------------------------------------------------------------------


@pytest.fixture
def black_hole() -> Iterator[tuple[str, int]]:
    """An address whose connects hang (a listener with a full backlog drops new SYNs), as a
    broken IPv6 route does."""
    listener = socket.socket()
    listener.bind(("127.0.0.2", 0))
    listener.listen(0)
    address = listener.getsockname()
    fillers = []
    for _ in range(3):
        f = socket.socket()
        f.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            f.connect(address)
        fillers.append(f)
    yield address
    for f in fillers:
        f.close()
    listener.close()


async def test_an_address_that_does_not_answer_falls_back_to_the_next_within_a_second(
    black_hole: tuple[str, int],
    plain_upstream: RecordingUpstream,
    clients: Callable[..., UpstreamClient],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The name resolves to a dead address first, a live one second (as a host with a broken
    IPv6 route sees AAAA before A). DNS is what cannot run here, so only it is stood in for."""
    loop = asyncio.get_running_loop()
    real_getaddrinfo = loop.getaddrinfo

    async def two_addresses(host: Any, port: Any, *args: Any, **kw: Any) -> Any:
        if host != "dual.test":
            return await real_getaddrinfo(host, port, *args, **kw)
        stream = (socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "")
        return [(*stream, black_hole), (*stream, ("127.0.0.1", plain_upstream.port))]

    monkeypatch.setattr(loop, "getaddrinfo", two_addresses)
    url = f"http://dual.test:{plain_upstream.port}/v1/PUSH_SMS"
    client = clients(url, {}, timeout=5.0)
    started = time.monotonic()
    assert (await client.post(BODY)).status == 200
    assert time.monotonic() - started < 1.0  # not the 5 s timeout on the dead address


# -- the daemon, with the proxy in its environment ------------------------------------------------


async def test_the_daemon_delivers_through_the_proxy_in_its_environment_and_logs_no_password(
    tmp_path: Path, standin: StandIn, proxies: Callable[..., Any]
) -> None:
    proxy: TestProxy = await proxies(credentials=(USER, PASSWORD))
    env = {"HTTP_PROXY": f"http://{USER}:{QUOTED}@127.0.0.1:{proxy.port}", "NO_PROXY": ""}
    daemon = DaemonProcess(write_config(tmp_path, standin.url), env=env)
    await daemon.start()
    try:
        _, answer = await daemon.post_sms({"phone": "79001234567", "phoneFrom": "S", "text": "t"})
        await standin.wait_for(lambda s: answer["smsId"] in s.delivered_ids(), timeout=10)
        assert [r.target for r in proxy.requests] == [standin.url]
    finally:
        await daemon.stop()
    (used,) = [e for e in daemon.logs() if e["event"] == "delivery.proxy_used"]
    assert used["proxy"] == f"127.0.0.1:{proxy.port}" and used["variable"] == "HTTP_PROXY"
    assert "s3cret" not in daemon.log_text() and QUOTED not in daemon.log_text()


def test_the_daemon_refuses_to_start_with_an_unusable_proxy(tmp_path: Path) -> None:
    config = write_config(tmp_path, "https://upstream.test/v1/PUSH_SMS")
    env = {"PATH": "/usr/bin:/bin", "HTTPS_PROXY": f"socks5://{USER}:{QUOTED}@127.0.0.1:1080"}
    done = subprocess.run(
        [sys.executable, "-m", "gateway", "run", "-c", str(config)],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert "HTTPS_PROXY: socks5:// proxies are not supported" in done.stderr
    assert "s3cret" not in done.stderr + done.stdout and QUOTED not in done.stderr + done.stdout
    lines = [json.loads(x) for x in done.stderr.splitlines() if x.startswith("{")]
    assert not any(e.get("event") == "daemon.started" for e in lines)
