"""The one allow rule (HTTP guard, Dinstar/Ejoin pushes, GoIP) and constant-time tokens."""

from __future__ import annotations

import ipaddress

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.auth import GuardedToken, Verdict, address_allowed, parse_networks, token_matches

v4 = st.ip_addresses(v=4)
v6 = st.ip_addresses(v=6)
v4_nets = st.builds(
    lambda ip, bits: ipaddress.ip_network(f"{ip}/{bits}", strict=False), v4, st.integers(0, 32)
)
v6_nets = st.builds(
    lambda ip, bits: ipaddress.ip_network(f"{ip}/{bits}", strict=False), v6, st.integers(0, 128)
)
networks = st.lists(v4_nets | v6_nets, max_size=4)


def mapped(ip: ipaddress.IPv4Address) -> str:
    return f"::ffff:{ip}"


@settings(max_examples=500, deadline=None)
@given(networks, v4 | v6)
def test_an_address_is_allowed_exactly_when_a_network_holds_it(
    nets: list[ipaddress.IPv4Network | ipaddress.IPv6Network],
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address,
) -> None:
    expected = not nets or any(ip.version == n.version and ip in n for n in nets)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        expected = expected or any(ip.ipv4_mapped in n for n in nets if n.version == 4)
    if isinstance(ip, ipaddress.IPv4Address):
        expected = expected or any(
            ipaddress.IPv6Address(mapped(ip)) in n for n in nets if n.version == 6
        )
    assert address_allowed(nets, str(ip)) is expected


@settings(max_examples=300, deadline=None)
@given(networks, v4)
def test_ipv4_and_its_mapped_ipv6_form_are_one_peer(
    nets: list[ipaddress.IPv4Network | ipaddress.IPv6Network], ip: ipaddress.IPv4Address
) -> None:
    """An IPv4 peer on a dual-stack socket shows as ::ffff:a.b.c.d."""
    assert address_allowed(nets, str(ip)) == address_allowed(nets, mapped(ip))


@settings(max_examples=300, deadline=None)
@given(v4)
def test_the_mapped_form_in_allow_matches_a_plain_ipv4_peer(ip: ipaddress.IPv4Address) -> None:
    """What the logs show for a peer on a dual-stack socket, copied into allow, lets it in."""
    nets = parse_networks([mapped(ip)])
    assert address_allowed(nets, str(ip)) and address_allowed(nets, mapped(ip))
    assert not address_allowed(nets, str(ipaddress.IPv4Address((int(ip) + 1) % 2**32)))


@settings(max_examples=300, deadline=None)
@given(networks, v6, st.from_regex(r"[a-z0-9]{1,8}", fullmatch=True))
def test_an_ipv6_zone_is_ignored(
    nets: list[ipaddress.IPv4Network | ipaddress.IPv6Network],
    ip: ipaddress.IPv6Address,
    zone: str,
) -> None:
    assert address_allowed(nets, f"{ip}%{zone}") == address_allowed(nets, str(ip))


@settings(max_examples=500, deadline=None)
@given(st.lists(v4_nets | v6_nets, min_size=1, max_size=4), st.text(max_size=60) | st.none())
def test_garbage_is_never_allowed_and_never_raises(
    nets: list[ipaddress.IPv4Network | ipaddress.IPv6Network], host: str | None
) -> None:
    try:
        ipaddress.ip_address((host or "").partition("%")[0])
    except ValueError:
        assert address_allowed(nets, host) is False
    else:
        address_allowed(nets, host)


def test_no_networks_allows_anything_even_garbage() -> None:
    assert address_allowed([], "not an address") and address_allowed([], None)


def test_link_local_with_a_zone_and_the_usual_entries() -> None:
    nets = parse_networks(["10.1.0.0/16", " 192.0.2.7 ", "fe80::/10"])
    assert address_allowed(nets, "10.1.2.3") and address_allowed(nets, "::ffff:10.1.2.3")
    assert address_allowed(nets, "192.0.2.7") and not address_allowed(nets, "192.0.2.8")
    assert address_allowed(nets, "fe80::1%eth0") and not address_allowed(nets, "fec0::1")
    assert not address_allowed(nets, "") and not address_allowed(nets, "10.1.2.3:80")


def test_tokens_match_only_exactly() -> None:
    assert token_matches("s3cret", "s3cret") and token_matches("s3cret", b"s3cret")
    assert not token_matches("s3cre", "s3cret") and not token_matches(None, "s3cret")
    assert not token_matches("", "") and not token_matches("\ud800", "x")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_ten_wrong_tokens_lock_the_address_out_even_for_the_right_one() -> None:
    clock = Clock()
    guard = GuardedToken("s3cret-token", clock=clock)
    for _ in range(9):
        assert guard.check("guess", "192.0.2.7") is Verdict.REFUSED
    assert guard.check("s3cret-token", "192.0.2.7") is Verdict.OK  # 9 wrong: not yet
    assert guard.check("guess", "192.0.2.7") is Verdict.REFUSED  # the 10th
    assert guard.check("s3cret-token", "192.0.2.7") is Verdict.LOCKED
    assert guard.check("s3cret-token", "192.0.2.8") is Verdict.OK  # another address
    clock.now += 59.9
    assert guard.check("s3cret-token", "192.0.2.7") is Verdict.LOCKED
    clock.now += 0.2
    assert guard.check("s3cret-token", "192.0.2.7") is Verdict.OK


def test_wrong_tries_spread_over_more_than_the_window_never_lock() -> None:
    clock = Clock()
    guard = GuardedToken("s3cret-token", clock=clock)
    for _ in range(50):
        assert guard.check("guess", "192.0.2.7") is Verdict.REFUSED
        clock.now += 7  # 9 tries a minute at most
    assert guard.check("s3cret-token", "192.0.2.7") is Verdict.OK


def test_no_secret_is_refused_but_not_counted() -> None:
    guard = GuardedToken("s3cret-token", clock=Clock())
    for _ in range(100):
        assert guard.check(None, "192.0.2.7") is Verdict.REFUSED
    assert guard.check("s3cret-token", "192.0.2.7") is Verdict.OK


def test_without_a_token_nothing_is_ok() -> None:
    guard = GuardedToken("", clock=Clock())
    assert not guard
    assert guard.check("", "192.0.2.7") is Verdict.REFUSED


@settings(max_examples=50)
@given(st.lists(st.ip_addresses().map(str), min_size=1, max_size=300))
def test_a_spray_of_addresses_stays_bounded(addresses: list[str]) -> None:
    guard = GuardedToken("s3cret-token", clock=Clock(), max_addresses=64)
    for address in addresses:
        guard.check("guess", address)
        assert guard.remembered() <= 64
