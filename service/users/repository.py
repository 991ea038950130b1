from __future__ import annotations

from sqlalchemy import func, select

from service.db import Page, Repository
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
