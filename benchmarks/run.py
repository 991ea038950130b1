"""`python -m benchmarks.run` (`make benchmark ARGS=...`): wrk against the full stack and the floor.

One run, in this order, each server started with the Dockerfile's command (Gunicorn + 2 Uvicorn
workers, tests/support/processes.py) pinned to CPU 0, wrk pinned to CPU 1:

1. full stack, limiter on (Redis, limits too generous to answer 429), JSON access log to a file;
2. the same, limiter off (RATE_LIMIT_ENABLED=false);
3. the floor (benchmarks/floor_app.py) under the same command and configuration.

Per server: 10,000 then 40,000 more authenticated `GET /api/v1/users/me` (worker RSS read from
/proc after each; this is also the warm-up), then the measured runs of that route and of
`/health/live`. The first server also takes the login flood: a paced `/health/live` probe alone,
then the same probe while wrk floods `POST /api/v1/auth/token` (real Argon2 parameters). Before
every measured run it waits for the 1-minute load average to drop below --quiet-load.
Writes OUT/results.json, OUT/table.md and the servers' logs; prints the table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from benchmarks.report import table, verdicts
from loadtests.sizing.run import process_table, tree_cpu_seconds
from tests.support.api import seed_loadtest
from tests.support.databases import REDIS_URL, create_database, drop_database
from tests.support.processes import Server, image_command, start_server

LUA = Path(__file__).with_name("wrk.lua")
SERVER_CPU, CLIENT_CPU = "0", "1"
GENEROUS = "100000000/minute"  # the limiter runs on every request and never answers 429
EMAIL = "loadtest-0@example.com"  # the first user `python -m service seed-loadtest` makes
MEMORY_MARKS = (10_000, 50_000)

Say = Callable[[str], None]


def say(text: str) -> None:
    print(f"[{datetime.now(UTC):%H:%M:%S}] {text}", flush=True)


# --- the machine ---------------------------------------------------------------------------


def load_average() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def wait_quiet(threshold: float, max_wait: float) -> float:
    """Poll until the 1-minute load average is below `threshold` (at most `max_wait` s)."""
    deadline = time.monotonic() + max_wait
    while (load := load_average()) >= threshold and time.monotonic() < deadline:
        time.sleep(5)
    if load >= threshold:
        say(f"  not quiet: load average {load:.2f} after {max_wait:.0f} s, measuring anyway")
    return load


def cpu_busy_seconds(cpu: str) -> float:
    """Busy (non-idle, non-iowait) seconds of one CPU since boot, from /proc/stat."""
    line = next(
        x for x in Path("/proc/stat").read_text().splitlines() if x.startswith(f"cpu{cpu} ")
    )
    ticks = [int(v) for v in line.split()[1:]]
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")


def worker_pids(master: int) -> list[int]:
    children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    return sorted(int(pid) for pid in children)


def rss_mib(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    kib = next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:"))
    return round(int(kib) / 1024, 1)


# --- servers --------------------------------------------------------------------------------


def start(app: str | None, env: dict[str, str], log_dir: Path) -> Server:
    """The Dockerfile's CMD under `taskset -c 0`, with `app` in place of the service when given."""
    command = image_command()
    if app:
        command = [*command[:-1], app]
    pinned = ["taskset", "-c", SERVER_CPU, *command]
    return start_server(env, log_dir, workers=2, command=pinned)


def login(base_url: str, password: str) -> str:
    answer = httpx.post(
        base_url + "/api/v1/auth/token", data={"username": EMAIL, "password": password}, timeout=30
    )
    answer.raise_for_status()
    token: str = answer.json()["access_token"]
    return token


# --- wrk -------------------------------------------------------------------------------------


def wrk(url: str, *, duration: int, connections: int, **lua_env: str) -> subprocess.Popen[str]:
    """Start one wrk (one thread, on CPU 1); wrk.lua reads its BENCH_* settings from lua_env."""
    cmd = ["taskset", "-c", CLIENT_CPU, "wrk", "-t1", f"-c{connections}", f"-d{duration}s"]
    cmd += ["--latency", "--timeout", "10s", "-s", str(LUA), url]
    env = os.environ | {f"BENCH_{k.upper()}": v for k, v in lua_env.items()}
    out = subprocess.PIPE
    return subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, text=True)


def result(process: subprocess.Popen[str], timeout: float) -> dict[str, Any]:
    output, _ = process.communicate(timeout=timeout)
    line = next((x for x in output.splitlines() if x.startswith("BENCH ")), None)
    if process.returncode or line is None:
        raise RuntimeError(f"wrk failed ({process.returncode}):\n{output}")
    raw = json.loads(line.removeprefix("BENCH "))
    return {
        "requests": raw["requests"],
        "rps": round(raw["requests"] / (raw["duration_us"] / 1e6), 1),
        "p50_ms": raw["p50_us"] / 1000,
        "p90_ms": raw["p90_us"] / 1000,
        "p99_ms": raw["p99_us"] / 1000,
        "max_ms": raw["max_us"] / 1000,
        "errors": sum(raw["errors"].values()),
        "error_kinds": raw["errors"],
    }


def measured(
    opts: argparse.Namespace, server: Server, runs: dict[str, tuple[str, dict[str, Any]]]
) -> dict[str, dict[str, Any]]:
    """Run wrk processes side by side, once the machine is quiet: {name: figures}.

    `runs` maps a name to (path, wrk options); the figures carry the load average before, and
    the share of CPU 0 (the server's) that went to anything but the server's processes.
    """
    load = wait_quiet(opts.quiet_load, opts.max_wait)
    cpu0, mine = cpu_busy_seconds(SERVER_CPU), tree_cpu_seconds(process_table(), server.process.pid)
    started = time.monotonic()
    procs = {name: wrk(server.base_url + path, **kw) for name, (path, kw) in runs.items()}
    out = {name: result(p, opts.duration + 60) for name, p in procs.items()}
    wall = time.monotonic() - started
    server_cpu = tree_cpu_seconds(process_table(), server.process.pid) - mine
    others = max(0.0, cpu_busy_seconds(SERVER_CPU) - cpu0 - server_cpu) / wall
    for name, figures in out.items():
        figures |= {
            "load_before": load,
            "load_after": load_average(),
            "cpu0_others_pct": round(100 * others, 1),
            "server_cpu_pct": round(100 * server_cpu / wall, 1),
            # CPU per request only when this run alone loaded the server
            "server_cpu_ms_per_req": round(1000 * server_cpu / figures["requests"], 3)
            if len(out) == 1
            else None,
        }
        say(
            f"  {name}: {figures['rps']:.0f} req/s, p50 {figures['p50_ms']:.2f} ms, "
            f"p99 {figures['p99_ms']:.2f} ms, errors {figures['errors']}, load before {load:.2f}"
        )
    return out


def memory(
    opts: argparse.Namespace, server: Server, token: str, marks: tuple[int, ...]
) -> dict[str, Any]:
    """Worker RSS after each mark (10k, 50k) of requests to /users/me; wrk stops at each."""
    pids, done, out = worker_pids(server.process.pid), 0, {}
    for mark in marks:
        proc = wrk(
            server.base_url + "/api/v1/users/me",
            duration=300,
            connections=opts.connections,
            token=token,
            stop_after=str(mark - done),
        )
        assert proc.stdout is not None
        for line in proc.stdout:  # wrk.lua says when it has seen enough responses
            if line.startswith("STOPPED"):
                proc.send_signal(signal.SIGINT)  # wrk then prints its summary and exits
                break
        done += result(proc, 60)["requests"]
        out[f"rss_mib_{mark // 1000}k"] = {str(pid): rss_mib(pid) for pid in pids}
        say(f"  after {done} requests: worker RSS {out[f'rss_mib_{mark // 1000}k']} MiB")
    if worker_pids(server.process.pid) != pids:
        raise RuntimeError("a worker was replaced during the memory phase")
    return out | {"requests": done}


def profile(opts: argparse.Namespace, server: Server, name: str, token: str) -> None:
    """Unmeasured: py-spy records one worker while wrk loads /users/me (collapsed stacks)."""
    target = opts.out / f"profile-{name}.txt"
    worker = worker_pids(server.process.pid)[0]
    spy = [opts.py_spy, "record", "--pid", str(worker), "--duration", str(opts.duration)]
    spy += ["--rate", "200", "--nonblocking", "--format", "raw", "--output", str(target)]
    recorder = subprocess.Popen(spy, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    load = wrk(
        server.base_url + "/api/v1/users/me",
        duration=opts.duration,
        connections=opts.connections,
        token=token,
    )
    result(load, opts.duration + 60)
    recorder.wait(60)
    say(f"  profile of worker {worker} -> {target}")


# --- the run ---------------------------------------------------------------------------------


def bench_server(
    opts: argparse.Namespace,
    name: str,
    app: str | None,
    env: dict[str, str],
    password: str,
    token: str | None,
    *,
    variant: bool = False,
) -> tuple[str, dict[str, dict[str, Any]], dict[str, Any]]:
    """Start one server, measure it, stop it: (token, {run: figures}, memory).

    A variant (--variant) gets a 10k-request warm-up and the /users/me run only."""
    say(f"{name}: starting")
    server = start(app, env, opts.out)
    try:
        token = token or login(server.base_url, password)
        mem = memory(opts, server, token, MEMORY_MARKS[:1] if variant else MEMORY_MARKS)
        load = {"duration": opts.duration, "connections": opts.connections}
        runs = measured(opts, server, {"me": ("/api/v1/users/me", load | {"token": token})})
        if not variant:
            runs |= measured(opts, server, {"live": ("/health/live", load)})
        if opts.py_spy and not variant:
            profile(opts, server, name, token)
        if name == "full_on":
            runs |= login_flood(opts, server, password)
            pids = worker_pids(server.process.pid)
            mem["rss_mib_after_login_flood"] = {str(pid): rss_mib(pid) for pid in pids}
    finally:
        server.stop()
    return token, {f"{name}.{k}": v for k, v in runs.items()}, mem


def login_flood(opts: argparse.Namespace, server: Server, password: str) -> dict[str, Any]:
    """A paced /health/live probe alone, then with a concurrent login flood."""
    probe = (
        "/health/live",
        {"duration": opts.duration, "connections": 4, "delay_ms": str(opts.probe_delay_ms)},
    )
    body = httpx.QueryParams({"username": EMAIL, "password": password})
    flood = (
        "/api/v1/auth/token",
        {"duration": opts.duration, "connections": opts.flood_connections, "body": str(body)},
    )
    runs = measured(opts, server, {"probe_idle": probe})
    return runs | measured(opts, server, {"probe_flood": probe, "login_flood": flood})


def server_env(database_url: str, redis_url: str) -> dict[str, str]:
    """The full stack's settings for a benchmark: the limiter runs on every request, never 429s."""
    return {
        "DATABASE_URL": database_url,
        "JWT_SECRET": secrets.token_urlsafe(48),
        "ACCESS_TOKEN_TTL_SECONDS": "14400",  # one token serves the whole run
        "MAX_REQUESTS": "0",  # no worker recycling: the memory figures follow one process
        "ACCESS_LOG": "json",
        "REDIS_URL": redis_url,
        "RATE_LIMIT_LOGIN": GENEROUS,
        "RATE_LIMIT_USER": GENEROUS,
        "RATE_LIMIT_CLIENT": GENEROUS,
        "RATE_LIMIT_LOGIN_IP": GENEROUS,
        "RATE_LIMIT_LOGIN_USERNAME": GENEROUS,
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__)
    p.add_argument(
        "--duration", type=int, default=20, help="seconds per measured run (%(default)s)"
    )
    p.add_argument("--connections", type=int, default=32, help="wrk connections (%(default)s)")
    add = p.add_argument
    add("--flood-connections", type=int, default=16, help="for the logins (%(default)s)")
    add("--probe-delay-ms", type=int, default=10, help="probe's pause per request (%(default)s)")
    add("--quiet-load", type=float, default=0.5, help="load average to wait for (%(default)s)")
    add("--max-wait", type=float, default=240, help="longest wait for it, s (%(default)s)")
    p.add_argument("--redis-url", default=REDIS_URL.rsplit("/", 1)[0] + "/14")
    add(
        "--variant",
        action="append",
        default=[],
        metavar="NAME:VAR=VALUE,...",
        help="also measure the full stack (limiter on) with these settings, e.g. "
        "no_ping:DB_POOL_PRE_PING=false (repeatable; a diagnosis, not a target)",
    )
    p.add_argument("--py-spy", help="py-spy binary: also profile each server (unmeasured run)")
    p.add_argument("--out", type=Path, default=Path("build/benchmarks"))
    opts = p.parse_args(argv)
    for tool in ("wrk", "taskset"):
        if shutil.which(tool) is None:
            p.error(f"{tool} is not installed (Debian: apt-get install -y wrk util-linux)")
    # SIGTERM (timeout, CI) unwinds like Ctrl-C: servers stopped, database dropped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    opts.out.mkdir(parents=True, exist_ok=True)

    password = secrets.token_urlsafe(12)
    name, database_url = asyncio.run(create_database("bench"))
    base = server_env(database_url, opts.redis_url)
    servers = [
        ("full_on", None, base | {"RATE_LIMIT_ENABLED": "true"}),
        ("full_off", None, base | {"RATE_LIMIT_ENABLED": "false"}),
        ("floor", "benchmarks.floor_app:app", base),
    ]
    for variant in opts.variant:
        label, _, settings = variant.partition(":")
        pairs = dict(kv.split("=", 1) for kv in settings.split(",") if kv)
        servers.append((label, None, servers[0][2] | pairs))
    runs: dict[str, dict[str, Any]] = {}
    mem: dict[str, dict[str, Any]] = {}
    token: str | None = None
    started = datetime.now(UTC)
    try:
        seed_loadtest(database_url, 1, password=password)
        for server_name, app, env in servers:
            is_variant = server_name not in ("full_on", "full_off", "floor")
            token, server_runs, server_mem = bench_server(
                opts, server_name, app, env, password, token, variant=is_variant
            )
            runs |= server_runs
            if not is_variant:
                mem[server_name] = server_mem
    finally:
        asyncio.run(drop_database(name))
    checks = verdicts(runs, mem)
    results = {
        "started": started.isoformat(timespec="seconds"),
        "finished": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "uname": " ".join(os.uname())},
        "options": {k: str(v) for k, v in vars(opts).items()},
        "runs": runs,
        "memory": mem,
        "checks": checks,
    }
    (opts.out / "results.json").write_text(json.dumps(results, indent=2))
    text = table(runs, mem, checks)
    (opts.out / "table.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
