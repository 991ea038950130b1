from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.dialects import postgresql, sqlite

from service.kit.repository import Page, Repository
from service.users.models import User


class UserRepository(Repository[User]):
    model = User

    async def get_by_email(self, email: str) -> User | None:
        return await self.session.scalar(
            select(User).where(func.lower(User.email) == email.lower())
        )

    async def get_by_external(self, issuer: str, subject: str) -> User | None:
        return await self.session.scalar(
            select(User).where(User.external_issuer == issuer, User.external_subject == subject)
        )

    async def list(self, *, limit: int, offset: int) -> Page[User]:
        return await self.page(select(User), limit=limit, offset=offset)

    async def with_email_like(self, pattern: str) -> Sequence[User]:
        """Users whose lower-cased email matches the SQL LIKE ``pattern``."""
        found = await self.session.scalars(select(User).where(func.lower(User.email).like(pattern)))
        return found.all()

    async def insert_if_absent(self, **values: Any) -> None:
        """INSERT ... ON CONFLICT DO NOTHING: a clash on any unique key is no error and, unlike
        a failed INSERT, leaves a surrounding transaction usable (no savepoint needed, which an
        autocommit session could not open)."""
        dialect = postgresql if self.session.get_bind().dialect.name == "postgresql" else sqlite
        await self.session.execute(dialect.insert(User).values(**values).on_conflict_do_nothing())

    async def replace_password(self, user_id: uuid.UUID, *, expected: str, new: str) -> bool:
        """Store `new` unless the hash changed since it was read as `expected` (a concurrent
        password change wins over a re-hash of the old password)."""
        result = await self.session.execute(
            update(User)
            .where(User.id == user_id, User.hashed_password == expected)
            .values(hashed_password=new)
        )
        return bool(getattr(result, "rowcount", 0))
