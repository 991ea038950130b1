"""The command line the Makefile, the image and the Kubernetes Jobs run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator

import pytest

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


def _seed(url: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "service", "seed-loadtest", "--users", "2", *args],
        env=os.environ | {"DATABASE_URL": url} | env,
        cwd=ROOT,
        capture_output=True,
        text=True,
    )


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
    assert '"key-' not in as_key.headers["ratelimit"]  # the exempt tier: no key budget
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
