from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query

from service.auth.authenticate import Principal
from service.frontdoor import CurrentUser, front_door
from service.items.models import Item
from service.items.repository import ItemRepository
from service.items.schemas import ItemCreate, ItemRead, ItemUpdate
from service.kit.database import SessionDep
from service.kit.pagination import PageDep, PageOut
from service.kit.problems import Forbidden, NotFound

router = APIRouter(
    prefix="/api/v1/items",
    tags=["items"],
    dependencies=[Depends(front_door)],
    responses={401: {"description": "Not authenticated"}, 429: {"description": "Rate limited"}},
)
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"description": "No such item (or not yours)"}}


def _visible_owner(principal: Principal) -> uuid.UUID | None:
    """Whose items this caller may touch: their own; admins, anyone's (None)."""
    return None if principal.is_admin else principal.user.id


async def _item_or_404(items: ItemRepository, item_id: uuid.UUID, principal: Principal) -> Item:
    # Another user's item is a 404, not a 403: its existence is not revealed.
    if (item := await items.get_owned(item_id, _visible_owner(principal))) is None:
        raise NotFound("No such item.", code="item.not_found")
    return item


@router.post("", response_model=ItemRead, status_code=201)
async def create_item(body: ItemCreate, principal: CurrentUser, session: SessionDep) -> Item:
    item = Item(owner_id=principal.user.id, **body.model_dump())
    return await ItemRepository(session).create(item)


@router.get("", response_model=PageOut[ItemRead], responses={403: {"description": "Admins only"}})
async def list_items(
    principal: CurrentUser,
    session: SessionDep,
    page: PageDep,
    owner_id: Annotated[uuid.UUID | None, Query(description="Admins only: whose items")] = None,
    all_owners: Annotated[bool, Query(alias="all", description="Admins only: everyone's")] = False,
) -> object:
    """Your items; admins may list everyone's (`all=true`) or one owner's (`owner_id`)."""
    if (owner_id is not None or all_owners) and not principal.is_admin:
        raise Forbidden("Only admins may list other users' items.", code="auth.role_required")
    owner = owner_id if owner_id is not None else (None if all_owners else principal.user.id)
    return await ItemRepository(session).list(owner_id=owner, limit=page.limit, offset=page.offset)


@router.get("/{item_id:uuid}", response_model=ItemRead, responses=NOT_FOUND)
async def read_item(item_id: uuid.UUID, principal: CurrentUser, session: SessionDep) -> Item:
    return await _item_or_404(ItemRepository(session), item_id, principal)


@router.patch("/{item_id:uuid}", response_model=ItemRead, responses=NOT_FOUND)
async def update_item(
    item_id: uuid.UUID, body: ItemUpdate, principal: CurrentUser, session: SessionDep
) -> Item:
    items = ItemRepository(session)
    item = await _item_or_404(items, item_id, principal)
    return await items.update(item, body.model_dump(exclude_unset=True, exclude_none=True))


@router.delete("/{item_id:uuid}", status_code=204, responses=NOT_FOUND)
async def delete_item(item_id: uuid.UUID, principal: CurrentUser, session: SessionDep) -> None:
    items = ItemRepository(session)
    await items.delete(await _item_or_404(items, item_id, principal))
