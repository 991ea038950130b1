"""Limit/offset paging with a page size bounded by settings (PAGE_SIZE_MAX)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Generic, TypeVar

from fastapi import Depends, Query, Request
from pydantic import BaseModel

from service.kit.problems import invalid_field

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class PageParams:
    limit: int
    offset: int


def page_params(
    request: Request,
    limit: Annotated[
        int | None, Query(ge=1, description="Page size; at most PAGE_SIZE_MAX (default 100)")
    ] = None,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> PageParams:
    settings = request.app.state.settings
    if limit is not None and limit > settings.page_size_max:
        raise invalid_field(
            ("query", "limit"),
            f"Input should be less than or equal to {settings.page_size_max}",
            "less_than_equal",
        )
    return PageParams(limit=limit or settings.page_size_default, offset=offset)


PageDep = Annotated[PageParams, Depends(page_params)]


class PageOut(BaseModel, Generic[T]):
    items: list[T]
    total: int
    limit: int
    offset: int
