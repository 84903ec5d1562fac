"""Who may talk to the gateway: secrets compared in constant time, and source addresses
checked against configured networks, whatever carries them (HTTP, UDP)."""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Iterable, Sequence

__all__ = ["Network", "address_allowed", "parse_networks", "token_matches"]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def token_matches(given: str | None, expected: str | bytes) -> bool:
    """Constant-time comparison so the token cannot be guessed byte by byte."""
    if not expected or given is None:
        return False
    if isinstance(expected, str):
        expected = expected.encode("utf-8")
    return hmac.compare_digest(given.encode("utf-8", "replace"), expected)


def parse_networks(entries: Iterable[str]) -> tuple[Network, ...]:
    """``allow`` entries (an address is a network of one) as networks; ``ValueError`` for an
    entry that is neither (the config has refused those already)."""
    return tuple(ipaddress.ip_network(e.strip(), strict=False) for e in entries)


def address_allowed(networks: Sequence[Network], host: str | None) -> bool:
    """Whether a peer address (as a socket gives it) lies in one of ``networks``; any address
    when there are none. The one rule of every ``allow`` (HTTP, Dinstar/Ejoin pushes, GoIP).

    An IPv6 zone (``fe80::1%eth0``) is ignored. An IPv4 peer on a dual-stack socket shows as
    ``::ffff:1.2.3.4``: it matches an IPv4 network, and the logs' form ``::ffff:1.2.3.4`` in
    ``allow`` matches a plain IPv4 peer too. Anything that is not an address is not allowed.
    """
    if not networks:
        return True
    try:
        ip: Address = ipaddress.ip_address((host or "").partition("%")[0])
    except ValueError:
        return False
    forms: list[Address] = [ip]
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        forms.append(ip.ipv4_mapped)
    elif isinstance(ip, ipaddress.IPv4Address):
        forms.append(ipaddress.IPv6Address(f"::ffff:{ip}"))
    return any(form.version == net.version and form in net for form in forms for net in networks)
