from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.orm import aliased

from service.api_keys.models import ApiKey, RateLimitTier
from service.kit.repository import Page, Repository
from service.users.models import User


@dataclass(frozen=True, slots=True)
class KeyForAuth:
    key: ApiKey
    creator: User
    account: User | None  # the key's own service account (None: not linked yet)
    tier_limit: str | None  # None when the tier is not a stored one


class ApiKeyRepository(Repository[ApiKey]):
    model = ApiKey

    async def find_for_auth(self, prefix: str) -> KeyForAuth | None:
        """The key, its creator, its service account and its tier's limit, in one query: this
        runs on every API-key request the principal cache misses."""
        account = aliased(User)
        row = (
            await self.session.execute(
                select(ApiKey, User, account, RateLimitTier.limit)
                .join(User, ApiKey.created_by_id == User.id)
                .outerjoin(account, ApiKey.service_user_id == account.id)
                .outerjoin(RateLimitTier, RateLimitTier.name == ApiKey.tier)
                .where(ApiKey.prefix == prefix)
            )
        ).first()
        return KeyForAuth(row[0], row[1], row[2], row[3]) if row else None

    async def link_account(self, key_id: uuid.UUID, account_id: uuid.UUID) -> None:
        """Set the key's service account unless one is set already (idempotent)."""
        await self.session.execute(
            update(ApiKey)
            .where(ApiKey.id == key_id, ApiKey.service_user_id.is_(None))
            .values(service_user_id=account_id)
        )

    async def get_by_prefix(self, prefix: str) -> ApiKey | None:
        return await self.session.scalar(select(ApiKey).where(ApiKey.prefix == prefix))

    async def list(self, *, limit: int, offset: int) -> Page[ApiKey]:
        return await self.page(select(ApiKey), limit=limit, offset=offset)

    async def live_created_by(self, creator_ids: Sequence[uuid.UUID]) -> Sequence[ApiKey]:
        """The keys these users minted that are not revoked."""
        if not creator_ids:
            return []
        found = await self.session.scalars(
            select(ApiKey).where(ApiKey.created_by_id.in_(creator_ids), ApiKey.revoked_at.is_(None))
        )
        return found.all()


class TierRepository(Repository[RateLimitTier]):
    model = RateLimitTier

    async def get_by_name(self, name: str) -> RateLimitTier | None:
        return await self.session.scalar(select(RateLimitTier).where(RateLimitTier.name == name))

    async def list(self, *, limit: int, offset: int) -> Page[RateLimitTier]:
        return await self.page(select(RateLimitTier), limit=limit, offset=offset)
