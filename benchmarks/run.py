"""`python -m benchmarks.run` (`make benchmark ARGS=...`): the full stack against the floor.

Three servers run side by side for the whole run, each started with the Dockerfile's command
(Gunicorn + 2 Uvicorn workers, tests/support/processes.py) pinned to CPU 0; wrk and the probe
run on CPU 1. Only one server is loaded at a time:

1. `full_on`: the full stack as production runs it (limiter on Redis with limits too generous to
   answer 429, metrics, JSON access log to a file); `full_off`: the same, limiter off; `floor`:
   benchmarks/floor_app.py under the same command and configuration.
2. Memory and warm-up: 10,000 then 40,000 more `GET /api/v1/users/me` per server (10,000 for
   `full_off` and variants), worker RSS from /proc after each.
3. Interleaved rounds (`--rounds`, at least 3): in each, `/users/me` on every server and
   `/health/live` on `full_on` and the floor, in an order that rotates from round to round.
   Targets are judged on the medians.
4. Worker balance: `full_on` unpinned (both CPUs), 64 keep-alive connections from one wrk
   thread per CPU, each pinned to its own; per-worker CPU from /proc/<pid>/stat, every run
   reported.
5. Login flood, per round: a paced open-loop `/users/me` probe (benchmarks/probe.py) alone,
   then the same probe while wrk keeps 400 logins in flight (real Argon2 parameters); worker
   RSS after the last flood.
The 1-minute load average is recorded before every run (the machine may be shared). Writes
OUT/results.json, OUT/table.md and the servers' logs; prints the table with PASS/FAIL.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from benchmarks.report import table, verdicts
from loadtests.sizing.run import process_table, tree_cpu_seconds
from loadtests.sizing.stack import missing_preloads
from tests.support.api import seed_loadtest
from tests.support.databases import REDIS_URL, ROOT, create_database, drop_database
from tests.support.processes import (
    Server,
    image_command,
    make_image_venv,
    start_redis,
    start_server,
)

LUA = Path(__file__).with_name("wrk.lua")
SERVER_CPU, CLIENT_CPU = "0", "1"
GENEROUS = "100000000/minute"  # the limiter runs on every request and never answers 429
EMAIL = "loadtest-0@example.com"  # the first user `python -m service seed-loadtest` makes
ME, LIVE, TOKEN = "/api/v1/users/me", "/health/live", "/api/v1/auth/token"
LIVE_HEADERS = "/health/live/with-headers"  # the floor's, for context (floor_app.py)
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
BENCH_REDIS_URL = REDIS_URL.rsplit("/", 1)[0] + "/14"  # a Redis database of the benchmarks' own


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
    return load


def cpu_busy_seconds(cpu: str) -> float:
    """Busy (non-idle, non-iowait) seconds of one CPU since boot, from /proc/stat."""
    line = next(
        x for x in Path("/proc/stat").read_text().splitlines() if x.startswith(f"cpu{cpu} ")
    )
    ticks = [int(v) for v in line.split()[1:]]
    return (sum(ticks) - ticks[3] - ticks[4]) / CLOCK_TICKS


def worker_pids(master: int) -> list[int]:
    children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    return sorted(int(pid) for pid in children)


def process_cpu_seconds(pid: int) -> float:
    """utime + stime of one process, from /proc/<pid>/stat."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def rss_mib(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    kib = next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:"))
    return round(int(kib) / 1024, 1)


def workers_rss(server: Server) -> dict[str, float]:
    return {str(pid): rss_mib(pid) for pid in worker_pids(server.process.pid)}


def connections_per_worker(server: Server) -> list[int]:
    """Established connections each worker holds on the server's port (/proc/net/tcp)."""
    port = int(server.base_url.rsplit(":", 1)[1])
    established = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "01":
            established.add(fields[9])
    counts = []
    for pid in worker_pids(server.process.pid):
        held = 0
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            held += target.removeprefix("socket:[").removesuffix("]") in established
        counts.append(held)
    return counts


def wait_idle(server: Server, max_wait: float = 120) -> None:
    """Until the server's processes use under 5 % of a CPU over a second."""
    deadline = time.monotonic() + max_wait
    while time.monotonic() < deadline:
        before = tree_cpu_seconds(process_table(), server.process.pid)
        time.sleep(1)
        if tree_cpu_seconds(process_table(), server.process.pid) - before < 0.05:
            return


@contextmanager
def unpinned(server: Server) -> Iterator[None]:
    """The server's processes may run on every CPU for a while, then back on CPU 0."""
    pids = [server.process.pid, *worker_pids(server.process.pid)]
    every = set(range(os.cpu_count() or 1))
    for pid in pids:
        os.sched_setaffinity(pid, every)
    try:
        yield
    finally:
        for pid in pids:
            os.sched_setaffinity(pid, {int(SERVER_CPU)})


# --- servers and clients ---------------------------------------------------------------------


@functools.cache
def image_venv_bin() -> Path:
    """The image's environment (runtime dependencies only), made once under build/."""
    return make_image_venv(ROOT / "build" / "image-venv")


def start(app: str | None, env: dict[str, str], log_dir: Path) -> Server:
    """The Dockerfile's CMD under `taskset -c 0`, with `app` in place of the service when given,
    in the image's environment (what production imports, so its memory too)."""
    command = image_command()
    if app:
        command = [*command[:-1], app]
    pinned = ["taskset", "-c", SERVER_CPU, *command]
    return start_server(env, log_dir, workers=2, command=pinned, venv_bin=image_venv_bin())


def login(base_url: str, password: str) -> str:
    form = {"username": EMAIL, "password": password}
    answer = httpx.post(base_url + TOKEN, data=form, timeout=30)
    answer.raise_for_status()
    token: str = answer.json()["access_token"]
    return token


def wrk(
    url: str,
    *,
    duration: int,
    connections: int,
    cpus: str = CLIENT_CPU,
    threads: int = 1,
    token: str | None = None,
    **lua_env: str,
) -> subprocess.Popen[str]:
    """Start one wrk (`threads` threads, on `cpus`); wrk.lua reads its BENCH_* settings from
    lua_env, and the bearer token."""
    cmd = ["taskset", "-c", cpus, "wrk", f"-t{threads}", f"-c{connections}", f"-d{duration}s"]
    cmd += ["--latency", "--timeout", "60s", "-s", str(LUA), url]
    if token is not None:
        lua_env["token"] = token
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
        "statuses": raw["statuses"],
    }


def probe(url: str, *, rate: float, duration: int, token: str) -> subprocess.Popen[str]:
    """Start the paced open-loop probe (benchmarks/probe.py) in its own process, on CPU 1."""
    cmd = ["taskset", "-c", CLIENT_CPU, sys.executable, "-m", "benchmarks.probe", url]
    cmd += ["--rate", str(rate), "--duration", str(duration), "--token", token]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def probe_result(process: subprocess.Popen[str], timeout: float) -> dict[str, Any]:
    output, _ = process.communicate(timeout=timeout)
    line = next((x for x in output.splitlines() if x.startswith("PROBE ")), None)
    if process.returncode or line is None:
        raise RuntimeError(f"probe failed ({process.returncode}):\n{output}")
    figures: dict[str, Any] = json.loads(line.removeprefix("PROBE "))
    return figures


# --- the phases ------------------------------------------------------------------------------


def measured(opts: argparse.Namespace, server: Server, path: str, **kw: Any) -> dict[str, Any]:
    """One wrk run against `server`, with the server's CPU per request and the machine's load."""
    load = wait_quiet(opts.quiet_load, opts.max_wait)
    cpu0 = cpu_busy_seconds(SERVER_CPU)
    mine = tree_cpu_seconds(process_table(), server.process.pid)
    started = time.monotonic()
    figures = result(
        wrk(server.base_url + path, duration=opts.duration, connections=opts.connections, **kw),
        opts.duration + 90,
    )
    wall = time.monotonic() - started
    server_cpu = tree_cpu_seconds(process_table(), server.process.pid) - mine
    others = max(0.0, cpu_busy_seconds(SERVER_CPU) - cpu0 - server_cpu) / wall
    return figures | {
        "load_before": load,
        "cpu0_others_pct": round(100 * others, 1),
        "server_cpu_ms_per_req": round(1000 * server_cpu / max(1, figures["requests"]), 3),
    }


def memory(server: Server, token: str, marks: tuple[int, ...], connections: int) -> dict[str, Any]:
    """Worker RSS (MiB) after each mark of requests to /users/me; wrk stops at each. The
    warm-up, too."""
    pids, done, out = worker_pids(server.process.pid), 0, {}
    for mark in marks:
        proc = wrk(
            server.base_url + ME,
            duration=600,
            connections=connections,
            token=token,
            stop_after=str(mark - done),
        )
        assert proc.stdout is not None
        for line in proc.stdout:  # wrk.lua says when it has seen enough responses
            if line.startswith("STOPPED"):
                proc.send_signal(signal.SIGINT)  # wrk then prints its summary and exits
                break
        done += result(proc, 60)["requests"]
        out[f"after {mark} requests"] = workers_rss(server)
    if worker_pids(server.process.pid) != pids:
        raise RuntimeError("a worker was replaced during the memory phase")
    return out | {"requests": done}


def balance(opts: argparse.Namespace, server: Server, path: str, token: str) -> dict[str, Any]:
    """64 keep-alive connections on the unpinned server: each worker's share of its CPU.

    The server may run on every CPU, as in a pod of that many CPUs. The client cannot be
    elsewhere on this machine, so it is spread evenly: one wrk thread per CPU, each pinned to
    its own, so every core carries the same share of client work and no worker is the one the
    scheduler leaves beside the client. With one unpinned wrk thread, the worker beside it got
    less CPU whatever its connections (docs/benchmarks.md, "Balance: the client spread over
    both CPUs")."""
    pids = worker_pids(server.process.pid)
    load = load_average()
    cpus = sorted(os.sched_getaffinity(0))
    with unpinned(server):
        before = [process_cpu_seconds(pid) for pid in pids]
        run = wrk(
            server.base_url + path,
            duration=opts.duration,
            connections=opts.balance_connections,
            cpus=",".join(map(str, cpus)),
            threads=len(cpus),
            token=token,
        )
        pin_threads(run.pid, cpus)
        held: list[int] = []
        sampler = threading.Timer(2.0, lambda: held.extend(connections_per_worker(server)))
        sampler.start()
        figures = result(run, opts.duration + 90)
        sampler.join()
        cpu = [process_cpu_seconds(pid) - b for pid, b in zip(pids, before, strict=True)]
    total = sum(cpu) or 1.0
    return {
        "path": path,
        "rps": figures["rps"],
        "errors": figures["errors"],
        "load_before": load,
        "worker_cpu_s": [round(c, 2) for c in cpu],
        "worker_cpu_share": [round(c / total, 3) for c in cpu],
        "cores_used": round(sum(cpu) / opts.duration, 2),
        "connections_per_worker": held,
        "min_over_max": round(min(cpu) / max(max(cpu), 1e-9), 3),
    }


def pin_threads(taskset_pid: int, cpus: list[int], wait: float = 5.0) -> None:
    """Each of wrk's load threads on its own CPU (wrk has no option for it).

    `taskset` execs wrk in place, so the pid is wrk's; its first task is the main thread,
    which only sleeps for the run, and the next ones are the load threads."""
    tasks = Path(f"/proc/{taskset_pid}/task")
    deadline = time.monotonic() + wait
    while True:
        ids = sorted(int(t) for t in os.listdir(tasks))
        if len(ids) > len(cpus) or time.monotonic() > deadline:
            break
        time.sleep(0.01)
    if len(ids) <= len(cpus):
        raise RuntimeError(f"wrk started {len(ids) - 1} load threads, not {len(cpus)}")
    for tid, cpu in zip(ids[1:], cpus, strict=False):
        os.sched_setaffinity(tid, {cpu})


def login_flood(
    opts: argparse.Namespace, server: Server, token: str, password: str
) -> dict[str, Any]:
    """The paced /users/me probe alone, then during 400 logins in flight."""
    load = wait_quiet(opts.quiet_load, opts.max_wait)
    url, rate = server.base_url + ME, opts.probe_rate
    idle = probe_result(probe(url, rate=rate, duration=opts.duration, token=token), 120)
    body = str(httpx.QueryParams({"username": EMAIL, "password": password}))
    flood = wrk(
        server.base_url + TOKEN,
        duration=opts.flood_seconds,
        connections=opts.flood_connections,
        body=body,
        statuses="1",
    )
    time.sleep(2)  # every login connection open and queued before the probe starts
    during = probe(url, rate=rate, duration=max(1, opts.flood_seconds - 4), token=token)
    loaded = probe_result(during, opts.flood_seconds + 120)
    logins = result(flood, opts.flood_seconds + 120)
    wait_idle(server)  # logins wrk left in flight are still hashed after it hangs up
    return {"load_before": load, "probe_idle": idle, "probe_flood": loaded, "logins": logins}


# --- the run ---------------------------------------------------------------------------------


@contextmanager
def seeded_database(prefix: str) -> Iterator[tuple[str, str]]:
    """(url, the seeded user's password) of a throwaway migrated database, dropped after."""
    password = secrets.token_urlsafe(12)
    name, url = asyncio.run(create_database(prefix))
    try:
        seed_loadtest(url, 1, password=password)
        yield url, password
    finally:
        asyncio.run(drop_database(name))


def variant(text: str) -> tuple[str, dict[str, str]]:
    """ "NAME:VAR=VALUE,..." -> (NAME, {VAR: VALUE})."""
    name, _, settings = text.partition(":")
    return name, dict(pair.split("=", 1) for pair in settings.split(",") if pair)


def server_env(database_url: str, redis_url: str = BENCH_REDIS_URL) -> dict[str, str]:
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
        # The front door's budgets (per client address, per login address and username).
        "RATE_LIMIT_CLIENT": GENEROUS,
        "RATE_LIMIT_LOGIN_IP": GENEROUS,
        "RATE_LIMIT_LOGIN_USERNAME": GENEROUS,
    }


def rotated(items: list[Any], by: int) -> list[Any]:
    by %= len(items)
    return items[by:] + items[:by]


def options(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__)
    add = p.add_argument
    add("--rounds", type=int, default=3, help="interleaved rounds, >= 3 (%(default)s)")
    add("--duration", type=int, default=10, help="seconds per measured run (%(default)s)")
    add("--connections", type=int, default=32, help="wrk connections (%(default)s)")
    add("--balance-connections", type=int, default=64, help="(%(default)s)")
    add("--flood-connections", type=int, default=400, help="logins in flight (%(default)s)")
    add("--flood-seconds", type=int, default=20, help="(%(default)s)")
    add("--probe-rate", type=float, default=20, help="probe requests per second (%(default)s)")
    add("--memory-requests", type=int, default=50_000, help="before the RSS (%(default)s)")
    add("--quiet-load", type=float, default=1.0, help="load average to wait for (%(default)s)")
    add("--max-wait", type=float, default=10, help="longest wait for it, s (%(default)s)")
    add(
        "--redis-url",
        default=None,
        help="an existing Redis (default: a redis-server of the run's own on the client's CPU, "
        "so the limiter's store never takes the server's CPU, as on a real cluster)",
    )
    add(
        "--variant",
        action="append",
        default=[],
        metavar="NAME:VAR=VALUE,...",
        help="also measure /users/me on the full stack (limiter on) with these settings, e.g. "
        "no_log:ACCESS_LOG=off (repeatable; a diagnosis, not a target)",
    )
    add("--set", action="append", default=[], metavar="VAR=VALUE", help="for every server")
    add("--out", type=Path, default=Path("build/benchmarks"))
    opts = p.parse_args(argv)
    if opts.rounds < 3:
        p.error("--rounds: medians need at least 3")
    for tool in ("wrk", "taskset"):
        if shutil.which(tool) is None:
            p.error(f"{tool} is not installed (Debian: apt-get install -y wrk util-linux)")
    missing = missing_preloads()
    if missing:
        # The image's allocator decides its memory figures: measure nothing without it.
        p.error(
            f"{', '.join(missing)}: not on this machine (Debian: apt-get install -y libjemalloc2)"
        )
    return opts


def measure_all(
    opts: argparse.Namespace, servers: dict[str, Server], password: str, results: dict[str, Any]
) -> None:
    """Every phase, in order, into `results`."""
    token = login(servers["full_on"].base_url, password)
    for label, server in servers.items():
        total = opts.memory_requests
        marks = (total // 5, total) if label in ("full_on", "floor") else (total // 5,)
        results["memory"][label] = memory(server, token, marks, opts.connections)
        say(f"{label}: worker RSS {results['memory'][label]}")
    runs = [(label, ME) for label in servers]
    runs += [("full_on", LIVE), ("floor", LIVE), ("floor", LIVE_HEADERS)]
    for round_ in range(1, opts.rounds + 1):
        for label, path in rotated(runs, round_ - 1):
            kw = {"token": token} if path == ME else {}
            figures = measured(opts, servers[label], path, **kw)
            figures |= {"round": round_, "server": label, "path": path}
            results["runs"].append(figures)
            say(
                f"round {round_} {label} {path}: {figures['rps']:.0f} req/s, "
                f"p99 {figures['p99_ms']:.2f} ms, {figures['server_cpu_ms_per_req']:.3f} "
                f"ms CPU/req, errors {figures['errors']}, load {figures['load_before']:.2f}"
            )
    for round_ in range(1, opts.rounds + 1):
        for path in (ME, LIVE):
            run = balance(opts, servers["full_on"], path, token) | {"round": round_}
            results["balance"].append(run)
            say(f"balance round {round_} {path}: {run}")
    for round_ in range(1, opts.rounds + 1):
        flood = login_flood(opts, servers["full_on"], token, password) | {"round": round_}
        results["flood"].append(flood)
        say(
            f"flood round {round_}: probe p99 idle {flood['probe_idle']['p99_ms']:.2f} ms, "
            f"during {flood['probe_flood']['p99_ms']:.2f} ms; logins {flood['logins']}"
        )
    results["memory"]["full_on"]["after the login floods"] = workers_rss(servers["full_on"])


def main(argv: list[str] | None = None) -> None:
    opts = options(argv)
    # SIGTERM (timeout, CI) unwinds like Ctrl-C: servers stopped, database dropped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    opts.out.mkdir(parents=True, exist_ok=True)
    started = datetime.now(UTC)
    results: dict[str, Any] = {"runs": [], "balance": [], "flood": [], "memory": {}}
    redis = None if opts.redis_url else start_redis()
    if redis is not None:
        os.sched_setaffinity(redis.process.pid, {int(CLIENT_CPU)})
    redis_url = opts.redis_url or redis.url  # type: ignore[union-attr]
    with seeded_database("bench") as (database_url, password):
        base = server_env(database_url, redis_url) | dict(s.split("=", 1) for s in opts.set)
        plan = [
            ("full_on", None, base | {"RATE_LIMIT_ENABLED": "true"}),
            ("full_off", None, base | {"RATE_LIMIT_ENABLED": "false"}),
            ("floor", "benchmarks.floor_app:app", base),
        ]
        plan += [(label, None, plan[0][2] | pairs) for label, pairs in map(variant, opts.variant)]
        servers: dict[str, Server] = {}
        try:
            for label, app, env in plan:
                say(f"{label}: starting")
                servers[label] = start(app, env, opts.out)
            measure_all(opts, servers, password, results)
        finally:
            for server in servers.values():
                server.stop()
            if redis is not None:
                redis.stop()
    results |= {
        "started": started.isoformat(timespec="seconds"),
        "finished": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "uname": " ".join(os.uname())},
        "options": {k: str(v) for k, v in vars(opts).items()},
    }
    results["checks"] = verdicts(results)
    (opts.out / "results.json").write_text(json.dumps(results, indent=2))
    text = table(results)
    (opts.out / "table.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
