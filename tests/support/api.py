"""Talking to the service as its clients do: log in, and seed the load-test users."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import httpx

from tests.support.databases import ROOT

PASSWORD = "correct-horse-battery"


async def login(client: httpx.AsyncClient, email: str, password: str = PASSWORD) -> dict[str, str]:
    """The bearer header of a fresh token (the OAuth2 password flow)."""
    response = await client.post(
        "/api/v1/auth/token", data={"username": email, "password": password}
    )
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


def seed_loadtest(
    database_url: str, users: int, *, env: dict[str, str] | None = None, password: str = PASSWORD
) -> str:
    """`python -m service seed-loadtest`: loadtest-<i>@example.com (role user) and
    loadtest-admin@example.com, all with `password`; returns the new admin API key (on the
    default tier, RATE_LIMIT_API_KEY_DEFAULT).
    `env` carries, e.g., the Argon2 parameters the stored hashes are made with."""
    result = subprocess.run(
        [sys.executable, "-m", "service", "seed-loadtest", "--users", str(users)],
        env=os.environ
        | {"DATABASE_URL": database_url, "APP_ENV": "development", "LOADTEST_PASSWORD": password}
        | (env or {}),
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    )
    key: str = json.loads(result.stdout.strip().splitlines()[-1])["api_key"]
    return key
