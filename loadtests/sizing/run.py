"""The I/O of the sizing run: a fresh database and server in a pod-sized cgroup, Locust beside it.

`Repetition` is one fresh server for one worker count: it creates a throwaway database, migrates
and seeds it, starts the production command (the Dockerfile's CMD: Gunicorn with Uvicorn
workers) inside the pod (pod.py), mints an API key on a limited rate-limit tier over HTTP, then
offers open-loop arrival rates (the locustfile's scheduler) chosen by `select.next_rate` until
λ* is bracketed. Every step is a fresh Locust run: warm-up (discarded), then the measured window,
during which the pod's CPU and throttling, each Locust process's CPU and the machine's are read.
"""

from __future__ import annotations

import asyncio
import csv
import os
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx

from loadtests.sizing import mix as mixes
from loadtests.sizing.pod import (  # noqa: F401 - process_table, tree_cpu_seconds: benchmarks/ import them from here
    CpuSample,
    Limits,
    Pod,
    children,
    open_pod,
    peak_rss_bytes,
    process_cpu_s,
    process_table,
    tree_cpu_seconds,
)
from loadtests.sizing.select import (
    Objective,
    OpStats,
    Repetition,
    Search,
    StepResult,
    Verdict,
    bracket,
    next_rate,
    verdict,
)
from loadtests.sizing.stack import REPO, StackConfig, memory_limit_bytes, pod_env

LOCUSTFILE = REPO / "loadtests" / "locustfile.py"
# The Dockerfile's CMD, with this virtual environment's gunicorn.
SERVE = ["gunicorn", "--config", "python:service.gunicorn_conf", "service.main:create_app()"]
# Generous limits: the limiter runs on Redis (its cost measured) but never decides capacity;
# the API-key client's tier is limited but far above what one pod serves.
GENEROUS_LIMIT = "1000000/minute"
TIER = "sizing-client"
API = "/api/v1"
Say = Callable[[str], None]


@dataclass(frozen=True)
class Plan:
    """How every repetition runs."""

    stack: StackConfig
    cpu_limit: float
    objective: Objective
    mix: dict[str, float]
    window_s: int = 60
    warmup_s: int = 15
    processes: int = 1
    arrivals: str = "poisson"
    seed_users: int = 20
    start_rps: float = 50.0
    max_rps: float = 20_000.0
    retries: int = 1  # an invalid step is measured again this many times
    cooldown_s: float = 2.0
    pg_url: str = "postgresql://postgres@127.0.0.1:5432"
    redis_url: str = "redis://127.0.0.1:6379/15"
    out: Path = Path("build/sizing")
    allow_fallback: bool = True


@dataclass
class Progress:
    """What the progress line reads; updated by the run as it goes."""

    total_reps: int
    started: float = field(default_factory=time.monotonic)
    reps_done: int = 0
    steps_done: int = 0
    retries: int = 0
    step_seconds: list[float] = field(default_factory=list)
    rep_overhead: list[float] = field(default_factory=list)  # set-up and tear-down of a server
    steps_per_rep: list[int] = field(default_factory=list)
    waits: list[float] = field(default_factory=list)  # seconds spent waiting for a quiet machine
    current: str = "starting"

    def eta_s(self, default_steps: float, default_step_s: float) -> float:
        step = statistics.median(self.step_seconds) if self.step_seconds else default_step_s
        # The run's first repetition ramps from --start-rps; the others start near λ*.
        later = self.steps_per_rep[1:]
        steps = statistics.mean(later) if later else default_steps
        retry_share = self.retries / self.steps_done if self.steps_done else 0.0
        overhead = statistics.median(self.rep_overhead) if self.rep_overhead else 30.0
        overhead += statistics.mean(self.waits) if self.waits else 0.0
        left = self.total_reps - self.reps_done
        in_current = self.steps_done - sum(self.steps_per_rep)
        return max(0.0, left * (steps * (1 + retry_share) * step + overhead) - in_current * step)


def estimated_steps(
    counts: int, reps: int, first: int = 9, first_of_count: int = 6, later: int = 5
) -> int:
    """Steps a run takes, before anything is measured (`plan_search`): the run's first
    repetition ramps from --start-rps, each other count's first starts at a measured count's
    λ*, later repetitions just below their count's own. The defaults are what a complete run
    on a quiet machine took (docs/sizing.md): a later repetition brackets an unmoved λ* in two
    steps, but a multi-worker pod's λ* moves enough between repetitions to need more."""
    return first + (counts - 1) * first_of_count + counts * (reps - 1) * later


def step_seconds(plan: Plan) -> float:
    return plan.warmup_s + plan.window_s + plan.cooldown_s + 6  # Locust's start and stop


def estimate_duration_s(plan: Plan, counts: int, reps: int) -> float:
    """What a run takes, before anything is measured (about 40 s to set up each server)."""
    return estimated_steps(counts, reps) * step_seconds(plan) + counts * reps * 40


def machine_busy(seconds: float = 2.0) -> float:
    """CPUs busy on the whole machine, averaged over `seconds`."""
    before = _machine_busy_s()
    time.sleep(seconds)
    return (_machine_busy_s() - before) / seconds


def wait_for_quiet(patience: float, threshold: float, say: Say) -> float:
    """Wait (at most `patience` seconds) until other work leaves the machine nearly idle;
    returns the seconds waited. Between repetitions nothing of this run is busy."""
    started = time.monotonic()
    while patience > 0 and (busy := machine_busy()) > threshold:
        waited = time.monotonic() - started
        if waited > patience:
            say(f"  the machine is still busy ({busy:.1f} CPUs) after {waited:.0f} s: measuring")
            break
        time.sleep(3)
    return time.monotonic() - started


# --- the server ---------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _psql(url: str, *statements: str) -> list[list[Any]]:
    """Run these statements, in order, on one connection to the database at `url`; the rows
    of each."""
    import asyncpg  # the service's driver; imported here so the pure helpers need none

    async def run() -> list[list[Any]]:
        conn = await asyncpg.connect(url, timeout=10)
        try:
            return [list(await conn.fetch(statement)) for statement in statements]
        finally:
            await conn.close()

    return asyncio.run(run())


@contextmanager
def database(pg_url: str, name: str) -> Iterator[str]:
    """A throwaway database, dropped on the way out; yields its URL."""
    _psql(f"{pg_url}/postgres", f'CREATE DATABASE "{name}"')
    try:
        yield f"{pg_url}/{name}"
    finally:
        _psql(f"{pg_url}/postgres", f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def clear_items(database_url: str) -> tuple[int, int]:
    """Remove every item, so each step starts from the seeded accounts alone; returns how many
    items there were and how many are left (none).

    Each step's Locust process gives every account new items and its creates and deletes only
    balance on average, so without this a repetition's later steps listed and counted more rows
    per request than its first: a step's cost depended on how many steps came before it, and the
    search reaches a count's λ* after a different number of steps in each repetition. Between
    steps no request is in flight, so TRUNCATE waits for no lock the server holds."""
    count = "SELECT count(*) FROM items"
    before, _, after = _psql(database_url, count, "TRUNCATE items", count)
    return int(before[0][0]), int(after[0][0])


def server_env(
    plan: Plan, workers: int, database_url: str, port: int, metrics_dir: str
) -> dict[str, str]:
    """The pod's environment (pod_env), with what this machine must change: where the stores and
    the port are, a JWT secret, rate limits that never decide capacity, and recycling off.

    MAX_REQUESTS=0 (as benchmarks/run.py): a recycle inside a window costs a worker's start-up
    and its warm caches, so whether one lands in the window would decide the result (it did,
    issue 13). The cost of a recycle is a property of start-up, measured as start-to-ready."""
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("LOADTEST_")},
        **pod_env(plan.stack, workers),
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "DATABASE_URL": database_url,
        "REDIS_URL": plan.redis_url,
        # The pod's Secret (files under /run/secrets/app): generated, as the stack generates or
        # is given them.
        "JWT_SECRET": secrets.token_urlsafe(48),
        "FIRST_ADMIN_PASSWORD": secrets.token_urlsafe(24),
        "PROMETHEUS_MULTIPROC_DIR": metrics_dir,  # the image's /tmp/prometheus is per pod
        "MAX_REQUESTS": "0",
        "RATE_LIMIT_ENABLED": "true",
        "RATE_LIMIT_LOGIN": GENEROUS_LIMIT,
        "RATE_LIMIT_USER": GENEROUS_LIMIT,
        "RATE_LIMIT_CLIENT": GENEROUS_LIMIT,
        "RATE_LIMIT_LOGIN_IP": GENEROUS_LIMIT,
        "RATE_LIMIT_LOGIN_USERNAME": GENEROUS_LIMIT,
    }


def _run(args: list[str], env: dict[str, str], log: IO[str], timeout: float) -> str:
    done = subprocess.run(
        args, env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout, check=False
    )
    log.write(f"$ {' '.join(args[:6])}\n{done.stdout}{done.stderr}\n")
    if done.returncode:
        raise RuntimeError(f"{' '.join(args[:4])} failed ({done.returncode}): {done.stderr[-500:]}")
    return done.stdout


@contextmanager
def serve(pod: Pod, env: dict[str, str], log: IO[str]) -> Iterator[subprocess.Popen]:
    """The production command inside the pod; SIGTERM (then SIGKILL) on the way out."""
    command = pod.wrap([str(Path(sys.executable).parent / SERVE[0]), *SERVE[1:]])
    log.write(f"$ {' '.join(command)}\n")
    log.flush()
    proc = subprocess.Popen(
        command, env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    pod.started(proc.pid)
    try:
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def wait_ready(url: str, proc: subprocess.Popen, timeout: float = 90) -> float:
    """Seconds until /health/ready answers 200 (the start-to-ready the HPA must wait for)."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited ({proc.returncode}) before it was ready")
        with suppress(httpx.HTTPError):
            if httpx.get(f"{url}/health/ready", timeout=2).status_code == 200:
                return time.monotonic() - started
        time.sleep(0.1)
    raise RuntimeError(f"{url}/health/ready did not answer 200 within {timeout:.0f} s")


def limited_api_key(url: str, password: str) -> tuple[str, int]:
    """Over HTTP, as the seeded admin: a rate-limit tier with a (generous) limit and an admin
    API key on it, as an integration would hold. Returns the key and the token lifetime."""
    with httpx.Client(base_url=url, timeout=30) as client:
        token = client.post(
            f"{API}/auth/token",
            data={"username": "loadtest-admin@example.com", "password": password},
        )
        token.raise_for_status()
        body = token.json()
        auth = {"Authorization": f"Bearer {body['access_token']}"}
        tier = client.post(
            f"{API}/rate-limit-tiers", json={"name": TIER, "limit": GENEROUS_LIMIT}, headers=auth
        )
        if tier.status_code not in (201, 409):
            raise RuntimeError(f"creating the tier answered {tier.status_code}: {tier.text[:300]}")
        key = client.post(
            f"{API}/api-keys",
            json={"name": "sizing client", "role": "admin", "tier": TIER},
            headers=auth,
        )
        if key.status_code != 201:
            raise RuntimeError(f"minting the API key answered {key.status_code}: {key.text[:300]}")
        return str(key.json()["key"]), int(body.get("expires_in") or 0)


# --- one step -----------------------------------------------------------------------------------


def parse_stats(rows: list[dict[str, str]]) -> tuple[dict[str, OpStats], int, int, int]:
    """Locust's *_stats.csv as per-operation figures, plus late and dropped starts and probe
    failures. "429 <op>" entries count as that operation's rate-limited requests."""

    def ms(row: dict[str, str], column: str) -> float:
        value = row.get(column, "")
        return 0.0 if value in ("", "N/A") else float(value)

    ops: dict[str, OpStats] = {}
    limited: dict[str, int] = {}
    late = dropped = probe_failures = 0
    for row in rows:
        name, kind = row["Name"], row["Type"]
        count, failures = int(row["Request Count"]), int(row["Failure Count"])
        if name == "Aggregated":
            continue
        if kind == "SCHED":
            late += count if name == "late" else 0
            dropped += count if name == "dropped" else 0
        elif name.startswith("setup_"):  # the accounts' logins before the schedule starts
            continue
        elif name.startswith("probe_"):
            probe_failures += failures
        elif name.startswith("429 "):
            limited[name[4:]] = limited.get(name[4:], 0) + count
        else:
            ops[name] = OpStats(count, failures, ms(row, "95%"), ms(row, "99%"))
    for op, n in limited.items():
        s = ops.get(op, OpStats(0, 0, 0.0, 0.0))
        ops[op] = OpStats(s.requests + n, s.failures, s.p95_ms, s.p99_ms, n)
    return ops, late, dropped, probe_failures


def machine_cpu_s(line: str) -> tuple[float, float]:
    """CPU seconds the machine was busy and, of those, stolen, from /proc/stat's first line.

    Steal is time a virtual CPU wanted to run while the hypervisor ran someone else: it counts as
    busy (nothing here could use it), and it is kept apart because the pod's cgroup does not
    count it although the pod's requests wait through it.
    """
    # "cpu user nice system idle iowait irq softirq steal ..."
    ticks = [int(v) for v in line.split()[1:9]]
    hz = os.sysconf("SC_CLK_TCK")
    return (sum(ticks) - ticks[3] - ticks[4]) / hz, ticks[7] / hz


def _machine_cpu_s() -> tuple[float, float]:
    with Path("/proc/stat").open() as stat:
        return machine_cpu_s(stat.readline())


def _machine_busy_s() -> float:
    return _machine_cpu_s()[0]


def _stores_cpu_s() -> float:
    total = 0.0
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with suppress(OSError):
                comm = (entry / "comm").read_text().strip()
                if comm in ("postgres", "redis-server"):
                    total += process_cpu_s(int(entry.name))
    return total


@dataclass(frozen=True)
class StepRecord:
    """A step as the report keeps it: the result, its verdict and the conditions."""

    result: StepResult
    verdict: Verdict
    stores_cpu: float
    attempt: int
    items_at_start: int = 0  # items in the database when Locust started (its setup adds its own)
    items_cleared: int = 0  # items the previous step left, removed before this one


def run_step(
    plan: Plan,
    pod: Pod,
    workers: int,
    rate: float,
    url: str,
    load_env: dict[str, str],
    prefix: Path,
    log: IO[str],
) -> tuple[StepResult, float]:
    """One Locust run at `rate`: warm-up, then the measured window. Returns the step and the
    CPUs PostgreSQL and Redis used meanwhile (they share this machine; in a cluster they do not)."""
    total = plan.warmup_s + plan.window_s
    users = plan.processes
    args = [
        *(sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "--only-summary"),
        *("-u", str(users), "-r", "100", "-t", f"{total}s", "--stop-timeout", "3"),
        *("--host", url, "--csv", str(prefix), "--loglevel", "WARNING"),
    ]
    if plan.processes > 1:
        args += ["--processes", str(plan.processes)]
    env = {
        **load_env,
        "LOADTEST_RATE": f"{rate:g}",
        "LOADTEST_SCHEDULERS": str(users),
        "LOADTEST_ARRIVALS": plan.arrivals,
        "LOADTEST_WARMUP": str(plan.warmup_s),
        "LOADTEST_MIX": mixes.encode(plan.mix),
    }
    log.write(f"$ LOADTEST_RATE={rate:g} {' '.join(args)}\n")
    log.flush()
    proc = subprocess.Popen(args, env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    try:
        time.sleep(2 + plan.warmup_s)  # Locust's start, then the warm-up it discards
        clients = children(proc.pid)
        before = (
            pod.cpu(),
            {p: process_cpu_s(p) for p in clients},
            _machine_cpu_s(),
            _stores_cpu_s(),
        )
        wall_0 = time.monotonic()
        time.sleep(max(1.0, plan.window_s - 3))
        after = (
            pod.cpu(),
            {p: process_cpu_s(p) for p in clients},
            _machine_cpu_s(),
            _stores_cpu_s(),
        )
        wall = time.monotonic() - wall_0
        proc.wait(timeout=total + 60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    cpu: CpuSample = after[0] - before[0]
    client = {p: (after[1][p] - before[1].get(p, 0.0)) / wall for p in after[1]}
    # With --processes the Locust master only aggregates: report the processes that send.
    busiest = max(client.values(), default=0.0)
    client_busy = [round(c, 3) for c in client.values() if c > 0.1 * busiest or c == busiest]
    stores = (after[3] - before[3]) / wall
    busy, steal = ((a - b) / wall for a, b in zip(after[2], before[2], strict=True))
    other = busy - cpu.usage_s / wall - sum(client.values()) - stores
    with Path(f"{prefix}_stats.csv").open() as stats:
        ops, late, dropped, probe_failures = parse_stats(list(csv.DictReader(stats)))
    requests = sum(s.requests for s in ops.values())
    # The span Locust's statistics cover, from the schedule itself (its starts / its rate): the
    # stats reset and the run's end are Locust's, not this process's, timers.
    window = (requests + dropped) / rate
    result = StepResult(
        workers=workers,
        offered_rps=rate,
        window_s=window,
        ops=ops,
        scheduled=requests + dropped,
        late=late,
        dropped=dropped,
        client_cpu=tuple(client_busy),
        server_cpu_s=cpu.usage_s / wall * window,  # the pod's CPU rate over Locust's span
        throttled_periods=cpu.throttled,
        periods=cpu.periods,
        throttled_s=cpu.throttled_s,
        other_cpu=round(max(0.0, other), 3),
        steal_cpu=round(max(0.0, steal), 3),
        mix=plan.mix,
        probe_failures=probe_failures,
    )
    return result, round(stores, 3)


# --- one repetition -----------------------------------------------------------------------------


@dataclass
class RepetitionRecord:
    repetition: Repetition
    steps: list[StepRecord]
    pod: dict[str, Any]
    token_ttl_s: int
    seconds: float


def repetition(
    plan: Plan, workers: int, rep: int, say: Say, progress: Progress, search: Search
) -> RepetitionRecord:
    """A fresh database and server for `workers`; search λ*; the figures at λ*."""
    began = time.monotonic()
    tag = f"w{workers}-r{rep}"
    logs = plan.out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    (plan.out / "locust").mkdir(parents=True, exist_ok=True)
    port, password = free_port(), secrets.token_urlsafe(12)
    url = f"http://127.0.0.1:{port}"
    name = f"sizing_{os.getpid()}_{tag.replace('-', '_')}"
    limits = Limits(plan.cpu_limit, memory_limit_bytes(plan.stack, workers))
    records: list[StepRecord] = []
    notes: list[str] = []
    with (
        (logs / f"{tag}.log").open("w") as log,
        database(plan.pg_url, name) as db_url,
        tempfile.TemporaryDirectory(prefix="sizing-metrics-") as metrics_dir,
    ):
        env = server_env(plan, workers, db_url, port, metrics_dir)
        python = sys.executable
        _run([python, "-m", "service", "migrate"], env, log, timeout=180)
        seed = [python, "-m", "service", "seed-loadtest", "--users", str(plan.seed_users)]
        _run(seed, {**env, "LOADTEST_PASSWORD": password}, log, timeout=180)
        pod = open_pod(
            limits, f"sizing-{os.getpid()}-{tag}", say, allow_fallback=plan.allow_fallback
        )
        try:
            with serve(pod, env, log) as proc:
                ready_s = wait_ready(url, proc)
                api_key, ttl = limited_api_key(url, password)
                load_env = {
                    **{k: v for k, v in os.environ.items() if not k.startswith("LOADTEST_")},
                    "LOADTEST_PASSWORD": password,
                    "LOADTEST_USERS": str(plan.seed_users),
                    "LOADTEST_API_KEY": api_key,
                }
                trials: list[tuple[float, bool]] = []
                while (rate := next_rate(search, trials)) is not None:
                    record = None
                    for attempt in range(plan.retries + 1):
                        progress.current = f"{tag}: step {len(trials) + 1} at {rate:g} req/s"
                        t0 = time.monotonic()
                        prefix = plan.out / "locust" / f"{tag}-{rate:g}-{attempt}"
                        cleared, at_start = clear_items(db_url)
                        result, stores = run_step(
                            plan, pod, workers, rate, url, load_env, prefix, log
                        )
                        record = StepRecord(
                            result,
                            verdict(result, plan.objective),
                            stores,
                            attempt,
                            items_at_start=at_start,
                            items_cleared=cleared,
                        )
                        records.append(record)
                        progress.steps_done += 1
                        progress.step_seconds.append(time.monotonic() - t0)
                        say(f"  {tag} {rate:g} req/s: {_line(record)}")
                        time.sleep(plan.cooldown_s)
                        if record.verdict.status != "invalid":
                            break
                        progress.retries += 1
                    assert record is not None
                    if record.verdict.status == "invalid":
                        notes.append(
                            f"step at {rate:g} req/s invalid: {'; '.join(record.verdict.reasons)}"
                        )
                        break
                    trials.append((rate, record.verdict.status == "pass"))
                if proc.poll() is not None:
                    notes.append(f"the server exited ({proc.returncode}) during the repetition")
                processes = pod.pids()
                master_peak = peak_rss_bytes(proc.pid)
                worker_peaks = [
                    p for pid in processes if pid != proc.pid if (p := peak_rss_bytes(pid))
                ]
                oom = pod.oom_kills()
            memory_peak = pod.memory_peak()
            pod_info = pod.describe()
        finally:
            pod.close()
    low, high = bracket(trials)
    star = next(
        (r for r in records if r.result.offered_rps == low and r.verdict.status == "pass"), None
    )
    if oom:
        notes.append(f"{oom} process(es) were killed for exceeding the memory limit")
    # Recycling is off (MAX_REQUESTS=0): any worker booted past the first `workers` replaced
    # one that died (a crash or the memory limit), and the repetition does not count.
    boots = (logs / f"{tag}.log").read_text().count("Booting worker with pid")
    recycles = max(0, boots - workers)
    if recycles:
        notes.append(f"{recycles} worker(s) were replaced during the repetition")
    valid = not notes and pod.faithful and star is not None
    if not pod.faithful:
        notes.append("the pod's limits fell back to taskset: not a pod")
    if star is None and not notes:
        notes.append("no arrival rate met the objective")
    at = star.result if star else None
    outcome = Repetition(
        workers=workers,
        lambda_star=low if star else None,
        high=high,
        valid=valid,
        notes=tuple(notes),
        p95_ms={c: v[0] for c, v in at.class_latency().items()} if at else {},
        p99_ms={c: v[1] for c, v in at.class_latency().items()} if at else {},
        cpu_per_request_ms=at.cpu_per_request_ms if at else None,
        cpus_at_star=at.server_cpus_used if at else None,
        peak_memory_bytes=memory_peak,
        master_peak_bytes=master_peak,
        worker_peak_bytes=max(worker_peaks) if worker_peaks else None,
        start_to_ready_s=round(ready_s, 2),
        throttled_fraction=(at.throttled_periods / at.periods) if at and at.periods else None,
    )
    pod_info = {**pod_info, "oom_kills": oom, "processes": len(processes), "recycles": recycles}
    seconds = time.monotonic() - began
    progress.rep_overhead.append(
        seconds - sum(progress.step_seconds[-len(records) :]) if records else seconds
    )
    progress.steps_per_rep.append(len(records))
    progress.reps_done += 1
    return RepetitionRecord(outcome, records, pod_info, ttl, seconds)


def _line(record: StepRecord) -> str:
    r = record.result
    lat = ", ".join(
        f"{c} p95 {p95:.0f}/p99 {p99:.0f} ms" for c, (p95, p99) in sorted(r.class_latency().items())
    )
    throttled = f"{r.throttled_periods}/{r.periods}" if r.periods else "n/a"
    return (
        f"{record.verdict.status.upper()} {r.achieved_rps:.0f} req/s done; {lat}; "
        f"{r.failures} failed, {r.rate_limited} 429, {r.late} late, {r.dropped} dropped; pod "
        f"{r.server_cpus_used:.2f} CPU, throttled {throttled}; Locust "
        f"{'/'.join(f'{c:.0%}' for c in r.client_cpu) or '?'}; other {r.other_cpu:.2f} CPU "
        f"(steal {r.steal_cpu:.2f})"
        + (f" ({'; '.join(record.verdict.reasons)})" if record.verdict.reasons else "")
    )


def progress_thread(
    progress: Progress, say: Say, every_s: float, default_steps: float, default_step_s: float
) -> threading.Event:
    """Prints a progress line every `every_s` seconds until the returned event is set; until
    repetitions are measured, the ETA assumes `default_steps` of `default_step_s` each."""
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(every_s):
            elapsed = time.monotonic() - progress.started
            eta = progress.eta_s(default_steps, default_step_s)
            say(
                f"[progress] {progress.reps_done}/{progress.total_reps} repetitions, "
                f"{progress.steps_done} steps ({progress.retries} retried); "
                f"now {progress.current}; "
                f"elapsed {elapsed / 60:.1f} min, about {eta / 60:.0f} min left"
            )

    threading.Thread(target=loop, daemon=True).start()
    return stop
