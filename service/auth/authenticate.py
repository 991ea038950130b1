"""Who is calling: a verified bearer token (ours or the IdP's) or an API key -> a Principal.

The one entry point is `authenticate`; the front door calls it once per request. Lookups run in
their own short read session (the request's session stays unbound, so a write request holds no
connection while it later hashes a password), and a verified principal is kept in a per-worker
cache for at most AUTH_CACHE_TTL_SECONDS (<= 1 s), which bounds how long a demotion, a
deactivation or a key revocation can go unseen by any worker of any pod.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import jwt
from fastapi import Request

from service.api_keys.service import verify_key
from service.auth import service as auth_service
from service.auth.cache import TtlCache, credential_key
from service.auth.jwks import OidcVerifier
from service.auth.tokens import TokenIssuer
from service.kit.database import Sessions, sessions_of
from service.kit.problems import Unauthorized
from service.settings import Settings
from service.users.models import Role, User
from service.users.repository import UserRepository
from service.users.schemas import UserRead


def _account(user: User, role: Role) -> UserRead:
    """A snapshot of the caller's users row with the role that applies: plain values, safe to
    cache and to share between requests (no ORM state, no password hash). Routes that change the
    row load it themselves."""
    return UserRead.model_validate(user).model_copy(update={"role": role})


@dataclass(frozen=True, slots=True)
class Principal:
    """The caller, with the role that applies to this request. For an API key, `user` is the
    key's own service account and `role` is capped by its creator's current role."""

    user: UserRead
    role: Role
    api_key_id: uuid.UUID | None = None
    # For API keys: the tier's limit (None: RATE_LIMIT_API_KEY_DEFAULT), or exempt.
    rate_limit: str | None = None
    exempt: bool = False

    @property
    def is_admin(self) -> bool:
        return self.role is Role.admin


PrincipalCache = TtlCache[Principal]


def create_principal_cache(settings: Settings) -> PrincipalCache:
    return TtlCache(
        ttl=settings.auth_cache_ttl_seconds, max_entries=settings.auth_cache_max_entries
    )


def _invalid_token(description: str) -> Unauthorized:
    # RFC 6750: error attributes tell the client whether a new token would help.
    return Unauthorized(
        description,
        code="auth.invalid_token",
        headers={
            "WWW-Authenticate": f'Bearer error="invalid_token", error_description="{description}"'
        },
    )


MISSING_CREDENTIALS = Unauthorized(
    "Authentication required.",
    code="auth.missing_credentials",
    headers={"WWW-Authenticate": 'Bearer realm="api"'},
)


def _active(user: User | None) -> User:
    if user is None:
        raise _invalid_token("The token's subject does not exist.")
    if not user.is_active:
        raise _invalid_token("The user is deactivated.")
    return user


async def _from_own_token(
    issuer: TokenIssuer, token: str, sessions: Sessions
) -> tuple[Principal, float]:
    claims = issuer.decode(token)
    try:
        user_id = uuid.UUID(claims["sub"])
    except ValueError:
        raise _invalid_token("The token's subject is malformed.") from None
    async with sessions.reading() as session:
        user = _active(await UserRepository(session).get_by_id(user_id))
    # The stored role, not the token's: a demotion takes effect at once.
    role = Role(user.role)
    return Principal(user=_account(user, role), role=role), float(claims["exp"])


async def _from_idp_token(
    verifier: OidcVerifier, token: str, sessions: Sessions
) -> tuple[Principal, float]:
    claims = await verifier.decode(token)
    role = Role.admin if verifier.admin_role in verifier.roles(claims) else Role.user
    subject = str(claims["sub"])
    user = await auth_service.find_idp_user(sessions, verifier.issuer, subject)
    if user is None:
        user = await auth_service.link_idp_user(sessions, verifier.issuer, claims, role)
        if user is None:
            raise _invalid_token("The identity could not be linked.")
    return Principal(user=_account(_active(user), role), role=role), float(claims["exp"])


async def _from_api_key(key: str, sessions: Sessions) -> tuple[Principal, None]:
    verified = await verify_key(sessions, key)
    principal = Principal(
        user=_account(verified.account, verified.role),
        role=verified.role,
        api_key_id=verified.key_id,
        rate_limit=verified.tier_limit,
        exempt=verified.exempt,
    )
    return principal, None


async def authenticate(request: Request, *, bearer: str | None, api_key: str | None) -> Principal:
    """The caller's Principal; Unauthorized (401, with an RFC 6750 challenge) otherwise.
    Lookups run in short sessions of their own (see the module docstring)."""
    cache: PrincipalCache = request.app.state.principal_cache
    if api_key:
        return await cache.get_or_load(
            credential_key("key", api_key), lambda: _from_api_key(api_key, sessions_of(request))
        )
    if bearer:
        return await cache.get_or_load(
            credential_key("bearer", bearer), lambda: _from_bearer(request, bearer)
        )
    raise MISSING_CREDENTIALS


async def _from_bearer(request: Request, token: str) -> tuple[Principal, float]:
    issuer: TokenIssuer = request.app.state.token_issuer
    verifier: OidcVerifier | None = request.app.state.oidc_verifier
    sessions = sessions_of(request)
    try:
        # With an IdP configured, the unverified issuer only picks the path; each path
        # verifies with its own keys and its own algorithm list.
        if verifier is not None and _claimed_issuer(token) == verifier.issuer:
            return await _from_idp_token(verifier, token, sessions)
        return await _from_own_token(issuer, token, sessions)
    except jwt.ExpiredSignatureError:
        raise _invalid_token("The token has expired.") from None
    except jwt.ImmatureSignatureError:
        raise _invalid_token("The token is not valid yet.") from None
    except (jwt.InvalidTokenError, KeyError, ValueError, TypeError):
        raise _invalid_token("The token is invalid.") from None


def _claimed_issuer(token: str) -> object:
    return jwt.decode(token, options={"verify_signature": False}).get("iss")
