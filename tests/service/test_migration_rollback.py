"""Rollback after a release that added a migration (the migrate command, service/schema_lineage.py).

"Newer image": a copy of the shipped migrations plus one extra revision in a temporary directory,
migrated with the same command. The shipped scripts are then the older image's.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from tests.support.databases import ROOT, create_database, drop_database, migrate

SHIPPED = ROOT / "service" / "migrations"
NEWER = '''"""an expand step: a new table the previous release ignores

Revision ID: 9002
Revises: {head}
"""

import sqlalchemy as sa
from alembic import op

revision = "9002"
down_revision = "{head}"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table("rollback_probe", sa.Column("id", sa.Integer, primary_key=True))


def downgrade() -> None:
    op.drop_table("rollback_probe")
'''


def shipped_head() -> str:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", str(SHIPPED))
    head = ScriptDirectory.from_config(config).get_current_head()
    assert head is not None
    return head


@pytest.fixture
def newer_scripts(tmp_path: Path) -> Path:
    scripts = tmp_path / "migrations"
    shutil.copytree(SHIPPED, scripts, ignore=shutil.ignore_patterns("__pycache__"))
    (scripts / "versions" / "9002_newer.py").write_text(NEWER.format(head=shipped_head()))
    return scripts


def migrate_with(scripts: Path, database_url: str) -> subprocess.CompletedProcess[str]:
    """The migrate command of an image that ships ``scripts``."""
    code = (
        "import sys; from pathlib import Path; from service.__main__ import migrate;"
        " from service.settings import get_settings; migrate(get_settings(), Path(sys.argv[1]))"
    )
    env = os.environ | {"DATABASE_URL": database_url, "APP_ENV": "development"}
    env.pop("FIRST_ADMIN_EMAIL", None)
    return subprocess.run(
        [sys.executable, "-c", code, str(scripts)],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.fixture
async def database() -> AsyncIterator[str]:
    name, url = await create_database("rollback")
    try:
        yield url
    finally:
        await drop_database(name)


async def version(url: str) -> list[str]:
    conn = await asyncpg.connect(url)
    try:
        return [r[0] for r in await conn.fetch("SELECT version_num FROM alembic_version")]
    finally:
        await conn.close()


async def test_the_newer_image_upgrades_a_database_at_the_older_head(
    database: str, newer_scripts: Path
) -> None:
    assert await version(database) == [shipped_head()]
    result = migrate_with(newer_scripts, database)
    assert result.returncode == 0, result.stderr
    assert await version(database) == ["9002"]


async def test_the_older_image_accepts_a_database_one_release_ahead(
    database: str, newer_scripts: Path
) -> None:
    assert migrate_with(newer_scripts, database).returncode == 0
    # Rollback: the older image's Job (the shipped scripts, which lack 9002) runs next.
    out = migrate(database)
    assert "descendant" in out
    assert "nothing to migrate" in out
    assert await version(database) == ["9002"]  # left as the newer release made it
    conn = await asyncpg.connect(database)
    try:
        assert await conn.fetchval("SELECT to_regclass('rollback_probe')") is not None
    finally:
        await conn.close()


async def test_an_unknown_revision_without_lineage_is_refused(database: str) -> None:
    conn = await asyncpg.connect(database)
    try:
        # A revision stamped by something that never recorded where it descends from.
        await conn.execute("UPDATE alembic_version SET version_num = 'ffff'")
    finally:
        await conn.close()
    result = migrate_with(SHIPPED, database)
    assert result.returncode != 0
    assert "ffff" in result.stderr
    assert "refusing to guess" in result.stderr
