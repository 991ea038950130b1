"""FastAPI wiring for the caller: `CurrentUser`, role checks, and the auth singletons."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import APIKeyHeader, OAuth2PasswordBearer

from service.auth.authenticate import Principal, authenticate
from service.auth.passwords import PasswordHasher
from service.auth.tokens import TokenIssuer
from service.kit.database import SessionDep
from service.kit.problems import Forbidden
from service.users.models import Role

# Declared for OpenAPI (Swagger's "Authorize" button); both accept a missing header so that
# get_current_user decides, and answers every failure the same way.
bearer_scheme = OAuth2PasswordBearer(tokenUrl="/api/v1/auth/token", auto_error=False)
api_key_scheme = APIKeyHeader(name="X-API-Key", auto_error=False)


async def get_current_user(
    request: Request,
    session: SessionDep,
    token: Annotated[str | None, Depends(bearer_scheme)],
    api_key: Annotated[str | None, Depends(api_key_scheme)],
) -> Principal:
    principal = await authenticate(request, session, bearer=token, api_key=api_key)
    request.state.principal = principal  # for the rate limiter and the access log
    return principal


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
