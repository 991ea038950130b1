from __future__ import annotations

import uuid

from fastapi import APIRouter, Depends, Request

from service.auth.dependencies import HasherDep
from service.frontdoor import AdminUser, CurrentUser, front_door, spend_password_attempt
from service.kit.database import SessionDep, sessions_of
from service.kit.pagination import PageDep, PageOut
from service.users import service as user_service
from service.users.models import User
from service.users.repository import UserRepository
from service.users.schemas import MeUpdate, UserAdminUpdate, UserCreate, UserRead

router = APIRouter(
    prefix="/api/v1/users",
    tags=["users"],
    dependencies=[Depends(front_door)],
    responses={401: {"description": "Not authenticated"}, 429: {"description": "Rate limited"}},
)


@router.get("/me", response_model=UserRead)
async def read_me(principal: CurrentUser) -> UserRead:
    return principal.user


@router.patch("/me", response_model=UserRead, responses={403: {"description": "Wrong password"}})
async def update_me(
    request: Request, body: MeUpdate, principal: CurrentUser, hasher: HasherDep
) -> User:
    if body.password is not None:  # every password check spends the login budget
        await spend_password_attempt(request, principal.user.email or str(principal.user.id))
    return await user_service.update_me(
        sessions_of(request), hasher, request.app.state.settings, principal.user.id, body
    )


@router.get("", response_model=PageOut[UserRead], responses={403: {"description": "Admins only"}})
async def list_users(_: AdminUser, session: SessionDep, page: PageDep) -> object:
    return await UserRepository(session).list(limit=page.limit, offset=page.offset)


@router.post(
    "",
    response_model=UserRead,
    status_code=201,
    responses={403: {"description": "Admins only"}, 409: {"description": "Email taken"}},
)
async def create_user(
    request: Request, body: UserCreate, _: AdminUser, session: SessionDep, hasher: HasherDep
) -> User:
    return await user_service.create_user(session, hasher, request.app.state.settings, body)


@router.patch(
    "/{user_id:uuid}",
    response_model=UserRead,
    responses={403: {"description": "Admins only"}, 404: {"description": "No such user"}},
)
async def update_user(
    user_id: uuid.UUID, body: UserAdminUpdate, admin: AdminUser, session: SessionDep
) -> User:
    return await user_service.update_user(
        session, admin_id=admin.user.id, user_id=user_id, body=body
    )


@router.delete(
    "/{user_id:uuid}",
    status_code=204,
    responses={403: {"description": "Admins only"}, 404: {"description": "No such user"}},
)
async def deactivate_user(user_id: uuid.UUID, admin: AdminUser, session: SessionDep) -> None:
    """Deactivate (the row and its items stay; the user can no longer authenticate)."""
    await user_service.deactivate_user(session, admin_id=admin.user.id, user_id=user_id)
