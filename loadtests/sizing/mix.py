"""The traffic the sizing run offers: operations, their request fractions and endpoint classes.

Pure. The locustfile carries the same default as a string (`DEFAULT_MIX`, it must stay
self-contained for the in-cluster ConfigMap); tests/loadtests/test_mix.py keeps the two equal.
Probes (/health/*) are not part of the mix: they run at the kubelet's rate and are not load.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

# operation -> endpoint class: each class has its own latency objective (select.Objective).
CLASSES: dict[str, str] = {
    "login": "login",
    "me": "read",
    "list_items": "read",
    "read_item": "read",
    "list_users_api_key": "read",
    "create_item": "write",
    "update_item": "write",
    "delete_item": "write",
}
# Fractions of all requests (login excluded: it is derived from the token lifetime, see
# `login_fraction`). Creates and deletes balance, so an account's item count stays steady.
DEFAULT_FRACTIONS: dict[str, float] = {
    "me": 0.15,
    "list_items": 0.30,
    "read_item": 0.20,
    "list_users_api_key": 0.05,
    "create_item": 0.10,
    "update_item": 0.10,
    "delete_item": 0.10,
}
# Operations the locustfile sends with the seeded API key (X-API-Key) instead of an account's
# token: the key's tier pays for them, the accounts' per-user budgets for the rest. infra/config.py
# reads both from here to check a load test against the service's limits; tests/loadtests/
# test_mix.py keeps this set equal to the locustfile's journeys.
API_KEY_OPERATIONS: frozenset[str] = frozenset({"list_users_api_key"})
MIX_TOLERANCE = 0.02  # realised fraction within 2 points of the intended one
PROBE_PERIOD_S = 10.0  # the kubelet's default periodSeconds, for each of liveness and readiness


class MixError(ValueError):
    """A mix that does not name known operations or does not add up."""


def login_fraction(token_ttl_s: float, client_rps: float) -> float:
    """A client sending `client_rps` requests a second logs in once per token lifetime: one login
    in every `token_ttl_s * client_rps` requests."""
    if token_ttl_s <= 0 or client_rps <= 0:
        raise MixError("the token lifetime and the client's request rate must be positive")
    return 1 / (token_ttl_s * client_rps)


def build(fractions: Mapping[str, float], login: float) -> dict[str, float]:
    """The full mix: `login` as given, the other fractions scaled to fill the rest; sums to 1."""
    unknown = set(fractions) - set(CLASSES)
    if unknown:
        raise MixError(f"unknown operations {sorted(unknown)}; known: {sorted(CLASSES)}")
    if not 0 <= login < 1:
        raise MixError(f"the login fraction {login} is not in [0, 1)")
    rest = {op: f for op, f in fractions.items() if op != "login" and f > 0}
    total = sum(rest.values())
    if total <= 0 or any(f < 0 for f in fractions.values()):
        raise MixError("the fractions must be non-negative and not all zero")
    mix = {op: f / total * (1 - login) for op, f in rest.items()}
    if login:
        mix["login"] = login
    return mix


def encode(mix: Mapping[str, float]) -> str:
    """ "me=0.15,list_items=0.3": the LOADTEST_MIX the locustfile reads."""
    return ",".join(f"{op}={fraction:.6g}" for op, fraction in mix.items())


def decode(text: str) -> dict[str, float]:
    mix: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        op, sep, value = part.partition("=")
        if not sep:
            raise MixError(f"{part!r} is not OPERATION=FRACTION")
        try:
            mix[op.strip()] = float(value)
        except ValueError:
            raise MixError(f"{part!r}: {value!r} is not a number") from None
    return mix


def realised(counts: Mapping[str, int]) -> dict[str, float]:
    total = sum(counts.values())
    return {op: n / total for op, n in counts.items()} if total else {}


def mix_deviations(intended: Mapping[str, float], counts: Mapping[str, int]) -> dict[str, float]:
    """Realised minus intended fraction, for every operation off by more than MIX_TOLERANCE (in
    fraction units: 0.02 is two points) *and* by more than three standard errors of a fraction
    from that many requests: a short step cannot tell two points from chance."""
    got, n = realised(counts), sum(counts.values())
    off = {}
    for op in sorted(set(intended) | set(got)):
        want = intended.get(op, 0.0)
        delta = got.get(op, 0.0) - want
        chance = 3 * math.sqrt(want * (1 - want) / n) if n else math.inf
        if abs(delta) > max(MIX_TOLERANCE, chance):
            off[op] = round(delta, 4)
    return off
