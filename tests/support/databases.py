"""Throwaway PostgreSQL databases on the machine's server, migrated with the real command."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import asyncpg

ROOT = Path(__file__).resolve().parents[2]
PG_ADMIN_DSN = os.environ.get("TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def migrate(database_url: str, **extra_env: str) -> str:
    """`python -m service migrate`, exactly as `make migrate` and the Kubernetes Job run it;
    returns what it printed."""
    env = os.environ | {"DATABASE_URL": database_url, "APP_ENV": "development"}
    env.pop("FIRST_ADMIN_EMAIL", None)
    result = subprocess.run(
        [sys.executable, "-m", "service", "migrate"],
        env=env | extra_env,
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    )
    return result.stdout


def database_url(name: str) -> str:
    return PG_ADMIN_DSN.rsplit("/", 1)[0] + "/" + name


async def create_database(prefix: str = "test") -> tuple[str, str]:
    """(name, url) of a new, migrated database."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(PG_ADMIN_DSN)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    url = database_url(name)
    migrate(url)
    return name, url


async def drop_database(name: str) -> None:
    conn = await asyncpg.connect(PG_ADMIN_DSN)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()
