"""The command line the Makefile, the image and the Kubernetes Jobs run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from sqlalchemy import text

from service.main import create_app
from service.settings import Settings
from tests.service.conftest import FAST_HASHING, client_for
from tests.support.databases import ROOT, create_database, drop_database

GIVEN_KEY = "bpk_pulumi0prefix_" + "s" * 40


@pytest.fixture
async def database() -> AsyncIterator[str]:
    name, url = await create_database("cli")
    yield url
    await drop_database(name)


def _cli(url: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "service", *args],
        env=os.environ | {"DATABASE_URL": url} | env,
        cwd=ROOT,
        capture_output=True,
        text=True,
    )


def _seed(url: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return _cli(url, "seed-loadtest", "--users", "2", *args, **env)


async def test_seed_registers_a_given_key_idempotently(database: str) -> None:
    for _ in range(2):  # a re-run (a re-created Job) must not fail
        seeded = _seed(database, "--password=load-test-pw-1", f"--api-key={GIVEN_KEY}")
        assert seeded.returncode == 0, seeded.stderr
        assert json.loads(seeded.stdout.splitlines()[-1]) == {"api_key": GIVEN_KEY}
    app = create_app(
        Settings(database_url=database, redis_url=None, access_log="off", **FAST_HASHING)
    )
    try:
        async with client_for(app) as client:
            as_key = await client.get("/api/v1/users", headers={"X-API-Key": GIVEN_KEY})
            login = await client.post(
                "/api/v1/auth/token",
                data={"username": "loadtest-1@example.com", "password": "load-test-pw-1"},
            )
    finally:
        await app.state.engine.dispose()
    assert as_key.status_code == 200  # admin role
    # The default tier (RATE_LIMIT_API_KEY_DEFAULT), not exempt: the key's own budget applies.
    assert '"key-60s";q=1200;w=60' in as_key.headers["ratelimit-policy"]
    assert [u["email"] for u in as_key.json()["items"]].count("loadtest-admin@example.com") == 1
    assert login.status_code == 200


async def test_seed_takes_the_password_from_the_environment(database: str) -> None:
    seeded = _seed(database, LOADTEST_PASSWORD="from-the-env-1")
    assert seeded.returncode == 0, seeded.stderr
    assert json.loads(seeded.stdout)["api_key"].startswith("bpk_")


@pytest.mark.parametrize("key", ["not-a-key", "bpk_" + "p" * 17 + "_" + "s" * 40, "bpk_p_short"])
async def test_seed_refuses_a_malformed_key(database: str, key: str) -> None:
    seeded = _seed(database, "--password=pw-123456", f"--api-key={key}")
    assert seeded.returncode != 0
    assert "an API key looks like" in seeded.stderr


def test_seed_needs_a_password() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "service", "seed-loadtest"],
        env={k: v for k, v in os.environ.items() if k != "LOADTEST_PASSWORD"},
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert "LOADTEST_PASSWORD" in result.stderr


# --- the seeded key: minted through the API keys' service, on a limited tier ---------------------


async def _rows(url: str, sql: str) -> list[tuple[Any, ...]]:
    connection = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        return [tuple(row) for row in await connection.fetch(sql)]
    finally:
        await connection.close()


async def test_the_seeded_key_is_minted_with_its_own_account_and_not_above_its_owner(
    database: str,
) -> None:
    seeded = _seed(database, "--password=load-test-pw-1", f"--api-key={GIVEN_KEY}")
    assert seeded.returncode == 0, seeded.stderr
    ((name, role, tier, owner, account_role, account_email),) = await _rows(
        database,
        "SELECT k.name, k.role, k.tier, c.email, a.role, a.email FROM api_keys k"
        " JOIN users c ON c.id = k.created_by_id JOIN users a ON a.id = k.service_user_id",
    )
    # mint_key's shape: a service account of its own (no email), the key's role, the default
    # tier; owned by the seeded admin, whose role it does not exceed.
    assert (name, role, tier, owner) == ("loadtest", "admin", None, "loadtest-admin@example.com")
    assert (account_role, account_email) == ("admin", None)


async def test_ensure_key_caps_the_role_at_the_owners_and_restores_the_same_row(
    database: str,
) -> None:
    from service.api_keys.service import ensure_key
    from service.kit.database import create_engine, create_sessionmaker
    from service.users.models import Role, User
    from service.users.repository import UserRepository

    engine = create_engine(Settings(database_url=database, redis_url=None, **FAST_HASHING))
    try:
        sessions = create_sessionmaker(engine)
        async with sessions() as session, session.begin():
            owner = await UserRepository(session).create(
                User(email="plain@example.org", hashed_password="x", role=Role.user)
            )
            first = await ensure_key(
                session, creator=owner, name="k", role=Role.admin, tier=None, presented=GIVEN_KEY
            )
            assert first.role == Role.user  # asked for admin, owned by a user
            await session.execute(text("UPDATE api_keys SET revoked_at = now()"))
        async with sessions() as session, session.begin():
            found = await UserRepository(session).get_by_email("plain@example.org")
            assert found is not None
            again = await ensure_key(
                session, creator=found, name="k", role=Role.admin, tier=None, presented=GIVEN_KEY
            )
            assert (again.id, again.role, again.revoked_at) == (first.id, Role.user, None)
    finally:
        await engine.dispose()


# --- unseed-loadtest: switching the load test off revokes what the seed made ---------------------


async def _as_seeded(url: str) -> tuple[int, int, int]:
    """(the key's status, the admin's login status, a user's login status) against ``url``."""
    app = create_app(Settings(database_url=url, redis_url=None, access_log="off", **FAST_HASHING))
    try:
        async with client_for(app) as client:
            as_key = await client.get("/api/v1/users", headers={"X-API-Key": GIVEN_KEY})
            logins = [
                await client.post(
                    "/api/v1/auth/token", data={"username": email, "password": "load-test-pw-1"}
                )
                for email in ("loadtest-admin@example.com", "loadtest-1@example.com")
            ]
    finally:
        await app.state.engine.dispose()
    return as_key.status_code, logins[0].status_code, logins[1].status_code


async def test_unseed_deactivates_the_seeded_accounts_and_revokes_their_keys(
    database: str,
) -> None:
    assert _seed(database, "--password=load-test-pw-1", f"--api-key={GIVEN_KEY}").returncode == 0
    assert await _as_seeded(database) == (200, 200, 200)
    # Users the seed did not make (one only looks like it): left alone.
    await _rows(
        database,
        "INSERT INTO users (id, email, hashed_password, full_name, role, is_active, created_at,"
        " updated_at) SELECT gen_random_uuid(), email, 'x', '', 'user', true, now(), now()"
        " FROM unnest(ARRAY['loadtest-someone@example.com', 'alice@example.org']) AS email",
    )

    unseeded = _cli(database, "unseed-loadtest")
    assert unseeded.returncode == 0, unseeded.stderr
    # loadtest-0, loadtest-1 and loadtest-admin; the one key.
    assert json.loads(unseeded.stdout.splitlines()[-1]) == {"deactivated": 3, "revoked": 1}
    assert await _as_seeded(database) == (401, 401, 401)
    rows = await _rows(database, "SELECT email, is_active FROM users WHERE email IS NOT NULL")
    assert sorted(rows) == [
        ("alice@example.org", True),
        ("loadtest-0@example.com", False),
        ("loadtest-1@example.com", False),
        ("loadtest-admin@example.com", False),
        ("loadtest-someone@example.com", True),
    ]
    ((revoked_at,),) = await _rows(database, "SELECT revoked_at FROM api_keys")
    assert revoked_at is not None

    # Idempotent: a second run changes nothing and says so.
    again = _cli(database, "unseed-loadtest")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout.splitlines()[-1]) == {"deactivated": 0, "revoked": 0}
    assert await _rows(database, "SELECT revoked_at FROM api_keys") == [(revoked_at,)]

    # Switched on again: the seed restores the same key and the accounts.
    assert _seed(database, "--password=load-test-pw-1", f"--api-key={GIVEN_KEY}").returncode == 0
    assert await _as_seeded(database) == (200, 200, 200)
    assert len(await _rows(database, "SELECT id FROM api_keys")) == 1


async def test_unseed_with_nothing_seeded_is_a_no_op(database: str) -> None:
    before = await _rows(database, "SELECT id, email, is_active, updated_at FROM users")
    unseeded = _cli(database, "unseed-loadtest")
    assert unseeded.returncode == 0, unseeded.stderr
    assert json.loads(unseeded.stdout.splitlines()[-1]) == {"deactivated": 0, "revoked": 0}
    assert await _rows(database, "SELECT id, email, is_active, updated_at FROM users") == before
