"""`python -m benchmarks.frontdoor`: what the limiter adds to a request, in process.

The whole app (create_app, access log and metrics off: they cost every variant the same) on
real PostgreSQL and Redis, called as ASGI with `--in-flight` requests at a time on uvloop,
`GET /api/v1/users/me` with a bearer token: this process's CPU per request (no HTTP parsing:
the server's share is not here), interleaved round by round, so a busy
machine shifts every variant alike. It counts CPU, not waiting, so it holds up better than
req/s on a shared machine. The variants split what the limiter costs:

- `off`: no limit checks (RATE_LIMIT_ENABLED=false);
- `memory`: the same GCRA checks and headers, in this process, with no wait (the embedded
  store): what the checks themselves cost;
- `suspend`: the same in-process checks after one bare suspension of the request (it yields
  to the event loop once and is resumed through its whole coroutine chain, as after any
  awaited reply): what waiting at all costs;
- `instant`: the Redis path's batching (a future per request, a task per batch), with a store
  that answers without I/O;
- `exact`: Redis, one request per script call (RATE_LIMIT_LEASE_MAX=1): the rest is the
  client's I/O (encoding, the socket, the reply);
- `on`: Redis with the default leases (service/ratelimit/limiter.py): a busy caller's requests
  mostly admitted from what the worker holds, without waiting.
 Run it pinned to one CPU: `taskset -c 0 .venv/bin/python -m
benchmarks.frontdoor`. A diagnosis next to `benchmarks.run`, not a target.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import time
import uuid
from collections.abc import Sequence
from typing import Any

import uvloop

from benchmarks.limiter import cpu_seconds
from benchmarks.middleware import get_scope
from service.auth.passwords import PasswordHasher
from service.main import create_app
from service.ratelimit.limiter import Limiter, Request
from service.settings import Settings
from service.users.models import User
from service.users.repository import UserRepository
from tests.support.databases import REDIS_URL, create_database, drop_database

PASSWORD = "benchmark-password"  # noqa: S105 (a throwaway database)
GENEROUS = "100000000/minute"  # never reached: every request is checked, none refused
LEASE_MAX_DEFAULT: int = Settings.model_fields["rate_limit_lease_max"].default


VARIANTS = ("on", "exact", "instant", "suspend", "memory", "off")


def settings(database_url: str, redis_url: str, *, variant: str) -> Settings:
    return Settings(
        database_url=database_url,
        redis_url=redis_url,
        app_name=f"bench-{uuid.uuid4().hex[:8]}",
        access_log="off",
        log_level="WARNING",
        metrics_enabled=False,
        rate_limit_enabled=variant != "off",
        rate_limit_storage="memory" if variant in ("memory", "suspend") else "redis",
        # `on`: the default lease size (RATE_LIMIT_LEASE_MAX); every other variant: none.
        rate_limit_lease_max=LEASE_MAX_DEFAULT if variant == "on" else 1,
        rate_limit_user=GENEROUS,
        rate_limit_login=GENEROUS,
        rate_limit_client=GENEROUS,
        argon2_time_cost=1,
        argon2_memory_cost=1024,
    )


def answer_at_once(limiter: Limiter) -> None:
    """The `instant` variant: batches are answered from the in-process store, without I/O."""

    async def run_batch(batch: Sequence[Request], now: int | None = None) -> list[object]:
        at = time.time_ns() // 1000 if now is None else now
        return [limiter.memory.run(keys, args, at, wanted) for keys, args, wanted in batch]

    limiter.run_batch = run_batch  # type: ignore[method-assign]


def suspend_once(limiter: Limiter) -> None:
    """The `suspend` variant: the in-process store's answer after one yield to the loop."""
    answer = limiter.run

    async def run(keys: Sequence[str], args: Sequence[int], **kwargs: Any) -> Any:
        await asyncio.sleep(0)
        return await answer(keys, args, **kwargs)

    limiter.run = run  # type: ignore[method-assign,assignment]


async def measure(app: object, token: str, *, requests: int, in_flight: int) -> float:
    """CPU µs per request of this process: the ASGI app called directly, as the server calls it
    (an HTTP client in the same process would suspend and resume with every request too)."""
    scope = get_scope("/api/v1/users/me", [(b"authorization", f"Bearer {token}".encode())])
    statuses: list[int] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    async def loop(n: int) -> None:
        for _ in range(n):
            await app(dict(scope, state={}), receive, send)  # type: ignore[operator]

    await asyncio.gather(*(loop(20) for _ in range(in_flight)))  # warm-up
    cpu = cpu_seconds()
    await asyncio.gather(*(loop(requests // in_flight) for _ in range(in_flight)))
    spent = cpu_seconds() - cpu
    assert set(statuses) == {200}, f"not all 200: {sorted(set(statuses))}"
    return 1e6 * spent / (requests // in_flight * in_flight)


async def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.frontdoor", description=__doc__)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--requests", type=int, default=2000, help="per round and variant")
    p.add_argument("--in-flight", type=int, default=16)
    p.add_argument("--redis-url", default=REDIS_URL.rsplit("/", 1)[0] + "/14")
    opts = p.parse_args(argv)
    name, database_url = await create_database("bench")
    apps = {
        label: create_app(settings(database_url, opts.redis_url, variant=label))
        for label in VARIANTS
    }
    answer_at_once(apps["instant"].state.limiter)
    suspend_once(apps["suspend"].state.limiter)
    # As each Gunicorn worker does once the app is built (gunicorn_conf.post_worker_init):
    # without it, the requests in flight while one waits make the collector walk the whole
    # start-up heap again and again, and waiting looks several times dearer than in a worker.
    gc.freeze()
    try:
        hasher = PasswordHasher(apps["on"].state.settings)
        async with apps["on"].state.sessionmaker() as session, session.begin():
            user = User(email="bench@example.com", hashed_password=await hasher.hash(PASSWORD))
            await UserRepository(session).create(user)
        token = apps["on"].state.token_issuer.issue(str(user.id), [user.role])
        figures: dict[str, list[float]] = {label: [] for label in apps}
        print("| round | limiter | CPU µs/request |")
        print("|---:|---|---:|")
        started = time.monotonic()
        for round_ in range(1, opts.rounds + 1):
            for label, app in apps.items():
                cpu = await measure(app, token, requests=opts.requests, in_flight=opts.in_flight)
                figures[label].append(cpu)
                print(f"| {round_} | {label} | {cpu:.0f} |", flush=True)
        on, exact, instant, suspend, memory, off = (
            statistics.median(figures[label]) for label in VARIANTS
        )
        print(
            f"\nmedians (µs): on {on:.0f}, exact {exact:.0f}, instant {instant:.0f}, "
            f"suspend {suspend:.0f}, memory {memory:.0f}, off {off:.0f}"
        )
        print(f"- the checks and headers (memory - off): {memory - off:.0f}")
        print(f"- one suspension of the request (suspend - memory): {suspend - memory:.0f}")
        print(f"- the batching, a future per request (instant - suspend): {instant - suspend:.0f}")
        print(f"- the Redis client's I/O (exact - instant): {exact - instant:.0f}")
        print(
            f"- one request per call, in all: {exact - off:.0f} ({100 * (exact - off) / off:.0f} %)"
        )
        print(
            f"- with leases (on - off): {on - off:.0f} ({100 * (on - off) / off:.0f} % of `off`), "
            f"{time.monotonic() - started:.0f} s"
        )
    finally:
        for app in apps.values():
            await app.state.engine.dispose()
        await drop_database(name)


if __name__ == "__main__":
    uvloop.run(main())  # the server's loop (uvicorn picks uvloop when it is installed)
