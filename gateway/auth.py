"""Who may talk to the gateway: secrets compared in constant time, and source addresses
checked against configured networks, whatever carries them (HTTP, UDP)."""

from __future__ import annotations

import enum
import hmac
import ipaddress
import math
import time
from collections.abc import Callable, Iterable, Sequence

import structlog

__all__ = [
    "GuardedToken",
    "Network",
    "Verdict",
    "address_allowed",
    "parse_networks",
    "token_matches",
]
log = structlog.get_logger(__name__)

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


class Verdict(enum.Enum):
    OK = "ok"
    REFUSED = "refused"  # no secret, or a wrong one
    LOCKED = "locked"  # too many wrong ones from this address lately: not even compared


class GuardedToken:
    """A secret a person types (`http.status_token`), compared in constant time, with a lockout
    per client address: after `limit` wrong tries within `window` seconds, every try from that
    address is refused for `window` seconds, right or wrong, so the token cannot be found by
    trying. A request that brings no secret is refused but does not count. At most
    `max_addresses` addresses are remembered (a spray of addresses cannot grow it)."""

    def __init__(
        self,
        token: str,
        *,
        limit: int = 10,
        window: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        max_addresses: int = 10_000,
    ) -> None:
        self._token = token.encode("utf-8")
        self._limit = limit
        self._window = window
        self._clock = clock
        self._max = max_addresses
        # address -> [wrong tries in this window, window start, locked until]
        self._tries: dict[str, list[float]] = {}

    def __bool__(self) -> bool:
        return bool(self._token)

    # What a locked-out address is told, and when to try again (every door says the same).
    LOCKED_OUT = "too many wrong tokens from this address; try again in a minute"

    @property
    def retry_after(self) -> str:
        """The `Retry-After` of a locked-out answer: the lockout's length, in seconds."""
        return str(math.ceil(self._window))

    def remembered(self) -> int:
        """How many addresses are remembered now (at most `max_addresses`)."""
        return len(self._tries)

    def locked(self, address: str | None) -> bool:
        entry = self._tries.get(address or "")
        return entry is not None and self._clock() < entry[2]

    def check(self, given: str | None, address: str | None) -> Verdict:
        if self.locked(address):
            return Verdict.LOCKED
        if given is None or not self._token:
            return Verdict.REFUSED
        if token_matches(given, self._token):
            return Verdict.OK
        self.wrong(address)
        return Verdict.REFUSED

    def wrong(self, address: str | None) -> None:
        """Count a wrong secret from `address` (the caller compared it itself)."""
        now = self._clock()
        key = address or ""
        entry = self._tries.get(key)
        if entry is None or now - entry[1] >= self._window:
            if entry is None and len(self._tries) >= self._max:
                self._forget(now)
            entry = self._tries[key] = [0.0, now, entry[2] if entry else 0.0]
        entry[0] += 1
        if entry[0] >= self._limit and now >= entry[2]:
            entry[2] = now + self._window
            log.warning(
                "auth.locked_out", remote=address, wrong_tries=int(entry[0]), for_s=self._window
            )

    def _forget(self, now: float) -> None:
        self._tries = {
            k: e for k, e in self._tries.items() if now - e[1] < self._window or now < e[2]
        }
        while len(self._tries) >= self._max:  # all recent: drop the oldest
            del self._tries[next(iter(self._tries))]
