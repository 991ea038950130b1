"""`python -m benchmarks.middleware`: what the ASGI middleware costs, in one process.

Calls the app directly (no server, no sockets) for `GET /health/live` with production settings
and Prometheus in multiprocess mode, as under Gunicorn: the floor, the full app, and the full
app without its middleware (service.kit.edge.Edge, plus CORS and ProxyHeaders when configured).
CPU µs per request, medians of interleaved rounds. Run it pinned to one CPU:
`taskset -c 0 .venv/bin/python -m benchmarks.middleware`.
A diagnosis next to `benchmarks.run`, not a target.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import statistics
import tempfile
from typing import Any

SECRET = "benchmark-" + "s" * 40


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def get_scope(path: str, headers: list[tuple[bytes, bytes]]) -> dict[str, Any]:
    """The ASGI scope Uvicorn gives a GET of `path` from a local client."""
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"127.0.0.1:8000"), *headers],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }


async def per_request(app: Any, path: str, requests: int) -> float:
    """CPU µs per request of `requests` ASGI calls of GET `path`."""
    scope = get_scope(path, [(b"user-agent", b"wrk")])

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        return None

    started = cpu_seconds()
    for _ in range(requests):
        await app(dict(scope, state={}), receive, send)
    return 1e6 * (cpu_seconds() - started) / requests


async def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.middleware", description=__doc__)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--requests", type=int, default=3000, help="per variant and round")
    p.add_argument("--path", default="/health/live")
    opts = p.parse_args(argv)
    # Before the service is imported: settings and prometheus_client read these once.
    os.environ.update(
        APP_ENV="production",
        JWT_SECRET=SECRET,
        ACCESS_LOG="json",
        RATE_LIMIT_STORAGE="memory",
        # Never connected to: /health/live reads no row, and no lifespan runs here.
        DATABASE_URL="postgresql+asyncpg://postgres@127.0.0.1:5432/postgres",
        PROMETHEUS_MULTIPROC_DIR=tempfile.mkdtemp(prefix="bench-metrics-"),
    )
    from benchmarks.floor_app import app as floor
    from service.main import create_app

    bare = create_app()
    bare.user_middleware = []
    variants: dict[str, Any] = {
        "floor": floor,
        "full": create_app(),
        "full without middleware": bare,
    }
    for app in variants.values():
        await per_request(app, opts.path, 300)  # warm-up
    rounds: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(opts.rounds):
        for name, app in variants.items():
            rounds[name].append(await per_request(app, opts.path, opts.requests))
    print(f"| `GET {opts.path}`, in process | CPU µs per request (median of {opts.rounds}) |")
    print("|---|---:|")
    for name, figures in rounds.items():
        print(f"| {name} | {statistics.median(figures):.1f} |")


if __name__ == "__main__":
    asyncio.run(main())
