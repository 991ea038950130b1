"""`python -m benchmarks.frontdoor`: what the limiter adds to a request, in process.

The whole app (create_app) on real PostgreSQL and Redis, driven through httpx's ASGI transport
with `--in-flight` requests at a time, `GET /api/v1/users/me` with a bearer token: this
process's CPU per request (app and client together) with the limiter on (Redis) and off,
interleaved round by round, so a busy machine shifts both alike. The difference is what the
front door's limit checks cost; it counts CPU, not waiting, so it holds up better than req/s on
a shared machine. Run it pinned to one CPU: `taskset -c 0 .venv/bin/python -m
benchmarks.frontdoor`. A diagnosis next to `benchmarks.run`, not a target.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid

import httpx

from benchmarks.limiter import cpu_seconds
from service.auth.passwords import PasswordHasher
from service.main import create_app
from service.settings import Settings
from service.users.models import User
from service.users.repository import UserRepository
from tests.support.databases import REDIS_URL, create_database, drop_database

PASSWORD = "benchmark-password"  # noqa: S105 (a throwaway database)
GENEROUS = "100000000/minute"  # never reached: every request is checked, none refused


def settings(database_url: str, redis_url: str, *, limiter: bool) -> Settings:
    return Settings(
        database_url=database_url,
        redis_url=redis_url,
        app_name=f"bench-{uuid.uuid4().hex[:8]}",
        access_log="off",
        log_level="WARNING",  # httpx logs each request at INFO
        metrics_enabled=False,
        rate_limit_enabled=limiter,
        rate_limit_user=GENEROUS,
        rate_limit_login=GENEROUS,
        rate_limit_anonymous=GENEROUS,  # RATE_LIMIT_CLIENT's former name: both versions read it
        argon2_time_cost=1,
        argon2_memory_cost=1024,
    )


async def measure(app: object, token: str, *, requests: int, in_flight: int) -> float:
    """CPU µs per request of this process."""
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:

        async def loop(n: int) -> None:
            for _ in range(n):
                response = await client.get("/api/v1/users/me", headers=headers)
                assert response.status_code == 200, response.text

        await asyncio.gather(*(loop(20) for _ in range(in_flight)))  # warm-up
        cpu = cpu_seconds()
        await asyncio.gather(*(loop(requests // in_flight) for _ in range(in_flight)))
        return 1e6 * (cpu_seconds() - cpu) / (requests // in_flight * in_flight)


async def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.frontdoor", description=__doc__)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--requests", type=int, default=2000, help="per round and variant")
    p.add_argument("--in-flight", type=int, default=16)
    p.add_argument("--redis-url", default=REDIS_URL.rsplit("/", 1)[0] + "/14")
    opts = p.parse_args(argv)
    name, database_url = await create_database("bench")
    apps = {
        label: create_app(settings(database_url, opts.redis_url, limiter=label == "on"))
        for label in ("on", "off")
    }
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
        on, off = (statistics.median(figures[label]) for label in ("on", "off"))
        print(
            f"\nmedians: on {on:.0f} µs, off {off:.0f} µs; the limiter adds {on - off:.0f} µs "
            f"({100 * (on - off) / on:.0f} % of a request's CPU here), "
            f"{time.monotonic() - started:.0f} s"
        )
    finally:
        for app in apps.values():
            await app.state.engine.dispose()
        await drop_database(name)


if __name__ == "__main__":
    asyncio.run(main())
