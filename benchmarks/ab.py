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
from pathlib import Path

from benchmarks.run import (
    login,
    result,
    seeded_database,
    server_env,
    start,
    variant,
    wait_quiet,
    wrk,
)
from loadtests.sizing.run import process_table, tree_cpu_seconds


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

    print("| round | variant | req/s | server CPU ms/req | p50 ms | p99 ms |")
    print("|---:|---|---:|---:|---:|---:|")
    with seeded_database("ab") as (database_url, password):
        base = server_env(database_url)
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
                print(
                    f"| {round_} | {label} | {figures['rps']:.0f} | {ms:.2f} "
                    f"| {figures['p50_ms']:.2f} | {figures['p99_ms']:.2f} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
