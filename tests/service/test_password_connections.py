"""No pooled connection is held while a password is hashed or verified (Argon2 takes
milliseconds and queues behind PASSWORD_HASH_CONCURRENCY; a connection held meanwhile starves
every other request of the pool)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from service.users.models import Role
from tests.service.conftest import PASSWORD, CreateUser, client_for, login


@pytest.fixture
def database_url(postgres_url: str) -> str:
    return postgres_url  # the pool under test is PostgreSQL's (SQLite's has no size to starve)


def _record_checked_out(app: FastAPI, monkeypatch: pytest.MonkeyPatch, seen: list[int]) -> None:
    """Wrap the Argon2 calls so each records how many connections the pool has checked out
    while it runs (they run in a thread; the pool's counter is safe to read from there)."""
    pool = app.state.engine.pool
    hasher = app.state.hasher._hash
    for name in ("hash", "verify_and_update"):
        original = getattr(hasher, name)

        def wrapped(*args: Any, _original: Callable[..., Any] = original) -> Any:
            seen.append(pool.checkedout())
            return _original(*args)

        monkeypatch.setattr(hasher, name, wrapped)


async def test_login_change_password_and_create_user_hold_no_connection_while_hashing(
    app: FastAPI,
    client: httpx.AsyncClient,
    create_user: CreateUser,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    user = await create_user()
    await create_user("boss@example.com", role=Role.admin)
    assert user.email
    seen: list[int] = []
    _record_checked_out(app, monkeypatch, seen)
    headers = await login(client, user.email)
    changed = await client.patch(
        "/api/v1/users/me",
        json={"password": "another-password", "current_password": PASSWORD},
        headers=headers,
    )
    assert changed.status_code == 200, changed.text
    admin = await login(client, "boss@example.com")
    created = await client.post(
        "/api/v1/users",
        json={"email": "new@example.com", "password": "password-123"},
        headers=admin,
    )
    assert created.status_code == 201, created.text
    # login, verify + hash (PATCH), login, hash (POST): no connection checked out in any.
    assert len(seen) == 5
    assert seen == [0] * 5


async def test_a_login_flood_on_a_tiny_pool_gets_no_5xx(
    make_app: Callable[..., FastAPI], create_user: CreateUser
) -> None:
    """One connection, one hashing thread, and logins that each take a while to hash: before,
    each login waited for Argon2 with the connection held, so the queue for the pool grew past
    DB_POOL_TIMEOUT and answered 503."""
    app = make_app(
        db_pool_size=1,
        db_max_overflow=0,
        # Forty serial hashes take several times the pool timeout, so a connection held while
        # hashing makes the queue time out; without that, the pool's queue is short and the
        # timeout leaves a wide margin for a loaded machine.
        db_pool_timeout=1.5,
        password_hash_concurrency=1,
        argon2_time_cost=2,
        argon2_memory_cost=32768,
    )
    user = await create_user("flood@example.com")
    async with client_for(app) as client:
        form = {"username": "flood@example.com", "password": PASSWORD}
        logins = [client.post("/api/v1/auth/token", data=form) for _ in range(40)]
        token = await login(client, "flood@example.com")
        probes = [client.get("/api/v1/users/me", headers=token) for _ in range(10)]
        responses = await asyncio.gather(*logins, *probes)
    statuses = [r.status_code for r in responses]
    assert statuses == [200] * len(statuses), sorted(set(statuses))
    assert user.email == "flood@example.com"
