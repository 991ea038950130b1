from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from limits import parse_many
from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from service.kit.schemas import RequestModel, stored_text
from service.settings import EXEMPT_TIER
from service.users.models import Role


def _valid_limit(value: str) -> str:
    try:
        parse_many(value)
    except ValueError as exc:
        raise ValueError("not a rate limit such as '100/minute' or '10/second;500/hour'") from exc
    return value


TierName = Annotated[str, Field(min_length=1, max_length=50, pattern=r"^[a-z0-9][a-z0-9_-]*$")]
# The `limits` notation ("10/minute", "5 per second;100/hour"), so the schema says what the
# server accepts; _valid_limit still parses it with the library itself.
_UNIT = r"(second|minute|hour|day|month|year)s?"
_ONE_LIMIT = rf"\s*[1-9][0-9]{{0,8}}\s*(/|per)\s*([1-9][0-9]{{0,5}}\s*)?{_UNIT}\s*"
LIMIT_PATTERN = rf"^{_ONE_LIMIT}([;,|]{_ONE_LIMIT})*$"
LimitText = Annotated[
    str, Field(max_length=200, pattern=LIMIT_PATTERN), AfterValidator(_valid_limit)
]


class ApiKeyCreate(RequestModel):
    name: Annotated[str, stored_text(min_length=1, max_length=100)]
    role: Role = Role.user
    tier: TierName | None = Field(
        default=None,
        description=f"A tier defined under /rate-limit-tiers, '{EXEMPT_TIER}', or none for the "
        "default (RATE_LIMIT_API_KEY_DEFAULT)",
    )


class ApiKeyRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    name: str
    prefix: str
    role: Role
    tier: str | None
    created_by_id: uuid.UUID
    service_user_id: uuid.UUID | None = Field(
        description="The key's own account: what it acts as (its items are this account's)"
    )
    revoked_at: datetime | None
    created_at: datetime


class ApiKeyCreated(ApiKeyRead):
    key: str = Field(description="The secret: shown this once, store it now")


class TierCreate(RequestModel):
    name: TierName
    limit: LimitText


class TierRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    name: str
    limit: str
