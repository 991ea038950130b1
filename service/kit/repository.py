"""The generic repository: statement-based queries for one model; flushes, never commits."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from sqlalchemy import Select, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from service.kit.models import TimestampedModel

ModelT = TypeVar("ModelT", bound=TimestampedModel)


@dataclass(frozen=True, slots=True)
class Page(Generic[ModelT]):
    items: Sequence[ModelT]
    total: int
    limit: int
    offset: int


class Repository(Generic[ModelT]):
    """Queries for one model. Flushes so ids and constraints are checked early; never commits
    (the session dependency owns the transaction)."""

    model: type[ModelT]

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get_by_id(self, id_: uuid.UUID, *, for_update: bool = False) -> ModelT | None:
        return await self.session.get(self.model, id_, with_for_update=for_update or None)

    async def create(self, obj: ModelT) -> ModelT:
        self.session.add(obj)
        await self.session.flush()
        return obj

    async def update(self, obj: ModelT, changes: dict[str, Any]) -> ModelT:
        for name, value in changes.items():
            setattr(obj, name, value)
        await self.session.flush()
        return obj

    async def delete(self, obj: ModelT) -> None:
        await self.session.delete(obj)
        await self.session.flush()

    async def page(self, query: Select[ModelT], *, limit: int, offset: int) -> Page[ModelT]:
        total = await self.session.scalar(select(func.count()).select_from(query.subquery()))
        rows = await self.session.scalars(
            query.order_by(self.model.created_at.desc(), self.model.id).limit(limit).offset(offset)
        )
        return Page(items=rows.all(), total=total or 0, limit=limit, offset=offset)
