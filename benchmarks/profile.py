"""`python -m benchmarks.profile --py-spy PATH`: where a worker's time goes on `/users/me`
(or `--route /health/live`; `--app benchmarks.floor_app:app` profiles the floor instead).

Starts the full stack as benchmarks.run does (limiter on Redis, metrics, JSON access log,
pinned to CPU 0), warms it up, then records one worker with py-spy (on-CPU samples only: a
thread waiting in epoll is idle and not sampled) while wrk loads `GET /api/v1/users/me`. Prints
the share of samples charged to each piece of the stack (a sample goes to the innermost piece
on its stack; also shown: the share with the piece anywhere on the stack) and keeps py-spy's
collapsed stacks in OUT/profile-<name>.txt.
py-spy stays out of the project's venv: `python3 -m venv /tmp/prof && /tmp/prof/bin/pip install
py-spy`. A diagnosis, not a target.
"""

from __future__ import annotations

import argparse
import subprocess
from pathlib import Path
from typing import Any

from benchmarks.run import ME, login, result, seeded_database, server_env, start, worker_pids, wrk

# (label, substrings of a frame that put it under the label). A sample is charged to the piece
# of its innermost frame that matches one; the first match in this order wins for that frame.
PIECES = [
    ("SQLAlchemy greenlet bridge", ("greenlet", "_concurrency_py3k")),
    ("asyncpg driver", ("asyncpg/",)),
    ("SQLAlchemy (session, engine, pool, ORM)", ("sqlalchemy/",)),
    ("rate limiter (limits, redis-py)", ("service/ratelimit", "limits/", "redis/")),
    ("PyJWT", ("jwt/",)),
    ("authentication (service/auth)", ("service/auth/",)),
    ("FastAPI dependency solving", ("fastapi/dependencies/",)),
    ("pydantic (validation, serialisation)", ("pydantic",)),
    ("middleware: request id, access log, metrics", ("service/kit/observability.py",)),
    ("Prometheus client", ("prometheus_client/",)),
    ("uvicorn: HTTP parsing, transport", ("uvicorn/",)),
]
OTHER = "other: Starlette and FastAPI routing, the rest of the middleware, asyncio"


def shares(collapsed: str) -> tuple[int, dict[str, tuple[float, float]]]:
    """(samples, {piece: (share charged to it, share with it anywhere on the stack)}) from
    py-spy's raw output: "frame;frame;... count" lines, root first."""
    total = 0
    labels = [label for label, _ in PIECES] + [OTHER]
    own, anywhere = dict.fromkeys(labels, 0), dict.fromkeys(labels, 0)
    for line in collapsed.splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n, frames = int(count), stack.split(";")
        total += n
        charged = None
        for frame in reversed(frames):
            charged = next((lb for lb, needles in PIECES if any(x in frame for x in needles)), None)
            if charged:
                break
        own[charged or OTHER] += n
        for label, needles in PIECES:
            if any(x in stack for x in needles):
                anywhere[label] += n
    anywhere[OTHER] = own[OTHER]
    return total, {lb: (own[lb] / max(total, 1), anywhere[lb] / max(total, 1)) for lb in labels}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.profile", description=__doc__)
    p.add_argument("--py-spy", required=True, help="py-spy binary")
    p.add_argument("--duration", type=int, default=15, help="seconds recorded (%(default)s)")
    p.add_argument("--connections", type=int, default=32)
    p.add_argument("--name", default="full_on")
    p.add_argument("--route", default=ME, help="the path wrk loads (%(default)s)")
    p.add_argument("--app", default=None, help="another app in the same command (the floor)")
    p.add_argument("--set", action="append", default=[], metavar="VAR=VALUE")
    p.add_argument("--out", type=Path, default=Path("build/benchmarks"))
    opts = p.parse_args(argv)
    opts.out.mkdir(parents=True, exist_ok=True)
    target = opts.out / f"profile-{opts.name}.txt"
    with seeded_database("profile") as (database_url, password):
        env = server_env(database_url) | dict(s.split("=", 1) for s in opts.set)
        server = start(opts.app, env, opts.out)
        try:
            # Only /users/me needs a token (from the service: the floor has no login route).
            load: dict[str, Any] = {"duration": 10, "connections": opts.connections}
            if opts.route == ME:
                load["token"] = login(server.base_url, password)
            result(wrk(server.base_url + opts.route, **load), 90)  # warm-up
            worker = worker_pids(server.process.pid)[0]
            spy = [opts.py_spy, "record", "--pid", str(worker), "--duration", str(opts.duration)]
            spy += ["--rate", "250", "--nonblocking", "--format", "raw", "--output", str(target)]
            recorder = subprocess.Popen(spy, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            load["duration"] = opts.duration + 2
            figures = result(wrk(server.base_url + opts.route, **load), opts.duration + 90)
            recorder.wait(60)
        finally:
            server.stop()
    total, pieces = shares(target.read_text())
    print(f"{opts.name}: {figures['rps']:.0f} req/s under the profiler; {total} samples")
    print("| piece of the stack | share of on-CPU samples, innermost | anywhere on the stack |")
    print("|---|---:|---:|")
    for label, (own, anywhere) in pieces.items():
        print(f"| {label} | {100 * own:.1f} % | {100 * anywhere:.1f} % |")


if __name__ == "__main__":
    main()
