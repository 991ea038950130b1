"""The per-worker cache of verified principals: what it saves, and its bounds."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import event

from service.auth.cache import TtlCache, credential_key
from tests.service.conftest import CreateUser, client_for, login


@asynccontextmanager
async def _signed_in(
    make_app: Callable[..., FastAPI], create_user: CreateUser
) -> AsyncIterator[tuple[httpx.AsyncClient, dict[str, str], list[str]]]:
    """A client of an app with a 1 s principal cache, a user's headers, and every SQL statement
    the app sends from then on."""
    app = make_app(auth_cache_ttl_seconds=1.0)
    user = await create_user()
    assert user.email
    statements: list[str] = []

    def record(*args: Any) -> None:
        statements.append(str(args[2]))

    async with client_for(app) as client:
        headers = await login(client, user.email)
        event.listen(app.state.engine.sync_engine, "before_cursor_execute", record)
        yield client, headers, statements


async def test_a_cached_principal_costs_no_database_round_trip(
    make_app: Callable[..., FastAPI], create_user: CreateUser
) -> None:
    async with _signed_in(make_app, create_user) as (client, headers, statements):
        first = await client.get("/api/v1/users/me", headers=headers)
        looked_up = len(statements)
        again = await client.get("/api/v1/users/me", headers=headers)
    assert first.json() == again.json()
    assert looked_up == 1  # the first request reads the row...
    assert len(statements) == looked_up  # ...the second is served from the cache


def test_entries_expire_and_the_oldest_goes_first() -> None:
    cache: TtlCache[str] = TtlCache(ttl=0.2, max_entries=2)
    a, b, c = (credential_key("bearer", t) for t in "abc")
    cache.put(a, "a")
    cache.put(b, "b")
    cache.put(c, "c")
    assert len(cache) == 2
    assert cache.get(a) is None  # evicted: the oldest
    assert cache.get(c) == "c"
    cache.put(a, "short", max_age=0.05)  # e.g. a token about to expire
    time.sleep(0.06)
    assert cache.get(a) is None
    assert cache.get(c) == "c"
    time.sleep(0.2)
    assert cache.get(c) is None


def test_a_zero_ttl_caches_nothing() -> None:
    cache: TtlCache[str] = TtlCache(ttl=0, max_entries=10)
    cache.put(b"k", "v")
    assert len(cache) == 0


def test_the_ttl_cannot_exceed_one_second() -> None:
    from pydantic import ValidationError

    from service.settings import Settings

    with pytest.raises(ValidationError, match="auth_cache_ttl_seconds"):
        Settings(auth_cache_ttl_seconds=2)


async def test_requests_in_flight_with_one_credential_share_one_lookup(
    make_app: Callable[..., FastAPI], create_user: CreateUser
) -> None:
    """An entry expiring under load must not send every request in flight to the database at
    once (they would queue for the pool, and that queue is the tail latency)."""
    async with _signed_in(make_app, create_user) as (client, headers, statements):
        responses = await asyncio.gather(
            *(client.get("/api/v1/users/me", headers=headers) for _ in range(12))
        )
    assert [r.status_code for r in responses] == [200] * 12
    assert len(statements) == 1  # one read of the row for all twelve


async def test_a_failed_shared_lookup_fails_every_caller_and_is_not_kept() -> None:
    cache: TtlCache[str] = TtlCache(ttl=1.0, max_entries=10)
    calls = 0

    async def failing() -> tuple[str, float | None]:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.01)
        raise LookupError("no such key")

    results = await asyncio.gather(
        *(cache.get_or_load(b"k", failing) for _ in range(5)), return_exceptions=True
    )
    assert calls == 1
    assert all(isinstance(r, LookupError) for r in results)

    async def working() -> tuple[str, float | None]:
        return "v", None

    assert await cache.get_or_load(b"k", working) == "v"  # the failure was not cached
