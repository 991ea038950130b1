"""The front door and its limits, on the real Redis (and in memory): the GCRA script against its
reference model, the order of the passes, the budgets' keys, headers, tiers, failure modes."""

from __future__ import annotations

import asyncio
import random
import re
import uuid
from collections.abc import Callable

import httpx
import pytest
from fastapi import Depends, FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute, iter_route_contexts
from fastapi.security.base import SecurityBase
from redis.asyncio import Redis

from service.frontdoor import front_door, require_admin
from service.frontdoor.budgets import client_identity
from service.ratelimit.breaker import CircuitBreaker
from service.ratelimit.gcra import MICROS, Window, gcra
from service.ratelimit.limiter import Limiter
from service.settings import ConfigurationError, Settings
from service.users.models import Role
from tests.service.conftest import PASSWORD, CreateUser, assert_problem, client_for, login
from tests.support.databases import REDIS_URL
from tests.support.processes import start_redis

# --- the algorithm ------------------------------------------------------------------------------


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


def _args(*windows: Window) -> list[int]:
    return [n for w in windows for n in (w.interval, w.capacity)]


def test_gcra_allows_a_burst_then_the_sustained_rate() -> None:
    window = Window(3, 60)  # one request per 20 s, three at once
    pair = [(window.interval, window.capacity)]
    tat: int | None = None
    allowed = []
    for second in (0, 0, 0, 0, 19, 20, 20, 40):
        reply, tats = gcra([tat], second * MICROS, pair)
        allowed.append(reply[0])
        tat = tats[0] if tats else tat
    assert allowed == [1, 1, 1, 0, 0, 1, 0, 1]


def test_a_refusal_by_a_later_window_costs_the_earlier_ones_nothing() -> None:
    minute, hour = Window(2, 60), Window(3, 3600)
    windows = [(w.interval, w.capacity) for w in (minute, hour)]
    tats: list[int | None] = [None, None]
    for second in (0, 0, 60):  # three: the hour is full
        _, new = gcra(tats, second * MICROS, windows)
        assert new is not None
        tats = list(new)
    reply, refused = gcra(tats, 70 * MICROS, windows)
    assert reply[0] == 0
    assert refused is None  # nothing stored
    assert reply[1] == 1  # the minute window still has room: it was not charged
    assert reply[4] == 0  # the hour has none
    assert reply[6] > 0  # and says how long until it has


def test_a_lease_gets_as_many_as_every_window_has_room_for() -> None:
    minute, hour = Window(10, 60), Window(4, 3600)
    windows = [(w.interval, w.capacity) for w in (minute, hour)]
    reply, tats = gcra([None, None], 0, windows, wanted=6)
    assert reply[0] == 4  # the hour has room for four: four are granted, and counted
    assert (reply[1], reply[4]) == (6, 0)
    assert tats == [4 * minute.interval, 4 * hour.interval]
    reply, tats = gcra(tats, 0, windows, wanted=6)
    assert (reply[0], tats) == (0, None)  # nothing left: a refusal, nothing charged


@pytest.fixture
async def script_limiter() -> Limiter:
    return Limiter(Settings(redis_url=REDIS_URL))


async def test_the_redis_script_agrees_exactly_with_the_reference_model(
    script_limiter: Limiter,
) -> None:
    """Random request sequences over random multi-window policies: the script's reply and the
    TATs it stores match the model's, figure for figure; every key has a TTL."""
    rng = random.Random(11)
    redis: Redis = script_limiter.redis  # type: ignore[assignment]
    try:
        for sequence in range(40):
            # Intervals of at least 2 s: the keys' TTLs run on Redis's own clock, and must not
            # expire during the test while the simulated clock says they should still exist.
            windows = [
                Window(rng.randint(1, 5), rng.choice((10, 60, 3600)))
                for _ in range(rng.randint(1, 3))
            ]
            keys = [f"test-gcra:{uuid.uuid4().hex}:{i}" for i in range(len(windows))]
            pairs = [(w.interval, w.capacity) for w in windows]
            model: list[int | None] = [None] * len(windows)
            now = 1_700_000_000 * MICROS + rng.randint(0, MICROS)
            for _ in range(30):
                now += rng.choice((0, 1, rng.randint(0, 5 * MICROS), rng.randint(0, 90 * MICROS)))
                expected, stored = gcra(model, now, pairs)
                reply = await script_limiter.run(keys, _args(*windows), now=now)
                assert reply == expected, (sequence, windows)
                if stored is not None:
                    model = list(stored)
                assert [int(v) if v else None for v in await redis.mget(keys)] == model
            for key, tat in zip(keys, model, strict=True):
                if tat is not None:
                    assert await redis.pttl(key) > 0
            await redis.delete(*keys)
    finally:
        await script_limiter.aclose()


async def test_one_script_call_charges_a_batch_of_requests_in_order(
    script_limiter: Limiter,
) -> None:
    """Random batches of requests over shared keys, each asking for one or (a worker's lease)
    several, each batch one script call: every reply and every stored TAT is the model's, as if
    the requests had come one at a time."""
    rng = random.Random(12)
    redis: Redis = script_limiter.redis  # type: ignore[assignment]
    keys = [f"test-batch:{uuid.uuid4().hex}:{i}" for i in range(4)]
    windows = {key: Window(rng.randint(1, 4), rng.choice((10, 60))) for key in keys}
    model: dict[str, int | None] = dict.fromkeys(keys)
    now = 1_700_000_000 * MICROS
    try:
        for _ in range(30):
            now += rng.choice((0, rng.randint(0, 20 * MICROS)))
            batch = [
                (rng.sample(keys, rng.randint(1, 3)), rng.choice((1, 1, 2, 3, 6)))
                for _ in range(rng.randint(1, 6))
            ]
            expected = []
            for request, wanted in batch:
                pairs = [(windows[k].interval, windows[k].capacity) for k in request]
                reply, stored = gcra([model[k] for k in request], now, pairs, wanted)
                expected.append(reply)
                if stored is not None:
                    model.update(zip(request, stored, strict=True))
            requests = [
                (request, _args(*(windows[k] for k in request)), wanted)
                for request, wanted in batch
            ]
            assert await script_limiter.run_batch(requests, now) == expected
            assert [int(v) if v else None for v in await redis.mget(keys)] == list(model.values())
        await redis.delete(*keys)
    finally:
        await script_limiter.aclose()


async def test_concurrent_requests_share_a_call_and_each_gets_its_own_answer(
    script_limiter: Limiter,
) -> None:
    """Twelve requests in flight against a budget of five: exactly five are let through, each
    sees its own place in the window, and they took fewer round trips than requests."""
    calls = 0
    script = script_limiter.script

    async def counted(*args: object, **kwargs: object) -> object:
        nonlocal calls
        calls += 1
        return await script(*args, **kwargs)  # type: ignore[arg-type]

    script_limiter.script = counted  # type: ignore[assignment]
    key = f"test-coalesce:{uuid.uuid4().hex}"
    try:
        replies = await asyncio.gather(
            *(script_limiter.run([key], _args(Window(5, 60))) for _ in range(12))
        )
        assert [r[0] for r in replies if r] == [1] * 5 + [0] * 7
        assert [r[1] for r in replies if r][:5] == [4, 3, 2, 1, 0]
        assert calls < 12
    finally:
        await script_limiter.redis.delete(key)  # type: ignore[union-attr]
        await script_limiter.aclose()


# --- leases: a busy caller's worker holds requests Redis already counted ---------------------


def _counting(limiter: Limiter) -> list[int]:
    """What each request sent to Redis asked for (1, or a lease's size)."""
    asked: list[int] = []
    queue = limiter._queue

    def counted(request: tuple[object, object, int]) -> object:
        asked.append(request[2])
        return queue(request)  # type: ignore[arg-type]

    limiter._queue = counted  # type: ignore[method-assign,assignment]
    return asked


async def test_a_busy_caller_is_admitted_from_leases_and_sees_every_request_counted() -> None:
    """Sixty requests one after another: most are admitted without a round trip, Redis has
    counted every one of them (and the lease left over), and the RateLimit figure still falls
    by one per request."""
    limiter = Limiter(Settings(redis_url=REDIS_URL, rate_limit_lease_max=8))
    asked = _counting(limiter)
    window = Window(1000, 3600)  # no refill worth a request during the test
    key = f"test-lease:{uuid.uuid4().hex}"
    try:
        replies = [await limiter.run([key], _args(window), lease=True) for _ in range(60)]
        assert [r[0] for r in replies if r] == [1] * 60
        assert [r[1] for r in replies if r] == list(range(999, 939, -1))
        assert asked[:4] == [1, 2, 4, 8]  # a first request asks for one; then the rate tells
        assert len(asked) < 15
        # Redis counted what it granted: the requests admitted and what this worker holds.
        await asyncio.gather(*(h.pending for h in limiter._leases.values() if h.pending))
        counted = sum(asked)
        probe = await Limiter(Settings(redis_url=REDIS_URL)).run([key], _args(window))
        assert probe is not None
        assert probe[1] == 1000 - counted - 1
        assert 60 <= counted <= 60 + 8 + 4
    finally:
        await limiter.redis.delete(key)  # type: ignore[union-attr]
        await limiter.aclose()


async def test_a_tight_budget_is_never_leased_so_its_caller_is_never_refused_early() -> None:
    """A fast caller on 5/minute, as a user whose requests land on two workers in turn: each
    request asks Redis for one, and all five are admitted."""
    window = Window(5, 60)
    key = f"test-lease-tight:{uuid.uuid4().hex}"
    workers = [Limiter(Settings(redis_url=REDIS_URL)) for _ in range(2)]
    asked = [_counting(worker) for worker in workers]
    try:
        replies = [
            await workers[turn % 2].run([key], _args(window), lease=True) for turn in range(7)
        ]
        assert [r[0] if r else None for r in replies] == [1, 1, 1, 1, 1, 0, 0]
        assert asked[0] + asked[1] == [1] * 7
    finally:
        await workers[0].redis.delete(key)  # type: ignore[union-attr]
        for worker in workers:
            await worker.aclose()


async def test_leases_never_overdraw_a_budget_shared_by_two_workers() -> None:
    """Two workers, 16 requests in flight on each, against one budget of 100: no more than the
    budget (and its refill during the test) is admitted, fewer round trips than requests are
    made, and what the leases strand costs at most a lease per worker."""
    window = Window(100, 3600)
    key = f"test-lease-shared:{uuid.uuid4().hex}"
    workers = [Limiter(Settings(redis_url=REDIS_URL, rate_limit_lease_max=8)) for _ in range(2)]
    asked = [_counting(worker) for worker in workers]
    admitted = 0

    async def caller(limiter: Limiter) -> None:
        nonlocal admitted
        for _ in range(10):
            reply = await limiter.run([key], _args(window), lease=True)
            assert reply is not None
            admitted += reply[0]

    try:
        await asyncio.gather(*(caller(w) for w in workers for _ in range(16)))
        assert 100 - 2 * (8 + 4) <= admitted <= 100
        assert sum(map(len, asked)) < admitted
    finally:
        await workers[0].redis.delete(key)  # type: ignore[union-attr]
        for worker in workers:
            await worker.aclose()


async def test_an_occasional_caller_and_an_expired_lease_ask_for_one() -> None:
    """A caller slower than the lease's lifetime asks Redis for exactly one request each
    time; a lease not spent in its lifetime is not used after it."""
    limiter = Limiter(Settings(redis_url=REDIS_URL, rate_limit_lease_seconds=0.05))
    asked = _counting(limiter)
    window = Window(1000, 3600)
    key = f"test-lease-slow:{uuid.uuid4().hex}"
    try:
        for _ in range(4):
            assert await limiter.run([key], _args(window), lease=True)
            await asyncio.sleep(0.06)
        assert asked == [1, 1, 1, 1]
        asked.clear()
        for _ in range(12):  # busy: leases grow
            await limiter.run([key], _args(window), lease=True)
        assert max(asked) > 1
        await asyncio.gather(*(h.pending for h in limiter._leases.values() if h.pending))
        asked.clear()
        await asyncio.sleep(0.06)
        await limiter.run([key], _args(window), lease=True)
        assert asked == [1]  # what the expired lease held was not used
    finally:
        await limiter.redis.delete(key)  # type: ignore[union-attr]
        await limiter.aclose()


async def test_leases_off_and_password_budgets_ask_for_one_request_at_a_time(
    make_app: Callable[..., FastAPI],
) -> None:
    limiter = Limiter(Settings(redis_url=REDIS_URL, rate_limit_lease_max=1))
    asked = _counting(limiter)
    key = f"test-lease-off:{uuid.uuid4().hex}"
    try:
        for _ in range(20):
            await limiter.run([key], _args(Window(1000, 3600)), lease=True)
        assert asked == [1] * 20
    finally:
        await limiter.redis.delete(key)  # type: ignore[union-attr]
        await limiter.aclose()
    app = make_app(redis_url=REDIS_URL, rate_limit_login="5/minute")
    asked = _counting(app.state.limiter)
    async with _client(app) as client:
        codes = [(await _login(client, "someone@example.com")).status_code for _ in range(7)]
    assert codes == [401] * 5 + [429] * 2
    assert asked == [1] * 7  # a login's client and password budgets are charged exactly


@pytest.mark.parametrize(
    ("host", "identity"),
    [
        ("203.0.113.9", "203.0.113.9"),
        ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:ffff:ffff:ffff:ffff", "2001:db8:1:2::/64"),
        ("::ffff:198.51.100.7", "198.51.100.7"),
        ("testclient", "testclient"),
    ],
)
def test_client_identity_buckets_ipv6_per_64(host: str, identity: str) -> None:
    assert client_identity(host) == identity


# --- apps ---------------------------------------------------------------------------------------


@pytest.fixture(params=["redis", "memory"])
def limited(
    request: pytest.FixtureRequest, make_app: Callable[..., FastAPI]
) -> Callable[..., FastAPI]:
    """Apps on the real Redis or in memory (the embedded default)."""
    redis_url = REDIS_URL if request.param == "redis" else None

    def make(**overrides: object) -> FastAPI:
        return make_app(redis_url=redis_url, **overrides)

    return make


def _client(app: FastAPI, address: str = "127.0.0.1") -> httpx.AsyncClient:
    return client_for(app, client=(address, 40000))


async def _login(
    client: httpx.AsyncClient, username: str, password: str = "wrong-password", **headers: str
) -> httpx.Response:
    return await client.post(
        "/api/v1/auth/token", data={"username": username, "password": password}, headers=headers
    )


# The headers of draft-ietf-httpapi-ratelimit-headers-11: Structured Field lists of items.
POLICY_ITEM = re.compile(r'^"(?P<name>[a-z-]+-\d+s)";q=(?P<q>\d+);w=(?P<w>\d+)$')
STATE_ITEM = re.compile(r'^"(?P<name>[a-z-]+-\d+s)";r=(?P<r>\d+);t=(?P<t>\d+)$')


def _items(value: str, pattern: re.Pattern[str]) -> dict[str, dict[str, int]]:
    items = {}
    for item in value.split(", "):
        match = pattern.match(item)
        assert match, item
        name = match.group("name")
        items[name] = {k: int(v) for k, v in match.groupdict().items() if k != "name"}
    return items


def policies(response: httpx.Response) -> dict[str, dict[str, int]]:
    return _items(response.headers["ratelimit-policy"], POLICY_ITEM)


def states(response: httpx.Response) -> dict[str, dict[str, int]]:
    return _items(response.headers["ratelimit"], STATE_ITEM)


# --- hole 2: nothing was limited before authentication ------------------------------------------


async def test_bad_bearer_tokens_are_limited_before_authentication(
    limited: Callable[..., FastAPI],
) -> None:
    app = limited(rate_limit_client="4/minute")
    async with _client(app) as client:
        bad = {"Authorization": "Bearer not-a-token"}
        responses = [await client.get("/api/v1/users/me", headers=bad) for _ in range(5)]
    assert [r.status_code for r in responses] == [401, 401, 401, 401, 429]
    assert_problem(responses[4], 429, "rate_limit.exceeded")
    assert 1 <= int(responses[4].headers["retry-after"]) <= 15
    # The 401s carry the budget they spent.
    assert [states(r)["client-60s"]["r"] for r in responses] == [3, 2, 1, 0, 0]


async def test_bad_api_keys_are_limited_before_authentication(
    limited: Callable[..., FastAPI],
) -> None:
    app = limited(rate_limit_client="3/minute")
    async with _client(app) as client:
        responses = [
            await client.get("/api/v1/items", headers={"X-API-Key": f"bpk_abc{i}_{'x' * 40}"})
            for i in range(4)
        ]
    assert [r.status_code for r in responses] == [401, 401, 401, 429]


async def test_require_admin_runs_after_the_limiter(
    limited: Callable[..., FastAPI], create_user: CreateUser
) -> None:
    user = await create_user()
    app = limited(rate_limit_user="2/minute")
    async with _client(app) as client:
        headers = await login(client, user.email or "")
        responses = [await client.get("/api/v1/api-keys", headers=headers) for _ in range(3)]
    assert [r.status_code for r in responses] == [403, 403, 429]
    assert states(responses[0])["user-60s"]["r"] == 1  # the 403 spent the user's budget


async def test_wrong_current_password_spends_the_login_budget(
    limited: Callable[..., FastAPI], create_user: CreateUser
) -> None:
    user = await create_user()
    app = limited(rate_limit_login="3/minute")
    async with _client(app) as client:
        headers = await login(client, user.email or "")  # one login: 2 left for this address
        guesses = [
            await client.patch(
                "/api/v1/users/me",
                json={"password": "new-password-123", "current_password": f"guess-{i}"},
                headers=headers,
            )
            for i in range(3)
        ]
    assert [r.status_code for r in guesses] == [403, 403, 429]
    assert_problem(guesses[2], 429, "rate_limit.exceeded")


# --- hole 3: the login limiter's keys -----------------------------------------------------------


async def test_failures_elsewhere_do_not_lock_the_owner_out_of_their_own_address(
    limited: Callable[..., FastAPI], create_user: CreateUser
) -> None:
    user = await create_user()
    app = limited(rate_limit_login="3/minute", trusted_proxies=["10.0.0.0/8"])
    async with _client(app, "10.0.0.1") as proxy:  # the ingress, naming each client
        attacker = [
            (
                await _login(proxy, user.email or "", **{"X-Forwarded-For": "198.51.100.7"})
            ).status_code
            for _ in range(5)
        ]
        botnet = [
            (
                await _login(proxy, user.email or "", **{"X-Forwarded-For": f"192.0.2.{i}"})
            ).status_code
            for i in range(5)
        ]
        owner = await _login(
            proxy, user.email or "", PASSWORD, **{"X-Forwarded-For": "203.0.113.5"}
        )
    assert attacker == [401, 401, 401, 429, 429]  # per address and username
    assert botnet == [401] * 5  # one try each: the per-username budget is looser
    assert owner.status_code == 200, owner.text


async def test_the_username_budget_holds_against_many_addresses(
    limited: Callable[..., FastAPI],
) -> None:
    app = limited(rate_limit_login_username="4/hour", trusted_proxies=["10.0.0.0/8"])
    async with _client(app, "10.0.0.1") as proxy:
        statuses = [
            (await _login(proxy, "Target@Example.com ", **{"X-Forwarded-For": f"192.0.2.{i}"}))
            for i in range(5)
        ]
    assert [r.status_code for r in statuses] == [401, 401, 401, 401, 429]  # case-folded, trimmed
    assert "login-username-3600s" in statuses[4].json()["detail"]


async def test_the_address_budget_holds_across_usernames(
    limited: Callable[..., FastAPI],
) -> None:
    app = limited(rate_limit_login_ip="3/minute")
    async with _client(app) as client:
        statuses = [(await _login(client, f"u{i}@example.com")).status_code for i in range(4)]
        # A spoofed X-Forwarded-For from an untrusted peer does not buy a fresh budget.
        spoofed = await _login(client, "u9@example.com", **{"X-Forwarded-For": "192.0.2.1"})
    assert statuses == [401, 401, 401, 429]
    assert spoofed.status_code == 429


async def test_a_huge_username_makes_a_small_key(make_app: Callable[..., FastAPI]) -> None:
    # Slow windows, so that the keys outlive the test (each expires when its window is full).
    slow = {f"rate_limit_{name}": "5/hour" for name in ("client", "login", "login_ip")}
    app = make_app(redis_url=REDIS_URL, rate_limit_login_username="5/hour", **slow)
    prefix = app.state.settings.app_name
    redis = Redis.from_url(REDIS_URL)
    try:
        async with _client(app) as client:
            response = await _login(client, "a" * 600_000 + "@example.com")
        assert response.status_code == 401
        keys = [key async for key in redis.scan_iter(match=f"{prefix}:*")]
        assert len(keys) == 4  # client, login, login-ip, login-username
        assert max(len(key) for key in keys) < 100
        assert min([await redis.pttl(key) for key in keys]) > 0
    finally:
        await redis.aclose()


async def test_an_ipv6_slash_64_is_one_client(limited: Callable[..., FastAPI]) -> None:
    app = limited(rate_limit_login_ip="3/minute")
    results = []
    for address in ("2001:db8:0:1::1", "2001:db8:0:1::2", "2001:db8:0:1:dead::3", "2001:db8::9"):
        async with _client(app, address) as client:
            results.append((await _login(client, f"{address}@example.com")).status_code)
    # Three addresses of one /64 share the budget; the next /64 has its own.
    assert results == [401, 401, 401, 401]
    async with _client(app, "2001:db8:0:1:beef::4") as client:
        assert (await _login(client, "x@example.com")).status_code == 429


@pytest.mark.parametrize(
    ("peer", "forwarded", "client"),
    [
        ("203.0.113.9", "1.2.3.4", "203.0.113.9"),  # not a proxy: its header is ignored
        ("10.0.0.5", "1.2.3.4", "1.2.3.4"),
        ("10.0.0.5", "6.6.6.6, 1.2.3.4, 10.0.0.7", "1.2.3.4"),  # right-most untrusted hop
        ("10.0.0.5", "10.0.0.8", "10.0.0.8"),  # all hops trusted: the left-most
        ("10.0.0.5", "garbage, 1.2.3.4", "1.2.3.4"),
        ("10.0.0.5", None, "10.0.0.5"),
    ],
)
async def test_the_client_budget_follows_trusted_proxies_only(
    make_app: Callable[..., FastAPI], peer: str, forwarded: str | None, client: str
) -> None:
    app = make_app(trusted_proxies=["10.1.2.3/8"])  # a network as an operator may write it
    headers = {"X-Forwarded-For": forwarded} if forwarded else {}
    async with _client(app, peer) as c:
        await c.get("/.well-known/jwks.json", headers=headers)
    expected = app.state.frontdoor.client.charge(client_identity(client)).keys
    assert set(app.state.limiter.memory._tats) == set(expected)


# --- one round trip, and the headers -------------------------------------------------------------


async def test_a_known_callers_budgets_share_one_limiter_call_per_request(
    make_app: Callable[..., FastAPI], create_user: CreateUser
) -> None:
    user = await create_user()
    app = make_app(redis_url=REDIS_URL)
    limiter = app.state.limiter
    calls: list[int] = []
    run = limiter.run

    async def counted(keys: list[str], args: list[int], **kwargs: bool) -> object:
        calls.append(len(keys))
        return await run(keys, args, **kwargs)

    limiter.run = counted
    async with _client(app) as client:
        headers = await login(client, user.email or "")
        calls.clear()
        for _ in range(3):
            assert (await client.get("/api/v1/users/me", headers=headers)).status_code == 200
    # First sight on this worker: client budget, then the user's; then both in one call.
    assert calls == [1, 1, 2, 2]


async def test_ratelimit_headers_follow_the_current_draft(
    limited: Callable[..., FastAPI], create_user: CreateUser
) -> None:
    user, other = await create_user(), await create_user()
    app = limited(rate_limit_user="3/minute", rate_limit_client="100/minute;1000/hour")
    async with _client(app) as client:
        headers, other_headers = (
            await login(client, user.email or ""),
            await login(client, other.email or ""),
        )
        responses = [await client.get("/api/v1/users/me", headers=headers) for _ in range(4)]
        other_response = await client.get("/api/v1/users/me", headers=other_headers)
    assert [r.status_code for r in responses] == [200, 200, 200, 429]
    assert policies(responses[0]) == {
        "client-60s": {"q": 100, "w": 60},
        "client-3600s": {"q": 1000, "w": 3600},
        "user-60s": {"q": 3, "w": 60},
    }
    assert [states(r)["user-60s"]["r"] for r in responses] == [2, 1, 0, 0]
    assert 1 <= states(responses[0])["user-60s"]["t"] <= 60
    assert states(responses[0])["client-3600s"]["r"] == 1000 - 3  # two logins, one request
    assert 1 <= int(responses[3].headers["retry-after"]) <= 20  # one request per 20 s
    assert "retry-after" not in responses[0].headers
    assert other_response.status_code == 200  # a separate budget


async def test_error_responses_keep_the_ratelimit_headers(
    limited: Callable[..., FastAPI], user_headers: dict[str, str]
) -> None:
    app = limited()

    async def boom() -> None:
        raise RuntimeError("a bug")

    app.add_api_route("/api/v1/boom", boom, dependencies=[Depends(front_door)])
    async with _client(app) as client:
        answers = {
            401: await client.get("/api/v1/items", headers={"Authorization": "Bearer nope"}),
            403: await client.get("/api/v1/users", headers=user_headers),
            404: await client.get(f"/api/v1/items/{uuid.uuid4()}", headers=user_headers),
            422: await client.post("/api/v1/items", json={}, headers=user_headers),
            500: await client.get("/api/v1/boom", headers=user_headers),
        }
    for status, response in answers.items():
        assert response.status_code == status
        assert "client-60s" in states(response), status
        if status != 401:
            assert "user-60s" in states(response), status


@pytest.mark.parametrize("cors", [False, True], ids=["no-cors", "cors"])
async def test_a_500_carries_every_edge_header(
    cors: bool, limited: Callable[..., FastAPI], user_headers: dict[str, str]
) -> None:
    # Two paths build this 500: the edge's catch-all without CORS, CatchUnhandled inside CORS
    # with it (a browser cannot read a response without its CORS headers).
    origin = "https://app.example"
    app = limited(cors_origins=[origin] if cors else [])

    async def boom() -> None:
        raise RuntimeError("a bug")

    app.add_api_route("/api/v1/boom", boom, dependencies=[Depends(front_door)])
    async with _client(app) as client:
        response = await client.get(
            "/api/v1/boom", headers=user_headers | {"Origin": origin, "X-Request-ID": "boom-1"}
        )
    assert_problem(response, 500, "internal")
    assert response.headers["x-request-id"] == "boom-1"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert "default-src 'none'" in response.headers["content-security-policy"]
    assert "user-60s" in states(response)
    assert "user-60s" in policies(response)
    if cors:
        assert response.headers["access-control-allow-origin"] == origin
    else:
        assert "access-control-allow-origin" not in response.headers


async def test_cors_exposes_the_ratelimit_headers(
    make_app: Callable[..., FastAPI], user_headers: dict[str, str]
) -> None:
    app = make_app(cors_origins=["https://app.example"])
    async with _client(app) as client:
        origin = {"Origin": "https://app.example"}
        response = await client.get("/api/v1/users/me", headers=user_headers | origin)
    exposed = {
        h.strip().lower() for h in response.headers["access-control-expose-headers"].split(",")
    }
    assert {"ratelimit-policy", "ratelimit", "retry-after"} <= exposed


async def test_rate_limit_headers_can_be_turned_off(
    limited: Callable[..., FastAPI], user_headers: dict[str, str]
) -> None:
    app = limited(rate_limit_headers=False, rate_limit_user="1/minute")
    async with _client(app) as client:
        responses = [await client.get("/api/v1/users/me", headers=user_headers) for _ in range(2)]
    assert [r.status_code for r in responses] == [200, 429]
    assert "ratelimit" not in responses[0].headers
    assert responses[1].headers["retry-after"]


async def test_api_keys_use_their_tier_and_exempt_skips(
    limited: Callable[..., FastAPI], create_user: CreateUser
) -> None:
    admin = await create_user(role=Role.admin)
    app = limited(rate_limit_api_key_default="2/minute", rate_limit_user="1000/minute")
    async with _client(app) as client:
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
        exempt = await client.get("/api/v1/users/me", headers={"X-API-Key": keys["exempt"]})
    assert set(states(exempt)) == {"client-60s"}  # only the address's budget


async def test_two_app_instances_share_one_budget_through_redis(
    make_app: Callable[..., FastAPI], user_headers: dict[str, str]
) -> None:
    # Two instances with the same name and Redis stand for two workers or pods.
    name = f"shared-{uuid.uuid4().hex[:8]}"
    first = make_app(redis_url=REDIS_URL, app_name=name, rate_limit_user="4/minute")
    second = make_app(redis_url=REDIS_URL, app_name=name, rate_limit_user="4/minute")
    codes = []
    async with _client(first) as a, _client(second) as b:
        for client in (a, b, a, b, a, b):
            codes.append((await client.get("/api/v1/users/me", headers=user_headers)).status_code)
    assert codes == [200, 200, 200, 200, 429, 429]


# --- configuration and failure modes -------------------------------------------------------------


def test_production_refuses_per_process_limits_unless_asked() -> None:
    production = {
        "app_env": "production",
        "jwt_secret": "s" * 40,
        "database_url": "postgresql://app@db.example/app",
    }
    with pytest.raises(ConfigurationError, match="REDIS_URL"):
        Settings(**production).require_secure()  # type: ignore[arg-type]
    Settings(**production, rate_limit_storage="memory").require_secure()  # type: ignore[arg-type]
    Settings(**production, redis_url=REDIS_URL).require_secure()  # type: ignore[arg-type]
    Settings(**production, rate_limit_enabled=False).require_secure()  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="REDIS_URL"):
        Settings(rate_limit_storage="redis")


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
    async with _client(app) as client:
        responses = [await client.get("/api/v1/users/me", headers=user_headers) for _ in range(4)]
        ready = await client.get("/health/ready")
        metrics = (await client.get("/metrics")).text
    assert app.state.limiter.breaker.is_open  # later calls skip Redis entirely
    outcome = "allowed" if fail_mode == "open" else "rejected"
    assert f'app_rate_limit_storage_errors_total{{outcome="{outcome}"}}' in metrics
    if fail_mode == "open":
        assert [r.status_code for r in responses] == [200] * 4
        assert "ratelimit" not in responses[0].headers  # nothing known to report
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
    window = Window(100, 60)
    try:
        limiter = Limiter(Settings(redis_url=redis.url, rate_limit_fail_mode="closed"))
        # Several connections in the pool, as under concurrent load.
        await asyncio.gather(*(limiter.run([f"user:{n}"], _args(window)) for n in range(8)))
        redis.stop()
        redis = start_redis(redis.port)

        replies = [await limiter.run([f"user:{n}"], _args(window)) for n in range(8)]

        # The new server starts empty (no persistence): each id has one hit counted.
        assert [reply[1] for reply in replies if reply is not None] == [99] * 8
        assert not limiter.breaker.is_open
        await limiter.aclose()
    finally:
        redis.stop()


# --- the front door's shape ---------------------------------------------------------------------


def _calls(dependant: Dependant) -> list[object]:
    return [c for d in dependant.dependencies for c in (d.call, *_calls(d))]


def test_routes_declare_one_flat_front_door(app: FastAPI) -> None:
    routes = {
        (route.path_format, method): route
        for route in iter_route_contexts(app.routes)
        if isinstance(route.original_route, APIRoute)
        for method in route.methods or ()
    }
    me = _calls(routes["/api/v1/users/me", "GET"].dependant)
    assert set(me) == {front_door}  # the router's and the parameter's, cached; no session
    assert not [c for c in me if isinstance(c, SecurityBase)]  # headers are read directly
    keys = _calls(routes["/api/v1/api-keys", "POST"].dependant)
    assert keys.index(front_door) > keys.index(require_admin)  # require_admin needs it first


async def test_the_openapi_document_still_declares_both_schemes(client: httpx.AsyncClient) -> None:
    document = (await client.get("/openapi.json")).json()
    either: list[dict[str, list[str]]] = [{"OAuth2PasswordBearer": []}, {"APIKeyHeader": []}]
    for path, item in document["paths"].items():
        for method, operation in item.items():
            public = not path.startswith("/api/v1/") or path == "/api/v1/auth/token"
            assert operation.get("security") == (None if public else either), (method, path)
