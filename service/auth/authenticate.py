"""Who is calling: a verified bearer token (ours or the IdP's) or an API key -> a Principal.

The one entry point is `authenticate`; the front door calls it once per request.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import jwt
from fastapi import Request
from sqlalchemy.ext.asyncio import AsyncSession

from service.api_keys import secrets as key_secrets
from service.api_keys.repository import ApiKeyRepository
from service.auth.jwks import OidcVerifier
from service.auth.tokens import TokenIssuer
from service.kit.problems import Unauthorized
from service.settings import EXEMPT_TIER
from service.users.models import Role, User
from service.users.repository import UserRepository


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


async def authenticate(
    request: Request, session: AsyncSession, *, bearer: str | None, api_key: str | None
) -> Principal:
    """The caller's Principal; Unauthorized (401, with an RFC 6750 challenge) otherwise."""
    if api_key:
        return await _from_api_key(api_key, session)
    if bearer:
        return await _from_bearer(request, bearer, UserRepository(session))
    raise MISSING_CREDENTIALS


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
