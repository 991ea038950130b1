"""Items' rules: whose items a caller may see and touch.

A user sees their own items; an admin sees anyone's. An API key is a caller of its own (its
service account): it sees the items it created, or anyone's when its effective role is admin.
"""

from __future__ import annotations

import uuid

from sqlalchemy.ext.asyncio import AsyncSession

from service.auth.authenticate import Principal
from service.items.models import Item
from service.items.repository import ItemRepository
from service.items.schemas import ItemCreate, ItemUpdate
from service.kit.problems import Forbidden, NotFound
from service.kit.repository import Page


def _visible_owner(principal: Principal) -> uuid.UUID | None:
    """Whose items this caller may touch: their own; admins, anyone's (None)."""
    return None if principal.is_admin else principal.user.id


async def _item_or_404(
    items: ItemRepository, item_id: uuid.UUID, principal: Principal, *, for_update: bool = False
) -> Item:
    # Another user's item is a 404, not a 403: its existence is not revealed.
    owner = _visible_owner(principal)
    if (item := await items.get_owned(item_id, owner, for_update=for_update)) is None:
        raise NotFound("No such item.", code="item.not_found")
    return item


async def create(session: AsyncSession, principal: Principal, body: ItemCreate) -> Item:
    return await ItemRepository(session).create(
        Item(owner_id=principal.user.id, **body.model_dump())
    )


async def list_visible(
    session: AsyncSession,
    principal: Principal,
    *,
    owner_id: uuid.UUID | None,
    all_owners: bool,
    limit: int,
    offset: int,
) -> Page[Item]:
    if (owner_id is not None or all_owners) and not principal.is_admin:
        raise Forbidden("Only admins may list other users' items.", code="auth.role_required")
    owner = owner_id if owner_id is not None else (None if all_owners else principal.user.id)
    return await ItemRepository(session).list(owner_id=owner, limit=limit, offset=offset)


async def get(session: AsyncSession, principal: Principal, item_id: uuid.UUID) -> Item:
    return await _item_or_404(ItemRepository(session), item_id, principal)


async def update(
    session: AsyncSession, principal: Principal, item_id: uuid.UUID, body: ItemUpdate
) -> Item:
    items = ItemRepository(session)
    # Locked: a DELETE committed between this read and the UPDATE would leave nothing to update.
    item = await _item_or_404(items, item_id, principal, for_update=True)
    return await items.update(item, body.model_dump(exclude_unset=True, exclude_none=True))


async def delete(session: AsyncSession, principal: Principal, item_id: uuid.UUID) -> None:
    items = ItemRepository(session)
    await items.delete(await _item_or_404(items, item_id, principal, for_update=True))
