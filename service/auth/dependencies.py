"""Who is calling: `get_current_user` (bearer token or API key) and role checks."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any

import jwt
from fastapi import Depends, Request
from fastapi.security import APIKeyHeader, OAuth2PasswordBearer
from sqlalchemy.ext.asyncio import AsyncSession

from service.api_keys import secrets as key_secrets
from service.api_keys.repository import ApiKeyRepository
from service.auth.jwks import OidcVerifier
from service.auth.passwords import PasswordHasher
from service.auth.tokens import TokenIssuer
from service.kit.database import SessionDep
from service.kit.problems import Forbidden, Unauthorized
from service.settings import EXEMPT_TIER
from service.users.models import Role, User
from service.users.repository import UserRepository

# Declared for OpenAPI (Swagger's "Authorize" button); both accept a missing header so that
# get_current_user decides, and answers every failure the same way.
bearer_scheme = OAuth2PasswordBearer(tokenUrl="/api/v1/auth/token", auto_error=False)
api_key_scheme = APIKeyHeader(name="X-API-Key", auto_error=False)


@dataclass(frozen=True, slots=True)
class Principal:
    """The caller: a user, with the role that applies to this request."""

    user: User
    role: Role
    api_key_id: uuid.UUID | None = None
    # For API keys: the tier's limit (None: RATE_LIMIT_API_KEY_DEFAULT), or exempt.
    rate_limit: str | None = None
    exempt: bool = False

    @property
    def is_admin(self) -> bool:
        return self.role is Role.admin


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


async def _from_own_token(issuer: TokenIssuer, token: str, users: UserRepository) -> Principal:
    claims = issuer.decode(token)
    try:
        user_id = uuid.UUID(claims["sub"])
    except ValueError:
        raise _invalid_token("The token's subject is malformed.") from None
    user = _active(await users.get_by_id(user_id))
    # The stored role, not the token's: a demotion takes effect at once.
    return Principal(user=user, role=Role(user.role))


async def _from_idp_token(verifier: OidcVerifier, token: str, users: UserRepository) -> Principal:
    claims = await verifier.decode(token)
    role = Role.admin if verifier.admin_role in verifier.roles(claims) else Role.user
    user = await users.get_by_external(verifier.issuer, str(claims["sub"]))
    if user is None:
        user = await _link_idp_user(users, verifier.issuer, claims, role)
    return Principal(user=_active(user), role=role)


async def _link_idp_user(
    users: UserRepository, issuer: str, claims: dict[str, Any], role: Role
) -> User:
    """First sight of an IdP subject: give it a local row so it can own items. Two first
    requests may race (the loser finds the winner's row), and the email may belong to a local
    account (the identity is then linked without it)."""
    email = claims.get("email")
    subject = str(claims["sub"])
    for candidate_email in (email.lower() if isinstance(email, str) else None, None):
        await users.insert_if_absent(
            email=candidate_email,
            external_issuer=issuer,
            external_subject=subject,
            full_name=str(claims.get("name", ""))[:200],
            role=role,
        )
        if found := await users.get_by_external(issuer, subject):
            return found
    raise _invalid_token("The identity could not be linked.")


async def _from_api_key(key: str, session: AsyncSession) -> Principal:
    parts = key_secrets.split_key(key)
    found = await ApiKeyRepository(session).find_for_auth(parts[0]) if parts else None
    if not (parts and found and key_secrets.secret_matches(parts[1], found[0].secret_hash)):
        raise Unauthorized("The API key is not valid.", code="auth.invalid_api_key")
    api_key, owner, tier_limit = found
    if api_key.revoked_at is not None:
        raise Unauthorized("The API key has been revoked.", code="auth.revoked_api_key")
    if not owner.is_active:
        raise Unauthorized("The API key's owner is deactivated.", code="auth.invalid_api_key")
    return Principal(
        user=owner,
        role=Role(api_key.role),
        api_key_id=api_key.id,
        rate_limit=tier_limit,
        exempt=api_key.tier == EXEMPT_TIER,
    )


async def get_current_user(
    request: Request,
    session: SessionDep,
    token: Annotated[str | None, Depends(bearer_scheme)],
    api_key: Annotated[str | None, Depends(api_key_scheme)],
) -> Principal:
    if api_key:
        principal = await _from_api_key(api_key, session)
    elif token:
        principal = await _from_bearer(request, token, UserRepository(session))
    else:
        raise MISSING_CREDENTIALS
    request.state.principal = principal  # for the rate limiter and the access log
    return principal


async def _from_bearer(request: Request, token: str, users: UserRepository) -> Principal:
    issuer: TokenIssuer = request.app.state.token_issuer
    verifier: OidcVerifier | None = request.app.state.oidc_verifier
    try:
        # With an IdP configured, the unverified issuer only picks the path; each path
        # verifies with its own keys and its own algorithm list.
        if verifier is not None and _claimed_issuer(token) == verifier.issuer:
            return await _from_idp_token(verifier, token, users)
        return await _from_own_token(issuer, token, users)
    except jwt.ExpiredSignatureError:
        raise _invalid_token("The token has expired.") from None
    except jwt.ImmatureSignatureError:
        raise _invalid_token("The token is not valid yet.") from None
    except (jwt.InvalidTokenError, KeyError, ValueError):
        raise _invalid_token("The token is invalid.") from None


def _claimed_issuer(token: str) -> object:
    return jwt.decode(token, options={"verify_signature": False}).get("iss")


CurrentUser = Annotated[Principal, Depends(get_current_user)]


def require_role(*roles: Role) -> Callable[[Principal], Awaitable[Principal]]:
    """A dependency admitting only the given roles (403 for anyone else)."""

    async def check(principal: CurrentUser) -> Principal:
        if principal.role not in roles:
            raise Forbidden("This needs the role: " + " or ".join(roles), code="auth.role_required")
        return principal

    return check


require_admin = require_role(Role.admin)
AdminUser = Annotated[Principal, Depends(require_admin)]


def get_hasher(request: Request) -> PasswordHasher:
    hasher: PasswordHasher = request.app.state.hasher
    return hasher


def get_token_issuer(request: Request) -> TokenIssuer:
    issuer: TokenIssuer = request.app.state.token_issuer
    return issuer


HasherDep = Annotated[PasswordHasher, Depends(get_hasher)]
IssuerDep = Annotated[TokenIssuer, Depends(get_token_issuer)]
