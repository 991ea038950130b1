"""`python -m benchmarks.syscalls`: the server time a Python profile does not show, for the full
stack against the floor on one route (`--route`, default `/health/live`): user against kernel
CPU per request, and system calls and page faults per request, by kind.

The servers are started as benchmarks.run starts them (the Dockerfile's command, 2 workers pinned
to CPU 0, the full stack with the limiter on Redis; wrk on CPU 1) and measured in interleaved
rounds. Per run: utime and stime of the workers (/proc/<pid>/stat), and `perf stat` attached to
the workers, counting the kernel's syscall tracepoints and the page-fault event. Tracepoints
count inside the kernel, so the server is not slowed as strace would slow it. Needs perf
(Debian: linux-perf) and root for the tracepoints. A diagnosis, not a target.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
from pathlib import Path
from typing import Any

from benchmarks.run import (
    CLOCK_TICKS,
    LIVE,
    ME,
    Server,
    login,
    result,
    seeded_database,
    server_env,
    start,
    wait_idle,
    worker_pids,
    wrk,
)
from tests.support.processes import start_redis

FLOOR = "benchmarks.floor_app:app"
SYSCALLS = (
    "epoll_wait",
    "epoll_ctl",
    "recvfrom",
    "read",
    "write",
    "writev",
    "sendto",
    "sendmsg",
    "getpid",
    "futex",
    "openat",
    "lseek",
    "mmap",
    "munmap",
    "madvise",
    "brk",
)
TOTAL, FAULTS = "raw_syscalls:sys_enter", "page-faults"
EVENTS = (TOTAL, FAULTS, *(f"syscalls:sys_enter_{name}" for name in SYSCALLS))


def user_system_s(pids: list[int]) -> tuple[float, float]:
    """utime and stime, summed over these processes, in seconds."""
    user = system = 0
    for pid in pids:
        stat = Path(f"/proc/{pid}/stat").read_text()
        fields = stat[stat.rindex(")") + 2 :].split()
        user, system = user + int(fields[11]), system + int(fields[12])
    return user / CLOCK_TICKS, system / CLOCK_TICKS


def perf_counts(output: str) -> dict[str, float]:
    """`perf stat -x,` lines ("count,unit,event,...") as {event: count}."""
    counts = {}
    for line in output.splitlines():
        fields = line.split(",")
        if len(fields) > 2 and fields[2] in EVENTS:
            counts[fields[2]] = float(fields[0]) if fields[0].replace(".", "").isdigit() else 0.0
    return counts


def one_run(
    server: Server, route: str, duration: int, connections: int, token: str | None
) -> dict[str, Any]:
    wait_idle(server)
    pids = worker_pids(server.process.pid)
    events = ",".join(EVENTS)
    perf = ["perf", "stat", "-x,", "-e", events, "-p", ",".join(map(str, pids))]
    counter = subprocess.Popen(
        [*perf, "--", "sleep", str(duration + 1)], stderr=subprocess.PIPE, text=True
    )
    user0, system0 = user_system_s(pids)
    figures = result(
        wrk(server.base_url + route, duration=duration, connections=connections, token=token),
        duration + 90,
    )
    user1, system1 = user_system_s(pids)
    _, err = counter.communicate(timeout=duration + 30)
    counts = perf_counts(err)
    n = max(1, figures["requests"])
    return {
        "rps": figures["rps"],
        "user_us": 1e6 * (user1 - user0) / n,
        "system_us": 1e6 * (system1 - system0) / n,
        **{event: counts.get(event, 0.0) / n for event in EVENTS},
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.syscalls", description=__doc__)
    add = p.add_argument
    add("--route", default=LIVE, help="(%(default)s)")
    add("--rounds", type=int, default=3, help="(%(default)s)")
    add("--duration", type=int, default=10, help="seconds per run (%(default)s)")
    add("--connections", type=int, default=32, help="(%(default)s)")
    add("--out", type=Path, default=Path("build/benchmarks"))
    opts = p.parse_args(argv)
    opts.out.mkdir(parents=True, exist_ok=True)
    redis = start_redis()
    os.sched_setaffinity(redis.process.pid, {1})
    runs: dict[str, list[dict[str, Any]]] = {"full_on": [], "floor": []}
    try:
        with seeded_database("syscalls") as (database_url, password):
            env = server_env(database_url, redis.url) | {"RATE_LIMIT_ENABLED": "true"}
            servers = {"full_on": start(None, env, opts.out), "floor": start(FLOOR, env, opts.out)}
            try:
                token = login(servers["full_on"].base_url, password) if opts.route == ME else None
                for server in servers.values():  # warm-up
                    url = server.base_url + opts.route
                    result(wrk(url, duration=5, connections=32, token=token), 90)
                for round_ in range(opts.rounds):
                    for label in list(servers) if round_ % 2 == 0 else list(servers)[::-1]:
                        run = one_run(
                            servers[label], opts.route, opts.duration, opts.connections, token
                        )
                        runs[label].append(run)
                        print(f"round {round_ + 1} {label}: {run['rps']:.0f} req/s", flush=True)
            finally:
                for server in servers.values():
                    server.stop()
    finally:
        redis.stop()
    keys = ["rps", "user_us", "system_us", *EVENTS]
    print(f"\n{opts.route}, medians of {opts.rounds} interleaved rounds, per request:")
    print("| figure | full_on | floor | full_on - floor |")
    print("|---|---:|---:|---:|")
    for key in keys:
        full = statistics.median(r[key] for r in runs["full_on"])
        floor = statistics.median(r[key] for r in runs["floor"])
        name = key.removeprefix("syscalls:sys_enter_")
        print(f"| {name} | {full:.3f} | {floor:.3f} | {full - floor:+.3f} |")


if __name__ == "__main__":
    main()
