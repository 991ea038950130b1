"""The front door: the one pass every API request makes.

1. The client budget (per address, IPv6 per /64) is charged before any credential is looked
   at, so bad tokens, bad keys, 401s and 403s all spend it.
2. `authenticate` turns the credential into a Principal (401 otherwise).
3. The principal's limits (per user, or per API key and its tier).

All of it in at most one Redis script call: each worker remembers which budget a credential it
has authenticated spends (a digest of the credential, never the credential), so a known caller's
limits ride with its client budget in step 1. A credential seen for the first time on this
worker, or whose tier has changed, costs a second call after step 2. A busy caller's requests
are mostly admitted from a lease the worker holds, with no call (service/ratelimit/limiter.py);
the password budgets are charged one attempt per call.

Headers are read directly (no OAuth2PasswordBearer / APIKeyHeader dependencies per request);
frontdoor/openapi.py still declares both schemes for Swagger's Authorize button.
"""

from __future__ import annotations

import hashlib
import math
from functools import lru_cache
from typing import Final

from fastapi import Request
from starlette.types import Scope

from service.auth.authenticate import Principal, authenticate
from service.frontdoor.budgets import Charge, Policy, client_identity, username_identity
from service.frontdoor.headers import SCOPE_KEY, Quota
from service.kit.problems import TooManyRequests
from service.ratelimit.gcra import MICROS
from service.ratelimit.limiter import Limiter
from service.settings import Settings

EXEMPT: Final = "exempt"  # a principal no limit applies to, beyond its client budget


class FrontDoor:
    def __init__(self, settings: Settings, limiter: Limiter) -> None:
        self.limiter = limiter
        self.headers_enabled = settings.rate_limit_headers
        self.prefix = f"{settings.app_name}:rl"
        self.client = Policy("client", settings.rate_limit_client, self.prefix)
        self.user = Policy("user", settings.rate_limit_user, self.prefix)
        self.login_pair = Policy("login", settings.rate_limit_login, self.prefix)
        self.login_ip = Policy("login-ip", settings.rate_limit_login_ip, self.prefix)
        self.login_username = Policy(
            "login-username", settings.rate_limit_login_username, self.prefix
        )
        self.key_default = settings.rate_limit_api_key_default
        self._key_policies: dict[str, Policy] = {}  # per tier limit (admins define few)
        self._known: dict[bytes, Charge | str] = {}  # credential digest -> its budget
        self._known_max = settings.rate_limit_known_credentials

    # --- the passes ------------------------------------------------------------------------

    async def admit(self, request: Request) -> Principal:
        """Client budget, authentication, the principal's limits: the route's Principal."""
        scope = request.scope
        headers = request.headers
        api_key = headers.get("x-api-key")
        bearer = _bearer_token(headers.get("authorization"))
        credential = api_key or bearer
        digest = _digest(credential) if credential else b""
        known = self._known.get(digest) if digest else None
        client = self.client.charge(client_identity(_peer(scope)))
        await self.charge(
            scope, (client, known) if isinstance(known, Charge) else (client,), lease=True
        )

        principal = await authenticate(request, bearer=bearer, api_key=api_key)

        wanted = self._principal_budget(principal)
        if wanted != known:  # first sight on this worker, or the tier changed
            if isinstance(wanted, Charge):
                await self.charge(scope, (wanted,), lease=True)
            self._remember(digest, wanted)
        return principal

    async def charge_client(self, scope: Scope) -> None:
        """The client budget alone (anonymous routes)."""
        await self.charge(scope, (self.client.charge(client_identity(_peer(scope))),), lease=True)

    async def charge_login(self, scope: Scope, username: str, *, with_client: bool) -> None:
        """One password check: per address + username, per address, per username."""
        address = client_identity(_peer(scope))
        name = username_identity(username)
        charges: tuple[Charge, ...] = (
            self.login_pair.charge(f"{address} {name}"),
            self.login_ip.charge(address),
            self.login_username.charge(name),
        )
        await self.charge(
            scope, (self.client.charge(address), *charges) if with_client else charges
        )

    async def charge(
        self, scope: Scope, charges: tuple[Charge, ...], *, lease: bool = False
    ) -> None:
        """Every window of these charges in one script call (or from this worker's lease for
        them: service/ratelimit/limiter.py); 429 if one of them is full (and then none is
        charged)."""
        keys, args = _script_input(charges)
        reply = await self.limiter.run(keys, args, lease=lease)
        if reply is None:
            return
        if self.headers_enabled:
            quota: Quota = scope.get(SCOPE_KEY) or scope.setdefault(SCOPE_KEY, Quota())
            quota.add(charges, reply)
        if not reply[0]:
            raise self._too_many(charges, reply)

    # --- helpers ---------------------------------------------------------------------------

    def _principal_budget(self, principal: Principal) -> Charge | str:
        if principal.exempt:
            return EXEMPT
        if principal.api_key_id is None:
            return self.user.charge(str(principal.user.id))
        limit = principal.rate_limit or self.key_default
        policy = self._key_policies.get(limit)
        if policy is None:
            policy = self._key_policies[limit] = Policy("key", limit, self.prefix)
        return policy.charge(str(principal.api_key_id))

    def _remember(self, digest: bytes, budget: Charge | str) -> None:
        if not digest or not self._known_max:
            return
        if len(self._known) >= self._known_max and digest not in self._known:
            del self._known[next(iter(self._known))]  # the oldest entry
        self._known[digest] = budget

    @staticmethod
    def _too_many(charges: tuple[Charge, ...], reply: list[int]) -> TooManyRequests:
        full, wait, at = [], 0, 1
        for charge in charges:
            for item in charge.policy.items:
                if reply[at + 2] > 0:
                    full.append(item.strip('"'))
                    wait = max(wait, reply[at + 2])
                at += 3
        retry_after = max(1, math.ceil(wait / MICROS))
        return TooManyRequests(
            f"Rate limit exceeded ({', '.join(full)}); retry after {retry_after} s.",
            headers={"Retry-After": str(retry_after)},
        )


@lru_cache(maxsize=8192)
def _script_input(charges: tuple[Charge, ...]) -> tuple[tuple[str, ...], tuple[int, ...]]:
    # The same callers' charges come back request after request (Charge objects are cached).
    keys = tuple(key for charge in charges for key in charge.keys)
    return keys, tuple(n for charge in charges for n in charge.policy.args)


def _peer(scope: Scope) -> str:
    # The socket's peer, or the client a trusted proxy named (main.py's ProxyHeadersMiddleware).
    client = scope.get("client")
    return client[0] if client else "unknown"


def _digest(credential: str) -> bytes:
    # What the worker remembers of a credential: never the credential itself.
    return hashlib.blake2b(credential.encode(), digest_size=16).digest()


def _bearer_token(authorization: str | None) -> str | None:
    # As OAuth2PasswordBearer reads it: "Bearer <token>", the scheme in any case.
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    return token if scheme.lower() == "bearer" and token else None
