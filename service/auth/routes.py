from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.security import OAuth2PasswordRequestForm

from service.auth.dependencies import HasherDep, IssuerDep
from service.auth.schemas import TokenOut
from service.frontdoor import client_budget, login_budget
from service.kit.database import SessionDep
from service.kit.problems import Unauthorized
from service.users.repository import UserRepository

router = APIRouter(tags=["auth"])

INVALID_CREDENTIALS = Unauthorized(
    "Incorrect email or password.",
    code="auth.invalid_credentials",
    headers={"WWW-Authenticate": 'Bearer realm="api"'},
)


@router.post(
    "/api/v1/auth/token",
    response_model=TokenOut,
    dependencies=[Depends(login_budget)],
    responses={401: {"description": "Wrong email or password"}, 429: {"description": "Too many"}},
)
async def issue_token(
    request: Request,
    form: Annotated[OAuth2PasswordRequestForm, Depends()],
    session: SessionDep,
    hasher: HasherDep,
    issuer: IssuerDep,
) -> TokenOut:
    """OAuth2 password flow: `username` is the email."""
    settings = request.app.state.settings
    if len(form.password) > settings.password_max_length or "\x00" in form.username:
        raise INVALID_CREDENTIALS  # never hash an oversized input; no email holds a NUL
    users = UserRepository(session)
    user = await users.get_by_email(form.username)
    # Unknown email or not: one Argon2 verification either way (no user enumeration by timing).
    valid, rehashed = await hasher.verify(form.password, user.hashed_password if user else None)
    if user is None or not valid or not user.is_active:
        raise INVALID_CREDENTIALS
    if rehashed:  # Argon2 parameters changed since this hash was made
        await users.update(user, {"hashed_password": rehashed})
    token = issuer.issue(str(user.id), [user.role])
    return TokenOut(access_token=token, expires_in=issuer.ttl)


@router.get("/.well-known/jwks.json", dependencies=[Depends(client_budget)])
async def jwks(issuer: IssuerDep) -> dict[str, Any]:
    """Public keys of our own issuer (empty with HS256)."""
    return issuer.jwks()
