"""Case 2 — Redis lost mid-load: a dedicated redis-server is stopped under load and started
again. Fail-open keeps serving (no 5xx, limits not enforced); fail-closed answers 503
problem+json (`rate_limit.unavailable`, Retry-After); rate limiting resumes once Redis is back.

The background load uses an API key of a non-exempt tier with a limit it never reaches, so
every request goes through Redis; a "probe" user with a tiny limit shows whether limits are
enforced at a given moment."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.reliability.conftest import (
    ADMIN_EMAIL,
    GENEROUS_LIMITS,
    Servers,
    login,
    record_figures,
    scaled,
    seed_users,
    user_email,
)
from tests.reliability.load import Load, not_problem_json, server_errors, summarize, wait_until
from tests.support.processes import RedisServer, start_redis

CONCURRENCY = 8
OUTAGE = scaled(6, 30)
PROBE_LIMIT = 5
BREAKER_COOLDOWN = 1.0
REDIS_TIMEOUT = 0.25
# Limits must be enforced again within the breaker's cooldown plus this much.
RESUME_SLACK = 4.0

pytestmark = pytest.mark.timeout(int(scaled(90, 240)))


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    redis = start_redis()
    try:
        yield redis
    finally:
        redis.stop()


async def _exhaust(client: httpx.AsyncClient, headers: dict[str, str]) -> list[int]:
    """PROBE_LIMIT + 3 requests as the probe user: a limited window shows 429s at the end."""
    return [
        (await client.get("/api/v1/users/me", headers=headers)).status_code
        for _ in range(PROBE_LIMIT + 3)
    ]


@pytest.mark.parametrize("fail_mode", ["open", "closed"])
async def test_redis_outage_follows_the_fail_mode_and_limits_resume(
    fail_mode: str, database_url: str, servers: Servers, redis_server: RedisServer
) -> None:
    seed_users(database_url, 3)
    server = servers.start(
        {
            "DATABASE_URL": database_url,
            "REDIS_URL": redis_server.url,
            **GENEROUS_LIMITS,
            "RATE_LIMIT_USER": f"{PROBE_LIMIT}/minute",
            "RATE_LIMIT_FAIL_MODE": fail_mode,
            "REDIS_TIMEOUT": str(REDIS_TIMEOUT),
            "RATE_LIMIT_BREAKER_THRESHOLD": "3",
            "RATE_LIMIT_BREAKER_COOLDOWN": str(BREAKER_COOLDOWN),
        }
    )
    async with httpx.AsyncClient(base_url=server.base_url, timeout=15) as client:
        admin = await login(client, ADMIN_EMAIL)
        # A tier far above what the load reaches: checked in Redis on every request.
        created = await client.post(
            "/api/v1/api-keys", json={"name": "load", "role": "user"}, headers=admin
        )
        assert created.status_code == 201, created.text
        key = {"X-API-Key": created.json()["key"]}
        probe_before, probe_after = (
            await login(client, user_email(0)),
            await login(client, user_email(1)),
        )

        load = Load(client, phase="before")
        stop = asyncio.Event()

        async def step(load: Load, _: int) -> None:
            await load.request("GET", "/api/v1/items", params={"limit": 5}, headers=key)

        running = asyncio.create_task(load.run(step, concurrency=CONCURRENCY, stop=stop))
        await asyncio.sleep(2)
        limited_before = await _exhaust(client, probe_before)

        load.phase = "outage"
        redis_server.stop()
        stopped_at = time.monotonic()
        await asyncio.sleep(OUTAGE / 2)
        ready = await client.get("/health/ready")
        probe_during = await _exhaust(client, probe_before)
        await asyncio.sleep(OUTAGE / 2)

        load.phase = "recovery"
        restarted = start_redis(redis_server.port)
        redis_server.process = restarted.process  # the fixture stops whichever runs last
        restarted_at = time.monotonic()

        async def limits_enforced() -> bool:
            response = await client.get("/api/v1/users/me", headers=probe_after)
            return response.status_code == 429

        resumed_after = await wait_until(
            limits_enforced, timeout=BREAKER_COOLDOWN + RESUME_SLACK + PROBE_LIMIT
        )
        # Keep the load on until every worker must have recovered, and a little longer.
        load.phase = "after"
        settled_at = restarted_at + BREAKER_COOLDOWN + RESUME_SLACK
        await asyncio.sleep(max(0.0, settled_at - time.monotonic()) + 2)
        stop.set()
        await running

    outage = load.in_phase("outage")
    finished_before = [s for s in load.samples if s.started + s.elapsed < stopped_at]
    settled = [s for s in load.samples if s.started >= settled_at]
    errors_after_restart = [
        s.started - restarted_at for s in server_errors(load.samples) if s.started >= restarted_at
    ]
    figures: dict[str, Any] = {
        "command": f"pytest tests/reliability/test_redis_loss.py -k {fail_mode}",
        "fail_mode": fail_mode,
        "concurrency": CONCURRENCY,
        "outage_s": round(restarted_at - stopped_at, 1),
        "phases": {
            p: summarize(load.in_phase(p)) for p in ("before", "outage", "recovery", "after")
        },
        "probe_statuses_before": limited_before,
        "probe_statuses_during_outage": probe_during,
        "ready_during_outage": ready.status_code,
        "limits_enforced_again_after_s": None if resumed_after is None else round(resumed_after, 2),
        "errors_after_restart": len(errors_after_restart),
        "last_error_after_restart_s": round(max(errors_after_restart), 2)
        if errors_after_restart
        else None,
        "outage_codes": sorted({s.code for s in outage if s.code}),
    }
    record_figures(f"redis-loss-{fail_mode}", figures)

    # Before the outage the limiter works: the probe's window fills up.
    assert limited_before[:PROBE_LIMIT] == [200] * PROBE_LIMIT
    assert 429 in limited_before[PROBE_LIMIT:]
    assert not_problem_json(load.samples) == []
    assert [s for s in load.samples if not s.is_http] == [], "requests hung or were dropped"
    # Every request, in every phase, is answered within Redis's timeout and the DB's, with room.
    assert max(s.elapsed for s in load.samples) < 5.0
    if fail_mode == "open":
        assert server_errors(load.samples) == [], figures["phases"]
        assert ready.status_code == 200
        assert ready.json()["checks"]["redis"] == "unavailable"
        # Limits are not enforced while Redis is away: the exhausted probe is served.
        assert probe_during == [200] * len(probe_during)
    else:
        statuses = {s.status for s in outage}
        assert statuses <= {"200", "503"}, statuses
        assert "503" in statuses
        assert {s.code for s in outage if s.status == "503"} == {"rate_limit.unavailable"}
        assert ready.status_code == 503
        assert set(probe_during) == {503}
    # Before the outage, and once the breaker's cooldown (plus slack) has passed after Redis
    # returned, nothing fails: every worker's limiter is back on its feet.
    assert server_errors(finished_before) == []
    assert server_errors(settled) == [], figures["last_error_after_restart_s"]
    # Redis is back: limits apply again, within the breaker's cooldown and some slack.
    assert resumed_after is not None, "rate limiting did not resume after Redis came back"
    assert resumed_after <= BREAKER_COOLDOWN + RESUME_SLACK
