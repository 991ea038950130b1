"""`python -m benchmarks.limiter`: the rate limiter's own cost, outside the server.

Client CPU (this process's user + system time) and wall time per request of the service's
limiter (service/ratelimit: one GCRA script call that charges every window of a request and
returns the header figures: one window, or the front door's usual two, a client's and a user's)
against what the `limits` library needs for the same (`hit`, plus `get_window_stats` for the
headers; both of its strategies), one request at a time and with 16 in flight (what one
worker carries under the benchmark's 32 connections and 2 workers).
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

from service.ratelimit.gcra import Window
from service.ratelimit.limiter import Limiter
from service.settings import Settings
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


async def measure_script(
    limiter: Limiter, *, requests: int, in_flight: int, windows: int
) -> tuple[float, float]:
    """(client CPU µs, wall µs) per request of one script call over `windows` windows."""
    window = Window(100_000_000, 60)  # never reached
    args = [window.interval, window.capacity] * windows
    prefix = f"bench-{uuid.uuid4().hex}"

    async def loop(n: int, user: str) -> None:
        keys = [f"{prefix}:{w}:{user}" for w in range(windows)]
        for _ in range(n):
            await limiter.run(keys, args)

    users = [str(i) for i in range(in_flight)]
    await asyncio.gather(*(loop(50, u) for u in users))
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
    limiter = Limiter(Settings(redis_url=opts.redis_url))
    try:
        for in_flight in (1, 16):
            for windows in (1, 2):
                cpu, wall = await measure_script(
                    limiter, requests=opts.requests, in_flight=in_flight, windows=windows
                )
                calls = f"1 script call, {windows} window{'s' * (windows > 1)}, with figures"
                print(f"| gcra (this service) | {in_flight} | {calls} | {cpu:.0f} | {wall:.0f} |")
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
        await limiter.aclose()


if __name__ == "__main__":
    asyncio.run(main())
