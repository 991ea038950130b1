from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict

from service.kit.schemas import RequestModel, stored_text

Title = Annotated[str, stored_text(min_length=1, max_length=200)]
Description = Annotated[str, stored_text(max_length=10_000)]


class ItemCreate(RequestModel):
    title: Title
    description: Description = ""


class ItemUpdate(RequestModel):
    title: Title | None = None
    description: Description | None = None


class ItemRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    owner_id: uuid.UUID
    title: str
    description: str
    created_at: datetime
    updated_at: datetime
