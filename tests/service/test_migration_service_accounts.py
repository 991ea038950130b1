"""Migration 0002 (API keys' service accounts) is additive and gives existing keys their
account; the release before it keeps working against the new schema."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

import asyncpg

from service.api_keys.service import service_account_id
from tests.support.databases import ROOT, create_database, drop_database, migrate


def _alembic(url: str, verb: str, revision: str) -> None:
    script = (
        "import sys; from alembic import command; from alembic.config import Config; "
        "c = Config(); c.set_main_option('script_location', 'service/migrations'); "
        "getattr(command, sys.argv[1])(c, sys.argv[2])"
    )
    subprocess.run(
        [sys.executable, "-c", script, verb, revision],
        env=os.environ | {"DATABASE_URL": url, "APP_ENV": "development"},
        cwd=ROOT,
        check=True,
        capture_output=True,
    )


async def test_existing_keys_get_their_account_and_old_inserts_still_work() -> None:
    name, url = await create_database("mig")
    dsn = url.replace("postgresql+asyncpg", "postgresql")
    try:
        _alembic(url, "downgrade", "0001")
        creator, key_id = uuid.uuid4(), uuid.uuid4()
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(
                "INSERT INTO users (id, email, full_name, role, is_active) "
                "VALUES ($1, 'admin@example.com', '', 'admin', true)",
                creator,
            )
            insert_key = (
                "INSERT INTO api_keys (id, name, prefix, secret_hash, role, created_by_id) "
                "VALUES ($1, $2, $3, 'h', 'user', $4)"
            )
            await conn.execute(insert_key, key_id, "before", "p1", creator)
        finally:
            await conn.close()
        migrate(url)  # to head, as the Kubernetes Job runs it
        conn = await asyncpg.connect(dsn)
        try:
            account = await conn.fetchval(
                "SELECT service_user_id FROM api_keys WHERE id = $1", key_id
            )
            assert account == service_account_id(key_id)
            row = await conn.fetchrow("SELECT * FROM users WHERE id = $1", account)
            assert row["email"] is None
            assert row["hashed_password"] is None
            assert row["full_name"] == "API key: before"
            # The previous release's INSERT (no service_user_id) is still valid.
            await conn.execute(insert_key, uuid.uuid4(), "during rollout", "p2", creator)
        finally:
            await conn.close()
        _alembic(url, "downgrade", "0001")  # and the step can be undone
    finally:
        await drop_database(name)
