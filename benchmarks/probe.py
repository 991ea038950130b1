"""`python -m benchmarks.probe URL`: a paced, open-loop probe of one route.

Requests leave on a fixed schedule (`--rate` per second) whatever the server does, each on a
free keep-alive connection (a new one when all are busy), and each latency counts from the
moment its request was due, not from when it was sent: a stalled server makes the figures
worse instead of slowing the probe down (wrk's closed loop hides a stall: each connection waits
for its answer before it asks again). Prints one line, `PROBE {json}`: requests, statuses,
p50/p99/max in ms. benchmarks/run.py runs it in its own process on the client's CPU.

httpx costs a few hundred µs of client CPU per request: at the probe's rate that is a few
per cent of a core, and it is the same in the idle and the loaded run that are compared.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections import Counter

import httpx


def percentile(values: list[float], q: float) -> float:
    """The nearest-rank percentile (q in 0..100) of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, round(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


async def probe(url: str, *, rate: float, duration: float, token: str | None) -> dict[str, object]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    limits = httpx.Limits(max_connections=256, max_keepalive_connections=32)
    latencies: list[float] = []
    statuses: Counter[str] = Counter()
    loop = asyncio.get_running_loop()
    async with httpx.AsyncClient(headers=headers, limits=limits, timeout=60) as client:
        await client.get(url)  # one connection open before the clock starts

        async def one(due: float) -> None:
            try:
                answer = await client.get(url)
                statuses[str(answer.status_code)] += 1
            except httpx.HTTPError as error:
                statuses[type(error).__name__] += 1
            latencies.append(loop.time() - due)

        start = loop.time()
        tasks = []
        for n in range(int(rate * duration)):
            due = start + n / rate
            await asyncio.sleep(max(0.0, due - loop.time()))
            tasks.append(asyncio.create_task(one(due)))
        await asyncio.gather(*tasks)
    return {
        "requests": len(latencies),
        "statuses": dict(statuses),
        "p50_ms": round(1000 * percentile(latencies, 50), 3),
        "p99_ms": round(1000 * percentile(latencies, 99), 3),
        "max_ms": round(1000 * max(latencies), 3),
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.probe", description=__doc__)
    p.add_argument("url")
    p.add_argument("--rate", type=float, default=50, help="requests per second (%(default)s)")
    p.add_argument("--duration", type=float, default=10, help="seconds (%(default)s)")
    p.add_argument("--token", help="bearer token")
    opts = p.parse_args(argv)
    figures = asyncio.run(probe(opts.url, rate=opts.rate, duration=opts.duration, token=opts.token))
    print("PROBE " + json.dumps(figures), flush=True)


if __name__ == "__main__":
    main()
