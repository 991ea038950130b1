"""What routes declare: one dependency for the front door (admin routes one more), the login
budget of the token endpoint, the client budget of anonymous routes, and the call that spends
the login budget before any other password check."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import OAuth2PasswordRequestForm

from service.auth.authenticate import Principal
from service.frontdoor.door import FrontDoor
from service.kit.problems import Forbidden
from service.users.models import Role


def _door(request: Request) -> FrontDoor:
    door: FrontDoor = request.app.state.frontdoor
    return door


async def front_door(request: Request) -> Principal:
    """Client budget -> authentication -> the principal's limits (frontdoor/door.py). It opens
    no request session: authentication uses short sessions of its own."""
    return await _door(request).admit(request)


CurrentUser = Annotated[Principal, Depends(front_door)]


def require_role(*roles: Role) -> Callable[[Principal], Awaitable[Principal]]:
    """A dependency admitting only the given roles (403 for anyone else). It runs after the
    front door, so a 403 has spent its budget like any other answer."""

    async def check(principal: CurrentUser) -> Principal:
        if principal.role not in roles:
            raise Forbidden("This needs the role: " + " or ".join(roles), code="auth.role_required")
        return principal

    return check


require_admin = require_role(Role.admin)
AdminUser = Annotated[Principal, Depends(require_admin)]


async def login_budget(
    request: Request, form: Annotated[OAuth2PasswordRequestForm, Depends()]
) -> None:
    """The token endpoint's pass: client budget and login budget, one call, before the
    password is checked."""
    await _door(request).charge_login(request.scope, form.username, with_client=True)


async def client_budget(request: Request) -> None:
    """Anonymous routes' pass: the client budget."""
    await _door(request).charge_client(request.scope)


async def spend_password_attempt(request: Request, username: str) -> None:
    """Charge the login budget for a password check outside the token endpoint (e.g. PATCH
    /users/me with current_password): call it before verifying. 429 once it is spent."""
    await _door(request).charge_login(request.scope, username, with_client=False)
