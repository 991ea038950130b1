from __future__ import annotations

from sqlalchemy import select

from service.api_keys.models import ApiKey, RateLimitTier
from service.kit.repository import Page, Repository
from service.users.models import User


class ApiKeyRepository(Repository[ApiKey]):
    model = ApiKey

    async def find_for_auth(self, prefix: str) -> tuple[ApiKey, User, str | None] | None:
        """The key, its creator, and its tier's limit (None when the tier is not a stored one),
        in one query: this runs on every API-key request."""
        row = (
            await self.session.execute(
                select(ApiKey, User, RateLimitTier.limit)
                .join(User, ApiKey.created_by_id == User.id)
                .outerjoin(RateLimitTier, RateLimitTier.name == ApiKey.tier)
                .where(ApiKey.prefix == prefix)
            )
        ).first()
        return (row[0], row[1], row[2]) if row else None

    async def get_by_prefix(self, prefix: str) -> ApiKey | None:
        return await self.session.scalar(select(ApiKey).where(ApiKey.prefix == prefix))

    async def list(self, *, limit: int, offset: int) -> Page[ApiKey]:
        return await self.page(select(ApiKey), limit=limit, offset=offset)


class TierRepository(Repository[RateLimitTier]):
    model = RateLimitTier

    async def get_by_name(self, name: str) -> RateLimitTier | None:
        return await self.session.scalar(select(RateLimitTier).where(RateLimitTier.name == name))

    async def list(self, *, limit: int, offset: int) -> Page[RateLimitTier]:
        return await self.page(select(RateLimitTier), limit=limit, offset=offset)
