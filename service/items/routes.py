from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query

from service.frontdoor import CurrentUser, front_door
from service.items import service as item_service
from service.items.models import Item
from service.items.schemas import ItemCreate, ItemRead, ItemUpdate
from service.kit.database import SessionDep
from service.kit.pagination import PageDep, PageOut

router = APIRouter(
    prefix="/api/v1/items",
    tags=["items"],
    dependencies=[Depends(front_door)],
    responses={401: {"description": "Not authenticated"}, 429: {"description": "Rate limited"}},
)
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"description": "No such item (or not yours)"}}


@router.post("", response_model=ItemRead, status_code=201)
async def create_item(body: ItemCreate, principal: CurrentUser, session: SessionDep) -> Item:
    return await item_service.create(session, principal, body)


@router.get("", response_model=PageOut[ItemRead], responses={403: {"description": "Admins only"}})
async def list_items(
    principal: CurrentUser,
    session: SessionDep,
    page: PageDep,
    owner_id: Annotated[uuid.UUID | None, Query(description="Admins only: whose items")] = None,
    all_owners: Annotated[bool, Query(alias="all", description="Admins only: everyone's")] = False,
) -> object:
    """Your items; admins may list everyone's (`all=true`) or one owner's (`owner_id`). An API
    key's items are its own service account's."""
    return await item_service.list_visible(
        session,
        principal,
        owner_id=owner_id,
        all_owners=all_owners,
        limit=page.limit,
        offset=page.offset,
    )


@router.get("/{item_id:uuid}", response_model=ItemRead, responses=NOT_FOUND)
async def read_item(item_id: uuid.UUID, principal: CurrentUser, session: SessionDep) -> Item:
    return await item_service.get(session, principal, item_id)


@router.patch("/{item_id:uuid}", response_model=ItemRead, responses=NOT_FOUND)
async def update_item(
    item_id: uuid.UUID, body: ItemUpdate, principal: CurrentUser, session: SessionDep
) -> Item:
    return await item_service.update(session, principal, item_id, body)


@router.delete("/{item_id:uuid}", status_code=204, responses=NOT_FOUND)
async def delete_item(item_id: uuid.UUID, principal: CurrentUser, session: SessionDep) -> None:
    await item_service.delete(session, principal, item_id)
