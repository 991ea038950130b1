"""Users' rules: the password policy, changing one's own password, and self-lockout.

Passwords are hashed and verified with no pooled connection held: the row is read in a short
session, Argon2 runs, then the change is written in a new short transaction.
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from service.auth.passwords import PasswordHasher
from service.kit.database import Sessions
from service.kit.problems import Conflict, Forbidden, NotFound, invalid_field
from service.settings import Settings
from service.users.models import User
from service.users.repository import UserRepository
from service.users.schemas import MeUpdate, UserAdminUpdate, UserCreate


def check_password_policy(settings: Settings, password: str) -> None:
    if not settings.password_min_length <= len(password) <= settings.password_max_length:
        raise invalid_field(
            ("body", "password"),
            f"Password length must be {settings.password_min_length} to "
            f"{settings.password_max_length} characters",
            "password_length",
        )


async def create_user(
    session: AsyncSession, hasher: PasswordHasher, settings: Settings, body: UserCreate
) -> User:
    check_password_policy(settings, body.password)
    # Hashed before the session's first statement: no connection is held while Argon2 runs.
    hashed = await hasher.hash(body.password)
    user = User(email=body.email, hashed_password=hashed, full_name=body.full_name, role=body.role)
    return await UserRepository(session).create(user)


async def update_me(
    sessions: Sessions,
    hasher: PasswordHasher,
    settings: Settings,
    user_id: uuid.UUID,
    body: MeUpdate,
) -> User:
    # null means "leave as is": every field here is NOT NULL in the table.
    changes: dict[str, Any] = body.model_dump(
        exclude_unset=True, exclude_none=True, exclude={"password", "current_password"}
    )
    expected_hash: str | None = None
    if body.password is not None:
        check_password_policy(settings, body.password)
        async with sessions.reading() as session:
            current = await UserRepository(session).get_by_id(user_id)
        expected_hash = current.hashed_password if current else None
        valid, _ = await hasher.verify(body.current_password or "", expected_hash)
        if not valid:
            raise Forbidden("The current password is wrong.", code="user.wrong_password")
        changes["hashed_password"] = await hasher.hash(body.password)
    async with sessions.writing() as session:
        users = UserRepository(session)
        user = await users.get_by_id(user_id, for_update=True)
        if user is None:
            raise NotFound("No such user.", code="user.not_found")
        if expected_hash is not None and user.hashed_password != expected_hash:
            raise Conflict("The password changed meanwhile; retry.", code="user.password_changed")
        return await users.update(user, changes)


async def _user_or_404(users: UserRepository, user_id: uuid.UUID) -> User:
    if (user := await users.get_by_id(user_id)) is None:
        raise NotFound("No such user.", code="user.not_found")
    return user


async def update_user(
    session: AsyncSession, *, admin_id: uuid.UUID, user_id: uuid.UUID, body: UserAdminUpdate
) -> User:
    users = UserRepository(session)
    user = await _user_or_404(users, user_id)
    changes = body.model_dump(exclude_unset=True, exclude_none=True)  # null: leave as is
    if user.id == admin_id and (
        changes.get("role", "admin") != "admin" or not changes.get("is_active", True)
    ):
        raise Conflict("Admins cannot demote or deactivate themselves.", code="user.self_lockout")
    return await users.update(user, changes)


async def deactivate_user(
    session: AsyncSession, *, admin_id: uuid.UUID, user_id: uuid.UUID
) -> None:
    """The row and its items stay; the user can no longer authenticate."""
    if user_id == admin_id:
        raise Conflict("Admins cannot deactivate themselves.", code="user.self_lockout")
    users = UserRepository(session)
    await users.update(await _user_or_404(users, user_id), {"is_active": False})
