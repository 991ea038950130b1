"""`python -m benchmarks.ab`: interleaved A/B rounds of server settings on `/users/me`.

Identical full-harness runs on this 2-vCPU VM can land tens of percent apart, so a setting's
effect is measured here within rounds: each round starts every variant in turn (the full
stack under the Dockerfile's command, pinned like `benchmarks.run`), warms it up, waits for a
quiet machine, and loads it with wrk. Per variant and round it prints req/s and the server's
CPU per request (Gunicorn and its workers, from /proc). A diagnosis, not a target.

    python -m benchmarks.ab --rounds 2 on: off:RATE_LIMIT_ENABLED=false
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
from pathlib import Path

from benchmarks.run import login, result, server_env, start, wait_quiet, wrk
from loadtests.sizing.run import process_table, tree_cpu_seconds
from tests.support.api import seed_loadtest
from tests.support.databases import REDIS_URL, create_database, drop_database


def variant(text: str) -> tuple[str, dict[str, str]]:
    name, _, settings = text.partition(":")
    return name, dict(pair.split("=", 1) for pair in settings.split(",") if pair)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.ab", description=__doc__)
    p.add_argument("variants", nargs="+", type=variant, metavar="NAME:VAR=VALUE,...")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--warm-up", type=int, default=10, help="seconds of load first (%(default)s)")
    p.add_argument("--duration", type=int, default=15, help="measured seconds (%(default)s)")
    p.add_argument("--connections", type=int, default=32)
    p.add_argument("--out", type=Path, default=Path("build/benchmarks-ab"))
    opts = p.parse_args(argv)
    opts.out.mkdir(parents=True, exist_ok=True)

    password = secrets.token_urlsafe(12)
    name, database_url = asyncio.run(create_database("ab"))
    base = server_env(database_url, REDIS_URL.rsplit("/", 1)[0] + "/14")
    print("| round | variant | req/s | server CPU ms/req |")
    print("|---:|---|---:|---:|")
    try:
        seed_loadtest(database_url, 1, password=password)
        token: str | None = None
        for round_ in range(1, opts.rounds + 1):
            for label, env in opts.variants:
                server = start(None, base | env, opts.out)
                try:
                    token = token or login(server.base_url, password)
                    url = server.base_url + "/api/v1/users/me"
                    run = {"duration": opts.warm_up, "connections": opts.connections}
                    result(wrk(url, token=token, **run), 60)
                    wait_quiet(0.7, 60)
                    before = tree_cpu_seconds(process_table(), server.process.pid)
                    run["duration"] = opts.duration
                    figures = result(wrk(url, token=token, **run), 60)
                    cpu = tree_cpu_seconds(process_table(), server.process.pid) - before
                finally:
                    server.stop()
                ms = 1000 * cpu / figures["requests"]
                print(f"| {round_} | {label} | {figures['rps']:.0f} | {ms:.2f} |", flush=True)
    finally:
        asyncio.run(drop_database(name))


if __name__ == "__main__":
    main()
