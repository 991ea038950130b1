from __future__ import annotations

from enum import StrEnum

from sqlalchemy import Boolean, Index, String, UniqueConstraint, func
from sqlalchemy.orm import Mapped, mapped_column

from service.kit.models import TimestampedModel
from service.kit.problems import register_constraint


class Role(StrEnum):
    user = "user"
    admin = "admin"

    def at_most(self, other: Role) -> Role:
        """The weaker of the two roles (user < admin): a key's authority is capped by its
        owner's current role."""
        return Role.user if Role.user in (self, other) else Role.admin


class User(TimestampedModel):
    __tablename__ = "users"
    __table_args__ = (
        UniqueConstraint("external_issuer", "external_subject", name="uq_users_external_identity"),
    )

    # None for identity-provider users whose token carries no email.
    email: Mapped[str | None] = mapped_column(String(320))
    # None for identity-provider users: they never log in with a password here.
    hashed_password: Mapped[str | None] = mapped_column(String(255))
    full_name: Mapped[str] = mapped_column(String(200), default="")
    role: Mapped[Role] = mapped_column(String(20), default=Role.user)
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    external_issuer: Mapped[str | None] = mapped_column(String(500))
    external_subject: Mapped[str | None] = mapped_column(String(255))


# Case-insensitive uniqueness enforced by the database itself, on Postgres and SQLite.
Index("uq_users_email_lower", func.lower(User.email), unique=True)

register_constraint("uq_users_email_lower", "user.email_taken", "A user with this email exists.")
register_constraint(
    "uq_users_external_identity", "user.identity_taken", "This identity is already linked."
)
