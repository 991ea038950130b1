from __future__ import annotations

import uuid

from fastapi import APIRouter, Depends, Request

from service.auth.dependencies import HasherDep
from service.frontdoor import AdminUser, CurrentUser, front_door, spend_password_attempt
from service.kit.database import SessionDep
from service.kit.pagination import PageDep, PageOut
from service.kit.problems import Conflict, Forbidden, NotFound, invalid_field
from service.settings import Settings
from service.users.models import User
from service.users.repository import UserRepository
from service.users.schemas import MeUpdate, UserAdminUpdate, UserCreate, UserRead

router = APIRouter(
    prefix="/api/v1/users",
    tags=["users"],
    dependencies=[Depends(front_door)],
    responses={401: {"description": "Not authenticated"}, 429: {"description": "Rate limited"}},
)


def check_password_policy(settings: Settings, password: str) -> None:
    if not settings.password_min_length <= len(password) <= settings.password_max_length:
        raise invalid_field(
            ("body", "password"),
            f"Password length must be {settings.password_min_length} to "
            f"{settings.password_max_length} characters",
            "password_length",
        )


@router.get("/me", response_model=UserRead)
async def read_me(principal: CurrentUser) -> User:
    return principal.user


@router.patch("/me", response_model=UserRead, responses={403: {"description": "Wrong password"}})
async def update_me(
    request: Request, body: MeUpdate, principal: CurrentUser, session: SessionDep, hasher: HasherDep
) -> User:
    changes = body.model_dump(exclude_unset=True, exclude={"password", "current_password"})
    if body.password is not None:
        check_password_policy(request.app.state.settings, body.password)
        await spend_password_attempt(request, principal.user.email or str(principal.user.id))
        valid, _ = await hasher.verify(body.current_password or "", principal.user.hashed_password)
        if not valid:
            raise Forbidden("The current password is wrong.", code="user.wrong_password")
        changes["hashed_password"] = await hasher.hash(body.password)
    return await UserRepository(session).update(principal.user, changes)


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
    check_password_policy(request.app.state.settings, body.password)
    user = User(
        email=body.email,
        hashed_password=await hasher.hash(body.password),
        full_name=body.full_name,
        role=body.role,
    )
    return await UserRepository(session).create(user)


async def _user_or_404(users: UserRepository, user_id: uuid.UUID) -> User:
    if (user := await users.get_by_id(user_id)) is None:
        raise NotFound("No such user.", code="user.not_found")
    return user


@router.patch(
    "/{user_id:uuid}",
    response_model=UserRead,
    responses={403: {"description": "Admins only"}, 404: {"description": "No such user"}},
)
async def update_user(
    user_id: uuid.UUID, body: UserAdminUpdate, admin: AdminUser, session: SessionDep
) -> User:
    users = UserRepository(session)
    user = await _user_or_404(users, user_id)
    changes = body.model_dump(exclude_unset=True)
    if user.id == admin.user.id and (
        changes.get("role", "admin") != "admin" or not changes.get("is_active", True)
    ):
        raise Conflict("Admins cannot demote or deactivate themselves.", code="user.self_lockout")
    return await users.update(user, changes)


@router.delete(
    "/{user_id:uuid}",
    status_code=204,
    responses={403: {"description": "Admins only"}, 404: {"description": "No such user"}},
)
async def deactivate_user(user_id: uuid.UUID, admin: AdminUser, session: SessionDep) -> None:
    """Deactivate (the row and its items stay; the user can no longer authenticate)."""
    if user_id == admin.user.id:
        raise Conflict("Admins cannot deactivate themselves.", code="user.self_lockout")
    users = UserRepository(session)
    await users.update(await _user_or_404(users, user_id), {"is_active": False})
