"""Tokens from an external OpenID Connect provider, verified against its JWKS.

Written on httpx rather than PyJWT's PyJWKClient because that client fetches with blocking
urllib: here every fetch is async, keys are cached for a TTL, and an unknown `kid` (key
rotation) triggers at most one re-fetch per OIDC_JWKS_MIN_REFRESH_SECONDS.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import httpx
import jwt
from jwt import PyJWK, PyJWKSet

from service.kit.problems import ServiceUnavailable
from service.settings import Settings

log = logging.getLogger("service.auth.jwks")


class UnknownKeyError(jwt.InvalidTokenError):
    pass


class JwksCache:
    def __init__(self, url: str, *, ttl: float, min_refresh: float, timeout: float) -> None:
        self.url = url
        self.ttl = ttl
        self.min_refresh = min_refresh
        self._http = httpx.AsyncClient(timeout=timeout)
        self._keys: dict[str, PyJWK] = {}
        self._fetched_at = float("-inf")
        self._attempted_at = float("-inf")
        self._unknown_kid_at = float("-inf")
        self._lock = asyncio.Lock()

    async def key(self, kid: str | None) -> PyJWK:
        now = time.monotonic()
        # Reload when the cache is stale (retrying a failed load at most once per interval, so a
        # down provider is not hammered), or once per interval for an unknown kid (rotation).
        stale = now - self._fetched_at > self.ttl and now - self._attempted_at >= self.min_refresh
        unknown = kid not in self._keys and now - self._unknown_kid_at >= self.min_refresh
        if unknown and not stale:
            self._unknown_kid_at = now
        if stale or unknown:
            await self._refresh(now)
        elif kid not in self._keys and self._lock.locked():
            # A load is in flight (the first requests after start-up, or a rotation): wait for
            # its keys instead of answering 503 or 401 from the keys of before.
            async with self._lock:
                pass
        if not self._keys:
            raise ServiceUnavailable(
                "The identity provider's keys cannot be fetched.", code="auth.provider_unavailable"
            )
        if kid is None and len(self._keys) == 1:
            return next(iter(self._keys.values()))
        if kid is None or kid not in self._keys:
            raise UnknownKeyError("unknown signing key")
        return self._keys[kid]

    async def _refresh(self, requested_at: float) -> None:
        async with self._lock:
            if self._attempted_at >= requested_at:  # another request refreshed meanwhile
                return
            self._attempted_at = time.monotonic()
            try:
                response = await self._http.get(self.url)
                response.raise_for_status()
                keyset = PyJWKSet.from_dict(response.json())
            except (httpx.HTTPError, ValueError, jwt.PyJWKSetError) as exc:
                # Keep serving with the keys we have; key() answers 503 when there are none.
                log.warning("JWKS fetch failed: %s", type(exc).__name__)
                return
            self._keys = {k.key_id: k for k in keyset.keys if k.key_id}
            self._fetched_at = time.monotonic()

    async def aclose(self) -> None:
        await self._http.aclose()


# Claims only ID tokens carry (OpenID Connect Core §2, §3.1.3.6, §3.3.2.11); Keycloak put
# `nonce` in access tokens before release 25 (keycloak/keycloak#26893). `auth_time` is not
# among them: RFC 9068 §2.2.1 allows it in access tokens, and Okta's carry it.
ID_TOKEN_CLAIMS = ("nonce", "at_hash", "c_hash")
# A back-channel logout token's mark (OpenID Connect Back-Channel Logout §2.4).
LOGOUT_EVENTS_CLAIM = "events"


def token_type(header: dict[str, Any]) -> str:
    """The JOSE `typ`, normalised (RFC 7515 §4.1.9: "application/" may be omitted, compared
    case-insensitively); "jwt" when absent."""
    typ = header.get("typ")
    return str(typ).lower().removeprefix("application/") if typ is not None else "jwt"


class OidcVerifier:
    def __init__(self, settings: Settings) -> None:
        # Settings validated that all three are set together.
        assert settings.oidc_jwks_url
        assert settings.oidc_issuer
        assert settings.oidc_audience
        self.issuer = settings.oidc_issuer
        self.audience = settings.oidc_audience
        self.algorithms = settings.oidc_algorithms
        self.leeway = settings.jwt_leeway_seconds
        self.roles_claim = settings.oidc_roles_claim
        self.admin_role = settings.oidc_admin_role
        self.token_types = frozenset(settings.oidc_token_types)
        self.keys = JwksCache(
            settings.oidc_jwks_url,
            ttl=settings.oidc_jwks_cache_ttl_seconds,
            min_refresh=settings.oidc_jwks_min_refresh_seconds,
            timeout=settings.oidc_http_timeout,
        )

    async def decode(self, token: str) -> dict[str, Any]:
        header = jwt.get_unverified_header(token)
        if header.get("alg") not in self.algorithms:
            raise jwt.InvalidAlgorithmError("algorithm not allowed")
        # An ID token or a logout token signed by the same keys for the same audience is not
        # an access token: only the configured types pass (RFC 8725 §3.11, RFC 9068 §4).
        typ = token_type(header)
        if typ not in self.token_types:
            raise jwt.InvalidTokenError("token type not accepted")
        key = await self.keys.key(header.get("kid"))
        claims: dict[str, Any] = jwt.decode(
            token,
            key,
            algorithms=self.algorithms,
            audience=self.audience,
            issuer=self.issuer,
            leeway=self.leeway,
            options={"require": ["exp", "iss", "aud", "sub"]},
        )
        if typ == "jwt" and any(c in claims for c in (*ID_TOKEN_CLAIMS, LOGOUT_EVENTS_CLAIM)):
            raise jwt.InvalidTokenError("an ID or logout token is not an access token")
        return claims

    def roles(self, claims: dict[str, Any]) -> set[str]:
        """The roles at the configured claim path: a list, or a space-separated string."""
        value: Any = claims
        for part in self.roles_claim.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        if isinstance(value, str):
            return set(value.split())
        if isinstance(value, list):
            return {str(v) for v in value}
        return set()
