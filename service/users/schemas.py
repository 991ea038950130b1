from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, EmailStr, Field

from service.kit.schemas import RequestModel, stored_text
from service.users.models import Role


def _lower(value: str) -> str:
    return value.lower()


# Emails are stored and compared lower-cased (the unique index is on lower(email) as well).
Email = Annotated[EmailStr, AfterValidator(_lower)]
# Bounds are re-checked against PASSWORD_MIN/MAX_LENGTH in the routes (settings are runtime);
# this outer cap stops a megabyte "password" before it is even parsed further.
Password = Annotated[str, Field(min_length=1, max_length=1024)]
FullName = Annotated[str, stored_text(max_length=200)]


class UserRead(BaseModel):
    # Frozen: the authenticated caller's snapshot (Principal.user) is one, shared by the
    # requests the principal cache serves.
    model_config = ConfigDict(from_attributes=True, frozen=True)

    id: uuid.UUID
    email: str | None
    full_name: str
    role: Role
    is_active: bool
    created_at: datetime
    updated_at: datetime


class UserCreate(RequestModel):
    email: Email
    password: Password
    full_name: FullName = ""
    role: Role = Role.user


class MeUpdate(RequestModel):
    """What users may change about themselves: never their role or status."""

    full_name: FullName | None = None
    password: Password | None = None
    current_password: Password | None = Field(
        default=None, description="Required when changing the password"
    )


class UserAdminUpdate(RequestModel):
    full_name: FullName | None = None
    role: Role | None = None
    is_active: bool | None = None
