"""The I/O of the sizing run: a database, the production server pinned to CPUs, Locust beside it.

For one worker count, `measure` creates a throwaway database, migrates and seeds it, starts the
exact production command (Gunicorn with Uvicorn workers) under `taskset` on the server CPUs,
waits for /health/ready, runs Locust headless under `taskset` on the other CPUs (warm-up first,
its statistics discarded by the locustfile), reads the server's CPU time from /proc over the
measured window, then stops the server and drops the database.
"""

from __future__ import annotations

import asyncio
import csv
import json
import math
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO

import httpx

from loadtests.sizing.select import Step

LOCUSTFILE = Path(__file__).resolve().parents[1] / "locustfile.py"
REPO = LOCUSTFILE.parents[1]
SERVE = ["gunicorn", "--config", "python:service.gunicorn_conf", "service.main:create_app()"]
# Generous limits so the limiter runs (on Redis, its cost measured) but never decides capacity.
GENEROUS_LIMIT = "1000000/minute"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

Say = Callable[[str], None]


@dataclass(frozen=True)
class Plan:
    """How every step of the sweep runs: the load, the CPUs and where results go."""

    users: int = 16  # per server CPU by default (see __main__): enough to saturate it
    duration: int = 20
    warmup: int = 5
    think: str = "0"  # LOADTEST_WAIT: no think time, so the fixed user count saturates the server
    seed_users: int = 20
    server_cpus: tuple[int, ...] = (0,)
    client_cpus: tuple[int, ...] = (1,)
    pg_url: str = "postgresql://postgres@127.0.0.1:5432"
    redis_url: str = "redis://127.0.0.1:6379/15"
    out: Path = Path("build/sizing")
    quiet_wait: float = 120  # seconds a step waits for other work on the machine to stop


# --- pure helpers ------------------------------------------------------------------------------


def parse_ranges(text: str) -> list[int]:
    """ "1-3,5" -> [1, 2, 3, 5] (sorted, unique); for worker counts and CPU lists."""
    values: set[int] = set()
    for part in filter(None, (p.strip() for p in text.split(","))):
        low, _, high = part.partition("-")
        values.update(range(int(low), int(high or low) + 1))
    if not values:
        raise ValueError(f"empty range: {text!r}")
    return sorted(values)


def split_cpus(
    available: list[int], limit: float, explicit: list[int] | None = None
) -> tuple[list[int], list[int], list[str]]:
    """Server CPUs (the pod's limit, rounded up), client CPUs (the rest) and notes on fallbacks."""
    notes = []
    if explicit:
        server = [c for c in explicit if c in available]
        if server != explicit:
            raise ValueError(f"--server-cpus {explicit} not all among the usable CPUs {available}")
    else:
        want = math.ceil(limit)
        if want != limit:
            notes.append(
                f"the pod CPU limit {limit:g} is not whole: taskset pins {want} CPU(s), so the "
                f"per-pod capacity is that of {want} CPU(s), not {limit:g}"
            )
        if want > len(available) - 1:
            fallback = max(1, len(available) - 1)
            notes.append(
                f"the pod CPU limit ({limit:g}) needs {want} CPU(s) but only {len(available)} are "
                f"usable and Locust needs one: the server gets {fallback}"
            )
            want = fallback
        server = available[:want]
    client = [c for c in available if c not in server]
    if not client:
        notes.append("no CPU is left for Locust: it shares the server's CPUs and steals from it")
        client = list(available)
    return server, client, notes


def step_from_stats(rows: list[dict[str, str]], workers: int) -> Step:
    """One Step from the rows of Locust's *_stats.csv; "429 ..." entries are counted apart."""
    total = next((r for r in rows if r["Name"] == "Aggregated"), None)
    if total is None:
        raise ValueError("no Aggregated row in Locust's stats")
    limited = [r for r in rows if r["Name"].startswith("429 ")]
    limited_count = sum(int(r["Request Count"]) for r in limited)

    def ms(column: str) -> float:
        value = total[column]
        return 0.0 if value in ("", "N/A") else float(value)

    return Step(
        workers=workers,
        rps=round(float(total["Requests/s"]) - sum(float(r["Requests/s"]) for r in limited), 2),
        p50_ms=ms("50%"),
        p95_ms=ms("95%"),
        p99_ms=ms("99%"),
        failures=int(total["Failure Count"]) - limited_count,
        rate_limited=limited_count,
        requests=int(total["Request Count"]) - limited_count,
    )


# --- processes and measurements -----------------------------------------------------------------


def process_table() -> dict[int, tuple[int, str, float]]:
    """pid -> (parent pid, command name, CPU seconds) of every process, from /proc."""
    table = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue  # the process ended while we looked
            fields = stat[stat.rindex(")") + 2 :].split()
            comm = stat[stat.index("(") + 1 : stat.rindex(")")]
            # utime + stime, plus cutime + cstime: the CPU of children it reaped (a Gunicorn
            # worker recycled after max_requests), which would otherwise vanish from the tree.
            ticks = sum(int(v) for v in fields[11:15])
            table[int(entry.name)] = (int(fields[1]), comm, ticks / CLOCK_TICKS)
    return table


def tree_cpu_seconds(table: dict[int, tuple[int, str, float]], root: int) -> float:
    """CPU seconds of a live process and all its descendants."""
    tree, frontier = {root}, [root]
    while frontier:
        parent = frontier.pop()
        children = [pid for pid, row in table.items() if row[0] == parent and pid not in tree]
        tree.update(children)
        frontier.extend(children)
    return sum(table[pid][2] for pid in tree if pid in table)


def _serves(pid: int, comm: str, database: str) -> bool:
    """Whether a process is Redis, or a PostgreSQL backend connected to `database`."""
    if comm == "redis-server":
        return True
    try:
        return comm == "postgres" and database in Path(f"/proc/{pid}/cmdline").read_text()
    except OSError:
        return False


def cpu_seconds(server: int, client: int, database: str) -> dict[str, float]:
    """Cumulative CPU seconds of the server, Locust, the data stores and the whole machine."""
    with Path("/proc/stat").open() as stat:  # "cpu user nice system idle iowait irq softirq steal"
        ticks = [int(v) for v in stat.readline().split()[1:9]]
    table = process_table()
    stores = [row[2] for pid, row in table.items() if _serves(pid, row[1], database)]
    return {
        "server": tree_cpu_seconds(table, server),
        "client": tree_cpu_seconds(table, client),
        "stores": sum(stores),
        "machine": (sum(ticks) - ticks[3] - ticks[4]) / CLOCK_TICKS,
    }


def cpu_use(before: dict[str, float], after: dict[str, float], wall: float, plan: Plan) -> dict:
    """Step fields: server and Locust as fractions of their CPUs; the rest in CPUs."""
    used = {key: (after[key] - before[key]) / wall for key in before}
    return {
        "cpu_util": round(used["server"] / len(plan.server_cpus), 3),
        "client_cpu_util": round(used["client"] / len(plan.client_cpus), 3),
        "stores_cpu": round(used["stores"], 2),
        "other_cpu": round(used["machine"] - used["server"] - used["client"] - used["stores"], 2),
    }


def machine_busy(seconds: float = 2) -> float:
    """CPUs busy on the whole machine, averaged over `seconds`."""
    before = cpu_seconds(0, 0, "\0")["machine"]
    time.sleep(seconds)
    return (cpu_seconds(0, 0, "\0")["machine"] - before) / seconds


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _psql(url: str, statement: str) -> None:
    import asyncpg  # the service's driver; imported here so the pure helpers need none

    async def run() -> None:
        conn = await asyncpg.connect(f"{url}/postgres", timeout=10)
        try:
            await conn.execute(statement)
        finally:
            await conn.close()

    asyncio.run(run())


@contextmanager
def database(pg_url: str, name: str) -> Iterator[str]:
    """A throwaway database, dropped on the way out; yields its URL."""
    _psql(pg_url, f'CREATE DATABASE "{name}"')
    try:
        yield f"{pg_url}/{name}"
    finally:
        _psql(pg_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def service_env(plan: Plan, database_url: str, workers: int, port: int) -> dict[str, str]:
    return {
        **os.environ,
        "APP_ENV": "production",
        "JWT_SECRET": secrets.token_urlsafe(48),
        "WEB_CONCURRENCY": str(workers),
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "DATABASE_URL": database_url,
        "REDIS_URL": plan.redis_url,
        "RATE_LIMIT_ENABLED": "true",
        "RATE_LIMIT_LOGIN": GENEROUS_LIMIT,
        "RATE_LIMIT_USER": GENEROUS_LIMIT,
        "RATE_LIMIT_CLIENT": GENEROUS_LIMIT,
        "RATE_LIMIT_LOGIN_IP": GENEROUS_LIMIT,
        "RATE_LIMIT_LOGIN_USERNAME": GENEROUS_LIMIT,
    }


def _run(args: list[str], env: dict[str, str], log: IO[str], timeout: float) -> str:
    """Run a command to completion; its output goes to the log and is returned."""
    done = subprocess.run(
        args, env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout, check=False
    )
    log.write(f"$ {' '.join(args)}\n{done.stdout}{done.stderr}\n")
    if done.returncode:
        raise RuntimeError(f"{' '.join(args[:4])} failed ({done.returncode}): {done.stderr[-500:]}")
    return done.stdout


def _pin(cpus: tuple[int, ...] | list[int]) -> list[str]:
    return ["taskset", "-c", ",".join(map(str, cpus))]


@contextmanager
def server(env: dict[str, str], cpus: tuple[int, ...], log: IO[str]) -> Iterator[subprocess.Popen]:
    """The production command pinned to `cpus`; SIGTERM (then SIGKILL) on the way out."""
    venv_bin = Path(sys.executable).parent
    args = [*_pin(cpus), str(venv_bin / SERVE[0]), *SERVE[1:]]
    log.write(f"$ {' '.join(args)}\n")
    log.flush()
    proc = subprocess.Popen(
        args, env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def wait_ready(url: str, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited ({proc.returncode}) before it was ready")
        with suppress(httpx.HTTPError):
            if httpx.get(f"{url}/health/ready", timeout=2).status_code == 200:
                return
        time.sleep(0.25)
    raise RuntimeError(f"{url}/health/ready did not answer 200 within {timeout:.0f} s")


def run_locust(
    plan: Plan, url: str, env: dict[str, str], prefix: Path, server: tuple[int, str], log: IO[str]
) -> dict:
    """Drive Locust on the client CPUs against the server (pid, database name); returns the CPU
    use over the measured window (see `cpu_use`), empty if Locust never started."""
    server_pid, database = server
    total = plan.warmup + plan.duration
    args = [
        *_pin(plan.client_cpus),
        *(sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "--only-summary"),
        *("-u", str(plan.users), "-r", str(plan.users), "-t", f"{total}s", "--stop-timeout", "5"),
        *("--host", url, "--csv", str(prefix)),
    ]
    log.write(f"$ {' '.join(args)}\n")
    log.flush()
    started = threading.Event()
    proc = subprocess.Popen(
        args, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )

    def pump(stream: IO[str]) -> None:  # copy Locust's output, noting when the run begins
        for line in stream:
            log.write(line)
            if "Run time limit set" in line:
                started.set()

    assert proc.stdout is not None
    reader = threading.Thread(target=pump, args=(proc.stdout,), daemon=True)
    reader.start()
    used = {}
    try:
        if started.wait(timeout=30):
            # The measured window sits inside the run: after the warm-up, before the stop.
            edge = min(1.0, plan.duration / 4)
            time.sleep(plan.warmup + edge)
            before, wall_0 = cpu_seconds(server_pid, proc.pid, database), time.monotonic()
            time.sleep(plan.duration - 2 * edge)
            after, wall = cpu_seconds(server_pid, proc.pid, database), time.monotonic() - wall_0
            used = cpu_use(before, after, wall, plan)
        proc.wait(timeout=total + 60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        reader.join(timeout=5)
    return used


def measure(plan: Plan, workers: int, say: Say) -> Step:
    """One step of the sweep: everything about `workers` measured, the server stopped after."""
    logs = plan.out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    password = secrets.token_urlsafe(12)
    name = f"sizing_{os.getpid()}_{workers}"
    with (logs / f"workers-{workers}.log").open("w") as log, database(plan.pg_url, name) as db_url:
        env = service_env(plan, db_url, workers, port)
        python = sys.executable
        _run([python, "-m", "service", "migrate"], env, log, timeout=120)
        seed = [python, "-m", "service", "seed-loadtest", "--users", str(plan.seed_users)]
        printed = _run([*seed, f"--password={password}"], env, log, timeout=120)
        api_key = json.loads(printed.strip().splitlines()[-1])["api_key"]
        cpus = ",".join(map(str, plan.server_cpus))
        say(f"  starting {workers} worker(s) on CPU {cpus}, port {port}")
        with server(env, plan.server_cpus, log) as proc:
            wait_ready(url, proc)
            say(f"  ready; warming up {plan.warmup} s, then measuring {plan.duration} s")
            load_env = {
                **os.environ,
                "LOADTEST_PASSWORD": password,
                "LOADTEST_USERS": str(plan.seed_users),
                "LOADTEST_API_KEY": api_key,
                "LOADTEST_WAIT": plan.think,
                "LOADTEST_WARMUP": str(plan.warmup),
            }
            prefix = plan.out / "locust" / f"workers-{workers}"
            prefix.parent.mkdir(parents=True, exist_ok=True)
            cpu = run_locust(plan, url, load_env, prefix, (proc.pid, name), log)
    with Path(f"{prefix}_stats.csv").open() as stats:
        return replace(step_from_stats(list(csv.DictReader(stats)), workers), **cpu)
