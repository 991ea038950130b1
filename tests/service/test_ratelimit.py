"""Rate limits on the real Redis (and in memory): groups, keys, headers, tiers, failure modes."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import httpx
import pytest
from fastapi import FastAPI

from service.ratelimit.breaker import CircuitBreaker
from service.ratelimit.limiter import Limiter
from service.settings import Settings
from tests.service.conftest import PASSWORD, CreateUser, assert_problem, client_for, login
from tests.support.databases import REDIS_URL
from tests.support.processes import start_redis


def test_breaker_opens_after_the_threshold_and_retries_after_the_cooldown() -> None:
    now = [0.0]
    breaker = CircuitBreaker(threshold=3, cooldown=5, clock=lambda: now[0])
    assert not breaker.record_failure()
    assert not breaker.record_failure()
    assert breaker.record_failure()  # the third failure opens it
    assert not breaker.allow()
    now[0] = 4.9
    assert not breaker.allow()
    now[0] = 5.0
    assert breaker.allow()  # one trial
    assert not breaker.allow()  # ...and only one per cooldown
    breaker.record_failure()
    now[0] = 9.0
    assert not breaker.allow()  # the failed trial restarted the cooldown
    now[0] = 10.0
    assert breaker.allow()
    breaker.record_success()
    assert breaker.allow()
    assert not breaker.is_open


@pytest.mark.parametrize(
    ("peer", "forwarded", "expected"),
    [
        ("203.0.113.9", "1.2.3.4", "203.0.113.9"),  # not a proxy: its header is ignored
        ("10.0.0.5", "1.2.3.4", "1.2.3.4"),
        ("10.0.0.5", "6.6.6.6, 1.2.3.4, 10.0.0.7", "1.2.3.4"),  # right-most untrusted hop
        ("10.0.0.5", "10.0.0.8", "10.0.0.5"),  # all hops trusted: the peer
        ("10.0.0.5", "garbage, 1.2.3.4", "1.2.3.4"),
        ("10.0.0.5", None, "10.0.0.5"),
    ],
)
def test_client_ip_trusts_only_configured_proxies(
    peer: str, forwarded: str | None, expected: str
) -> None:
    limiter = Limiter(Settings(trusted_proxies=["10.0.0.0/8"]))
    assert limiter.client_ip(peer, forwarded) == expected


@pytest.fixture(params=["redis", "memory"])
def limited(
    request: pytest.FixtureRequest, make_app: Callable[..., FastAPI]
) -> Callable[..., FastAPI]:
    """Apps on the real Redis or on the in-memory storage (the embedded default)."""
    redis_url = REDIS_URL if request.param == "redis" else None

    def make(**overrides: object) -> FastAPI:
        return make_app(redis_url=redis_url, **overrides)

    return make


async def _login(client: httpx.AsyncClient, username: str, **headers: str) -> httpx.Response:
    return await client.post(
        "/api/v1/auth/token",
        data={"username": username, "password": "wrong-password"},
        headers=headers,
    )


async def test_login_is_limited_per_username_whatever_the_address(
    limited: Callable[..., FastAPI],
) -> None:
    app = limited(rate_limit_login="3/minute", trusted_proxies=["127.0.0.0/8"])
    async with client_for(app) as client:
        statuses = [
            (
                await _login(client, "target@example.com", **{"X-Forwarded-For": f"198.51.100.{i}"})
            ).status_code
            for i in range(4)
        ]
        blocked = await _login(client, "target@example.com", **{"X-Forwarded-For": "198.51.100.99"})
    assert statuses == [401, 401, 401, 429]
    assert_problem(blocked, 429, "rate_limit.exceeded")
    assert 1 <= int(blocked.headers["retry-after"]) <= 60


async def test_login_is_limited_per_address_whatever_the_username(
    limited: Callable[..., FastAPI],
) -> None:
    app = limited(rate_limit_login="3/minute")
    async with client_for(app) as client:
        statuses = [(await _login(client, f"u{i}@example.com")).status_code for i in range(4)]
        # A spoofed X-Forwarded-For from an untrusted peer does not buy a fresh budget.
        spoofed = await _login(client, "u9@example.com", **{"X-Forwarded-For": "192.0.2.1"})
    assert statuses == [401, 401, 401, 429]
    assert spoofed.status_code == 429


async def test_a_correct_password_cannot_be_found_once_limited(
    limited: Callable[..., FastAPI], create_user: CreateUser
) -> None:
    user = await create_user()
    app = limited(rate_limit_login="3/minute")
    async with client_for(app) as client:
        for _ in range(3):
            await _login(client, user.email or "")
        right = await client.post(
            "/api/v1/auth/token", data={"username": user.email, "password": PASSWORD}
        )
    assert right.status_code == 429  # brute force stops before the right guess lands


async def test_users_are_limited_per_user_with_headers(
    limited: Callable[..., FastAPI], create_user: CreateUser
) -> None:
    user, other = await create_user(), await create_user()
    app = limited(rate_limit_user="3/minute")
    async with client_for(app) as client:
        headers, other_headers = (
            await login(client, user.email or ""),
            await login(client, other.email or ""),
        )
        responses = [await client.get("/api/v1/users/me", headers=headers) for _ in range(4)]
        other_response = await client.get("/api/v1/users/me", headers=other_headers)
    assert [r.status_code for r in responses] == [200, 200, 200, 429]
    assert [r.headers["ratelimit-remaining"] for r in responses] == ["2", "1", "0", "0"]
    assert responses[0].headers["ratelimit-limit"] == "3"
    assert 1 <= int(responses[0].headers["ratelimit-reset"]) <= 60
    assert responses[3].headers["retry-after"]
    assert other_response.status_code == 200  # a separate budget


async def test_rate_limit_headers_can_be_turned_off(
    limited: Callable[..., FastAPI], user_headers: dict[str, str]
) -> None:
    app = limited(rate_limit_headers=False)
    async with client_for(app) as client:
        response = await client.get("/api/v1/users/me", headers=user_headers)
    assert response.status_code == 200
    assert "ratelimit-limit" not in response.headers


async def test_api_keys_use_their_tier_and_exempt_skips(
    limited: Callable[..., FastAPI], create_user: CreateUser
) -> None:
    from service.users.models import Role

    admin = await create_user(role=Role.admin)
    app = limited(rate_limit_api_key_default="2/minute", rate_limit_user="1000/minute")
    async with client_for(app) as client:
        admin_headers = await login(client, admin.email or "")
        await client.post(
            "/api/v1/rate-limit-tiers",
            json={"name": "tiny", "limit": "1/minute"},
            headers=admin_headers,
        )
        keys = {}
        for tier in (None, "tiny", "exempt"):
            body = {"name": f"k-{tier}", "tier": tier}
            keys[tier] = (
                await client.post("/api/v1/api-keys", json=body, headers=admin_headers)
            ).json()["key"]

        async def statuses(key: str, n: int) -> list[int]:
            return [
                (await client.get("/api/v1/users/me", headers={"X-API-Key": key})).status_code
                for _ in range(n)
            ]

        assert await statuses(keys[None], 3) == [200, 200, 429]
        assert await statuses(keys["tiny"], 2) == [200, 429]
        assert await statuses(keys["exempt"], 20) == [200] * 20


async def test_sliding_window_counter_strategy(
    make_app: Callable[..., FastAPI], user_headers: dict[str, str]
) -> None:
    app = make_app(
        redis_url=REDIS_URL,
        rate_limit_strategy="sliding-window-counter",
        rate_limit_user="2/minute",
    )
    async with client_for(app) as client:
        codes = [
            (await client.get("/api/v1/users/me", headers=user_headers)).status_code
            for _ in range(3)
        ]
    assert codes == [200, 200, 429]


async def test_two_app_instances_share_one_budget_through_redis(
    make_app: Callable[..., FastAPI],
    make_settings: Callable[..., Settings],
    user_headers: dict[str, str],
) -> None:
    # Two instances with the same name and Redis stand for two workers or pods.
    first = make_app(redis_url=REDIS_URL, app_name="shared-budget-test", rate_limit_user="4/minute")
    second = make_app(
        redis_url=REDIS_URL, app_name="shared-budget-test", rate_limit_user="4/minute"
    )
    await first.state.limiter.storage.reset()
    codes = []
    async with client_for(first) as a, client_for(second) as b:
        for client in (a, b, a, b, a, b):
            codes.append((await client.get("/api/v1/users/me", headers=user_headers)).status_code)
    assert codes == [200, 200, 200, 200, 429, 429]


@pytest.mark.parametrize("fail_mode", ["open", "closed"])
async def test_redis_unreachable_follows_the_fail_mode(
    make_app: Callable[..., FastAPI], user_headers: dict[str, str], closed_port: int, fail_mode: str
) -> None:
    app = make_app(
        redis_url=f"redis://127.0.0.1:{closed_port}/0",
        rate_limit_fail_mode=fail_mode,
        rate_limit_breaker_threshold=2,
        rate_limit_breaker_cooldown=60,
    )
    async with client_for(app) as client:
        responses = [await client.get("/api/v1/users/me", headers=user_headers) for _ in range(4)]
        ready = await client.get("/health/ready")
        metrics = (await client.get("/metrics")).text
    assert app.state.limiter.breaker.is_open  # later calls skip Redis entirely
    outcome = "allowed" if fail_mode == "open" else "rejected"
    assert f'app_rate_limit_storage_errors_total{{outcome="{outcome}"}}' in metrics
    if fail_mode == "open":
        assert [r.status_code for r in responses] == [200] * 4
        assert ready.status_code == 200
        assert ready.json()["checks"] == {"database": "ok", "redis": "unavailable"}
    else:
        for response in responses:
            assert_problem(response, 503, "rate_limit.unavailable")
            assert response.headers["retry-after"] == "60"
        assert_problem(ready, 503, "health.not_ready")


async def test_a_restarted_redis_costs_no_request_even_when_closed() -> None:
    # Pooled connections to the old server are dead once it restarts; each must be replaced
    # without failing the request it was picked for (fail-closed would turn that into a 503).
    redis = start_redis()
    try:
        limiter = Limiter(
            Settings(redis_url=redis.url, rate_limit_fail_mode="closed", app_name="restart-test")
        )
        # Several connections in the pool, as under concurrent load.
        await asyncio.gather(*(limiter.check("100/minute", "user", str(n)) for n in range(8)))
        redis.stop()
        redis = start_redis(redis.port)

        decisions = [await limiter.check("100/minute", "user", str(n)) for n in range(8)]

        # The new server starts empty (no persistence): each id has one hit counted.
        assert [d.remaining for d in decisions if d is not None] == [99] * 8
        assert not limiter.breaker.is_open
    finally:
        redis.stop()
