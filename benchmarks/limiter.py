"""`python -m benchmarks.limiter`: the rate limiter's own cost, outside the server.

Client CPU (this process's user + system time) and wall time per request of the calls the
service's limiter makes on Redis: `hit` alone (RATE_LIMIT_HEADERS=false) and `hit` followed by
`get_window_stats` (the RateLimit-* headers), for both strategies, one request at a time and
with 16 in flight (what one worker carries under the benchmark's 32 connections and 2 workers).
Run it pinned to one CPU, like the server: `taskset -c 0 .venv/bin/python -m benchmarks.limiter`.
A diagnosis next to `benchmarks.run`, not a target.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import time
import uuid

from limits import parse
from limits.aio.storage import RedisStorage
from limits.aio.strategies import (
    MovingWindowRateLimiter,
    RateLimiter,
    SlidingWindowCounterRateLimiter,
)

from tests.support.databases import REDIS_URL

STRATEGIES: dict[str, type[RateLimiter]] = {
    "moving-window": MovingWindowRateLimiter,
    "sliding-window-counter": SlidingWindowCounterRateLimiter,
}


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def measure(
    strategy: RateLimiter, *, requests: int, in_flight: int, with_stats: bool
) -> tuple[float, float]:
    """(client CPU µs, wall µs) per request."""
    item = parse("100000000/minute")  # never reached: every call counts, none is refused

    async def one(user: str) -> None:
        await strategy.hit(item, "user", user)
        if with_stats:
            await strategy.get_window_stats(item, "user", user)

    async def loop(n: int, user: str) -> None:
        for _ in range(n):
            await one(user)

    users = [str(i) for i in range(in_flight)]
    await asyncio.gather(*(loop(50, u) for u in users))  # warm-up: connections, scripts
    cpu, wall = cpu_seconds(), time.perf_counter()
    await asyncio.gather(*(loop(requests // in_flight, u) for u in users))
    done = requests // in_flight * in_flight
    return 1e6 * (cpu_seconds() - cpu) / done, 1e6 * (time.perf_counter() - wall) / done


async def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.limiter", description=__doc__)
    p.add_argument("--requests", type=int, default=4000, help="per measurement (%(default)s)")
    p.add_argument("--redis-url", default=REDIS_URL.rsplit("/", 1)[0] + "/14")
    opts = p.parse_args(argv)
    storage = RedisStorage(
        "async+" + opts.redis_url, implementation="redispy", key_prefix=f"bench-{uuid.uuid4().hex}"
    )
    print("| strategy | in flight | calls per request | client CPU µs/req | wall µs/req |")
    print("|---|---:|---|---:|---:|")
    try:
        for name, strategy_class in STRATEGIES.items():
            strategy = strategy_class(storage)
            for in_flight in (1, 16):
                for with_stats in (False, True):
                    cpu, wall = await measure(
                        strategy, requests=opts.requests, in_flight=in_flight, with_stats=with_stats
                    )
                    calls = "hit + get_window_stats" if with_stats else "hit"
                    print(f"| {name} | {in_flight} | {calls} | {cpu:.0f} | {wall:.0f} |")
    finally:
        await storage.reset()


if __name__ == "__main__":
    asyncio.run(main())
