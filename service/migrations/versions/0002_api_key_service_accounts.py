"""API keys act as their own service account (a users row), not as the admin who minted them

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01 20:00:00

Expand only (backward compatible for one release): a nullable column, a unique constraint and a
foreign key; the release before this one keeps inserting keys without it, and the service links
such a key to its account on first use (service/api_keys/service.py, same uuid5 as below).
"""

import uuid
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen copy of service.api_keys.service.SERVICE_ACCOUNT_NAMESPACE: a migration must not
# change when the application code does.
SERVICE_ACCOUNT_NAMESPACE = uuid.UUID("6f1c1f53-4d55-4a3e-9a51-2f0b8e0c7a11")


def _table(table: str, /, **columns: sa.types.TypeEngine[object]) -> sa.TableClause:
    """The columns this step touches, frozen here (the models may change later)."""
    return sa.table(table, *(sa.column(column, type_) for column, type_ in columns.items()))


def upgrade() -> None:
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.add_column(sa.Column("service_user_id", sa.Uuid(), nullable=True))
        batch_op.create_unique_constraint(
            batch_op.f("uq_api_keys_service_user_id"), ["service_user_id"]
        )
        batch_op.create_foreign_key(
            batch_op.f("fk_api_keys_service_user_id_users"),
            "users",
            ["service_user_id"],
            ["id"],
            ondelete="CASCADE",
        )
    # Existing keys get their account now (the same rows the service would create lazily).
    users = _table(
        "users", id=sa.Uuid(), full_name=sa.String(), role=sa.String(), is_active=sa.Boolean()
    )
    keys = _table(
        "api_keys", id=sa.Uuid(), name=sa.String(), role=sa.String(), service_user_id=sa.Uuid()
    )
    bind = op.get_bind()
    pending = bind.execute(
        sa.select(keys.c.id, keys.c.name, keys.c.role).where(keys.c.service_user_id.is_(None))
    ).all()
    for key_id, name, role in pending:
        account_id = uuid.uuid5(SERVICE_ACCOUNT_NAMESPACE, str(key_id))
        bind.execute(
            users.insert().values(
                id=account_id, full_name=f"API key: {name}"[:200], role=role, is_active=True
            )
        )
        bind.execute(keys.update().where(keys.c.id == key_id).values(service_user_id=account_id))


def downgrade() -> None:
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.drop_constraint(
            batch_op.f("fk_api_keys_service_user_id_users"), type_="foreignkey"
        )
        batch_op.drop_constraint(batch_op.f("uq_api_keys_service_user_id"), type_="unique")
        batch_op.drop_column("service_user_id")
