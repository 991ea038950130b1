"""The per-worker principal cache on a real 2-worker Gunicorn server: a demotion, a
deactivation and a key revocation made in the database (as another pod would make them) are
enforced by every worker within AUTH_CACHE_TTL_SECONDS (at most 1 s)."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx
import pytest

from tests.support.api import seed_loadtest
from tests.support.databases import REDIS_URL, create_database, drop_database
from tests.support.processes import Server, start_server

PASSWORD = "cache-test-password"
TTL = 1.0  # the largest the settings allow
# A request's own round trip: a refusal may be seen this much after the TTL has run out.
SLACK = 0.35
# Probes sent after TTL + SLACK, each on a fresh connection: enough for both workers to get some.
LATE_PROBES = 16


@pytest.fixture
async def seeded_server(tmp_path: Path) -> AsyncIterator[tuple[Server, str, str]]:
    """(server, database url, the seeded admin's API key) on a database of its own."""
    name, url = await create_database("cache")
    try:
        api_key = seed_loadtest(url, 1, password=PASSWORD)
        settings = {
            "DATABASE_URL": url,
            "REDIS_URL": REDIS_URL,
            "APP_NAME": f"cache-{uuid.uuid4().hex[:8]}",
            "RATE_LIMIT_USER": "100000/minute",
            # The seeded key is on the default tier: room for every probe.
            "RATE_LIMIT_API_KEY_DEFAULT": "100000/minute",
            "RATE_LIMIT_LOGIN": "1000/minute",
            "AUTH_CACHE_TTL_SECONDS": str(TTL),
        }
        server = start_server(settings, tmp_path, workers=2)
        try:
            yield server, url, api_key
        finally:
            server.stop()
    finally:
        await drop_database(name)


@dataclass
class Probe:
    seconds_after_change: float
    status: int
    request_id: str


def _probe(server: Server, path: str, headers: dict[str, str]) -> Probe:
    """One request on a fresh connection, so the two workers' accept loops share them."""
    request_id = uuid.uuid4().hex
    with httpx.Client(base_url=server.base_url, timeout=5) as client:
        response = client.get(path, headers=headers | {"X-Request-ID": request_id})
    return Probe(0.0, response.status_code, request_id)


def _watch(
    server: Server, path: str, headers: dict[str, str], change: Callable[[], None]
) -> list[Probe]:
    """Warm every worker's cache, make the change, then probe until LATE_PROBES were sent
    after TTL + SLACK."""
    for _ in range(30):
        assert _probe(server, path, headers).status == 200
    change()
    changed_at = time.monotonic()
    probes: list[Probe] = []
    # Until enough probes were sent after TTL + SLACK, however slow a loaded machine makes them.
    while sum(p.seconds_after_change > TTL + SLACK for p in probes) < LATE_PROBES:
        elapsed = time.monotonic() - changed_at
        assert elapsed < 60, "the server is too slow to probe"
        probe = _probe(server, path, headers)
        probe.seconds_after_change = elapsed
        probes.append(probe)
    return probes


def _db(url: str, statement: str, *args: object) -> Callable[[], None]:
    def run() -> None:
        import asyncio

        async def execute() -> None:
            conn = await asyncpg.connect(url.replace("postgresql+asyncpg", "postgresql"))
            try:
                await conn.execute(statement, *args)
            finally:
                await conn.close()

        asyncio.run(execute())

    return run


def _assert_enforced_on_every_worker(
    server: Server, probes: list[Probe], refused: int, pids_by_request: dict[str, object]
) -> float:
    """Every probe after TTL + SLACK is refused, on both workers; returns the staleness seen."""
    served = [p.seconds_after_change for p in probes if p.status == 200]
    staleness = max(served, default=0.0)
    assert staleness <= TTL + SLACK, f"still served {staleness:.2f} s after the change"
    late = [p for p in probes if p.seconds_after_change > TTL + SLACK]
    assert {p.status for p in late} == {refused}
    workers = {pids_by_request.get(p.request_id) for p in late} - {None}
    assert len(workers) == 2, f"the late probes reached {len(workers)} worker(s)"
    return staleness


def test_changes_are_enforced_by_both_workers_within_the_ttl(
    seeded_server: tuple[Server, str, str],
) -> None:
    server, url, api_key = seeded_server
    token = httpx.post(
        server.base_url + "/api/v1/auth/token",
        data={"username": "loadtest-0@example.com", "password": PASSWORD},
    ).json()["access_token"]
    as_key = {"X-API-Key": api_key}
    as_user = {"Authorization": f"Bearer {token}"}

    demotion = _watch(
        server,
        "/api/v1/users",  # admins only: the key's creator is demoted, so the key is too
        as_key,
        _db(url, "UPDATE users SET role = 'user' WHERE email = 'loadtest-admin@example.com'"),
    )
    deactivation = _watch(
        server,
        "/api/v1/users/me",
        as_user,
        _db(url, "UPDATE users SET is_active = false WHERE email = 'loadtest-0@example.com'"),
    )
    revocation = _watch(
        server,
        "/api/v1/users/me",
        as_key,
        _db(url, "UPDATE api_keys SET revoked_at = now() WHERE name = 'loadtest'"),
    )
    server.stop()  # flushes every worker's log
    pids = {str(r["request_id"]): r["pid"] for r in server.log_records() if r.get("request_id")}
    figures = {
        "demotion": _assert_enforced_on_every_worker(server, demotion, 403, pids),
        "deactivation": _assert_enforced_on_every_worker(server, deactivation, 401, pids),
        "revocation": _assert_enforced_on_every_worker(server, revocation, 401, pids),
    }
    print("seconds a change went unseen:", {k: round(v, 3) for k, v in figures.items()})
