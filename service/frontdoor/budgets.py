"""Budgets: a named policy (one or more windows) charged for one identity under bounded keys."""

from __future__ import annotations

import hashlib
import ipaddress
from functools import lru_cache

from service.ratelimit.gcra import parse_windows

# Longer than any email address (RFC 5321 caps a path at 256); a longer "username" is cut here
# before it is hashed, so what an attacker submits never sizes anything we store.
USERNAME_MAX = 320


class Policy:
    """A limit (the `limits` notation) under a name, as the script and the headers need it."""

    __slots__ = ("args", "header", "items", "name", "prefix", "windows")

    def __init__(self, name: str, text: str, prefix: str) -> None:
        self.name = name
        self.prefix = f"{prefix}:{name}"
        self.windows = parse_windows(text)
        self.args = tuple(n for w in self.windows for n in (w.interval, w.capacity))
        # Quota policy items of draft-ietf-httpapi-ratelimit-headers (RateLimit-Policy).
        self.items = tuple(f'"{name}-{w.seconds}s"' for w in self.windows)
        # Its RateLimit-Policy members, the same for every request: built once.
        self.header = ", ".join(
            f"{item};q={w.amount};w={w.seconds}"
            for item, w in zip(self.items, self.windows, strict=True)
        )

    def charge(self, identity: str) -> Charge:
        return _charge(self, identity)


class Charge:
    """One policy for one identity: its Redis keys, one per window."""

    __slots__ = ("keys", "policy")

    def __init__(self, policy: Policy, keys: tuple[str, ...]) -> None:
        self.policy = policy
        self.keys = keys

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Charge) and (self.policy, self.keys) == (other.policy, other.keys)

    def __hash__(self) -> int:
        return hash(self.keys)


@lru_cache(maxsize=8192)
def _charge(policy: Policy, identity: str) -> Charge:
    # Fixed-length keys whatever the identity (an address, a username, an id); cached, since
    # the same clients and users come back request after request.
    digest = hashlib.blake2b(identity.encode(), digest_size=16).hexdigest()
    return Charge(policy, tuple(f"{policy.prefix}:{w.seconds}:{digest}" for w in policy.windows))


@lru_cache(maxsize=4096)
def client_identity(host: str) -> str:
    """The budget a client address spends: IPv4 as is, IPv6 per /64 (one subscriber's
    allocation; the addresses inside it are free to rotate), IPv4-mapped IPv6 as IPv4."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return host[:64]  # not an address (a test client, a Unix socket)
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return f"{ipaddress.IPv6Address(int(ip) >> 64 << 64)}/64"
    return host


def username_identity(username: str) -> str:
    """The budget a submitted username spends: trimmed, case-folded and length-bounded."""
    return username[: USERNAME_MAX * 2].strip().casefold()[:USERNAME_MAX]
