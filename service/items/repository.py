from __future__ import annotations

import uuid

from sqlalchemy import select

from service.items.models import Item
from service.kit.repository import Page, Repository


class ItemRepository(Repository[Item]):
    model = Item

    async def get_owned(
        self, item_id: uuid.UUID, owner_id: uuid.UUID | None, *, for_update: bool = False
    ) -> Item | None:
        """The item, if it belongs to owner_id (any owner when owner_id is None); `for_update`
        locks its row until the transaction ends (a concurrent delete or edit waits, or wins)."""
        query = select(Item).where(Item.id == item_id)
        if owner_id is not None:
            query = query.where(Item.owner_id == owner_id)
        if for_update:
            query = query.with_for_update()
        return await self.session.scalar(query)

    async def list(self, *, owner_id: uuid.UUID | None, limit: int, offset: int) -> Page[Item]:
        query = select(Item)
        if owner_id is not None:
            query = query.where(Item.owner_id == owner_id)
        return await self.page(query, limit=limit, offset=offset)
