from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.security import OAuth2PasswordRequestForm

from service.auth import service as auth_service
from service.auth.dependencies import HasherDep, IssuerDep
from service.auth.schemas import TokenOut
from service.frontdoor import client_budget, login_budget
from service.kit.database import sessions_of

router = APIRouter(tags=["auth"])

# RFC 6749 §5.1: a response carrying a token must not be stored by any cache.
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


@router.post(
    "/api/v1/auth/token",
    response_model=TokenOut,
    dependencies=[Depends(login_budget)],
    responses={401: {"description": "Wrong email or password"}, 429: {"description": "Too many"}},
)
async def issue_token(
    request: Request,
    response: Response,
    form: Annotated[OAuth2PasswordRequestForm, Depends()],
    hasher: HasherDep,
    issuer: IssuerDep,
) -> TokenOut:
    """OAuth2 password flow: `username` is the email."""
    response.headers.update(NO_STORE)
    token = await auth_service.login(
        sessions_of(request),
        hasher,
        issuer,
        request.app.state.settings,
        username=form.username,
        password=form.password,
    )
    return TokenOut(access_token=token, expires_in=issuer.ttl)


@router.get("/.well-known/jwks.json", dependencies=[Depends(client_budget)])
async def jwks(issuer: IssuerDep) -> dict[str, Any]:
    """Public keys of our own issuer (empty with HS256)."""
    return issuer.jwks()
