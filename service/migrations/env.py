"""Alembic environment: async engine from Settings, batch mode on SQLite."""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy.engine import Connection

from service.kit.database import create_engine
from service.kit.models import Base
from service.models import load_all_models
from service.schema_lineage import LINEAGE_TABLE
from service.settings import get_settings

load_all_models()
target_metadata = Base.metadata


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",  # SQLite cannot ALTER most things
        compare_type=True,
        # The migrate command's own bookkeeping, not a model: autogenerate must not drop it.
        include_name=lambda name, kind, _parent: not (kind == "table" and name == LINEAGE_TABLE),
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_async() -> None:
    engine = create_engine(get_settings())
    async with engine.connect() as connection:
        await connection.run_sync(_run)
    await engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline (SQL script) migrations are not supported; run `make migrate`")
asyncio.run(_run_async())
