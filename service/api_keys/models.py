from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from service.kit.models import TimestampedModel, UTCDateTime
from service.kit.problems import register_constraint
from service.users.models import Role


class RateLimitTier(TimestampedModel):
    """A named limit that admins define and attach to API keys (`exempt` is built in)."""

    __tablename__ = "rate_limit_tiers"

    name: Mapped[str] = mapped_column(String(50), unique=True)
    # The `limits` library's notation, e.g. "1000/minute;20000/hour".
    limit: Mapped[str] = mapped_column(String(200))


class ApiKey(TimestampedModel):
    __tablename__ = "api_keys"

    name: Mapped[str] = mapped_column(String(100))
    # The public part of the key, for lookup; the secret part is stored only as a hash.
    prefix: Mapped[str] = mapped_column(String(16), unique=True)
    secret_hash: Mapped[str] = mapped_column(String(64))
    role: Mapped[Role] = mapped_column(String(20), default=Role.user)
    # A RateLimitTier name, "exempt", or None for RATE_LIMIT_API_KEY_DEFAULT.
    tier: Mapped[str | None] = mapped_column(String(50))
    created_by_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    # The key's own account: what it acts as (items it creates are owned by this row), never
    # the admin who minted it. None only for a key minted by the release before 0002; the
    # service links it on first use.
    service_user_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), unique=True
    )
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


register_constraint("uq_rate_limit_tiers_name", "tier.name_taken", "A tier with this name exists.")
register_constraint("uq_api_keys_prefix", "api_key.collision", "Key prefix collision; retry.")
