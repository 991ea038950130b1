"""Authentication's rules: what a login does, and linking an identity provider's user.

Nothing here holds a pooled connection while it waits on something else: a login reads the row
in a short read session and returns the connection before Argon2 runs (or queues for a hashing
thread); a re-hash is written in a new short transaction.
"""

from __future__ import annotations

from typing import Any

from service.auth.passwords import PasswordHasher
from service.auth.tokens import TokenIssuer
from service.kit.database import Sessions
from service.kit.problems import Unauthorized
from service.settings import Settings
from service.users.models import Role, User
from service.users.repository import UserRepository

INVALID_CREDENTIALS = Unauthorized(
    "Incorrect email or password.",
    code="auth.invalid_credentials",
    headers={"WWW-Authenticate": 'Bearer realm="api"'},
)


async def login(
    sessions: Sessions,
    hasher: PasswordHasher,
    issuer: TokenIssuer,
    settings: Settings,
    *,
    username: str,
    password: str,
) -> str:
    """An access token for the email and password (the OAuth2 password flow)."""
    if len(password) > settings.password_max_length or "\x00" in username:
        raise INVALID_CREDENTIALS  # never hash an oversized input; no email holds a NUL
    async with sessions.reading() as session:
        user = await UserRepository(session).get_by_email(username)
    # Unknown email or not: one Argon2 verification either way (no user enumeration by timing).
    valid, rehashed = await hasher.verify(password, user.hashed_password if user else None)
    if user is None or not valid or not user.is_active:
        raise INVALID_CREDENTIALS
    if rehashed and user.hashed_password:  # Argon2 parameters changed since this hash was made
        async with sessions.writing() as session:
            await UserRepository(session).replace_password(
                user.id, expected=user.hashed_password, new=rehashed
            )
    return issuer.issue(str(user.id), [user.role])


async def find_idp_user(sessions: Sessions, issuer: str, subject: str) -> User | None:
    async with sessions.reading() as session:
        return await UserRepository(session).get_by_external(issuer, subject)


async def link_idp_user(
    sessions: Sessions, issuer: str, claims: dict[str, Any], role: Role
) -> User | None:
    """First sight of an IdP subject: give it a local row so it can own items, in a short write
    transaction of its own (the request may be a read). Two first requests may race (the loser
    finds the winner's row), and the email may belong to a local account (the identity is then
    linked without it)."""
    email = claims.get("email")
    subject = str(claims["sub"])
    async with sessions.writing() as session:
        users = UserRepository(session)
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
    return None
