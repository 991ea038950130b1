"""`python -m loadtests.sizing` (`make size ARGS=...`): measure worker counts, recommend one.

Each worker count runs the production server on real PostgreSQL and Redis, pinned to as many CPUs
as the stack's pod CPU limit, with Locust on the remaining CPUs; see run.py for one step.
"""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import sys
import time
from pathlib import Path

from loadtests.sizing.apply import (
    CPU_KEYS,
    StackError,
    apply,
    parse_cpu,
    pod_cpu,
    read_config,
    stack_file,
)
from loadtests.sizing.report import COLUMNS, summary, table, table_row, write_all
from loadtests.sizing.run import Plan, Say, machine_busy, measure, parse_ranges, split_cpus
from loadtests.sizing.select import Objective, Step, recommend

QUIET_CPUS = 0.3  # other work below this many busy CPUs counts as a quiet machine
HEADROOM = "HPA target = CPU use at the objective x this (%(default)s)"
QUIET_WAIT = "seconds a step waits at most for other work on the machine to stop (%(default)s)"


def parser(cpus: int) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m loadtests.sizing", description=__doc__)
    add = p.add_argument
    add("--workers", default=f"1-{2 * cpus + 1}", help="counts: 1-5 or 1,2,4 (%(default)s)")
    add("--users", type=int, help=f"Locust users, fixed ({Plan.users} per server CPU)")
    add("--duration", type=int, default=Plan.duration, help="measured seconds a step (%(default)s)")
    add("--warmup", type=int, default=Plan.warmup, help="discarded seconds first (%(default)s)")
    add("--think", default=Plan.think, help="think time, LOADTEST_WAIT: S or MIN-MAX (%(default)s)")
    add("--seed-users", type=int, default=Plan.seed_users, help="accounts seeded (%(default)s)")
    add("--p95-ms", type=float, default=Objective.p95_ms, help="p95 objective (%(default)s)")
    add(
        "--margin",
        type=float,
        default=Objective.margin,
        help="fraction of the best req/s that is close enough (%(default)s)",
    )
    add("--hpa-headroom", type=float, default=Objective.hpa_headroom, help=HEADROOM)
    add("--stack", default="dev", help="stack whose pod CPU limit is measured (%(default)s)")
    add("--cpu-limit", help="pod CPU limit, overriding the stack's (e.g. 1, 500m)")
    add("--server-cpus", help="CPUs for the server, e.g. 0 or 0-1 (default: from the CPU limit)")
    add("--pg-url", default=Plan.pg_url, help="PostgreSQL server, no database (%(default)s)")
    add("--redis-url", default=Plan.redis_url, help="Redis for the limiter (%(default)s)")
    add("--out", type=Path, default=Plan.out, help="output folder (%(default)s)")
    add("--quiet-wait", type=float, default=Plan.quiet_wait, help=QUIET_WAIT)
    add("--retries", type=int, default=2, help="re-measure a disturbed step (%(default)s times)")
    add("--apply", metavar="STACK", help="write workers and HPA target into Pulumi.STACK.yaml")
    return p


def pod_cpus(stack: str, override: str | None, say: Say) -> tuple[float, float]:
    """The pod's CPU limit (--cpu-limit, else the stack's) and request, as the Pulumi program reads
    them (its defaults where the stack file says nothing)."""
    try:
        config = read_config(stack)
    except StackError as error:
        config = {}
        say(f"note: {error}; using the Pulumi program's defaults")
    (limit, limit_default), (request, request_default) = (pod_cpu(config, k) for k in CPU_KEYS)
    if override:
        limit, limit_default = parse_cpu(override), False
    for kind, value, default in (
        ("limit", limit, limit_default),
        ("request", request, request_default),
    ):
        if default:
            say(f"note: stack {stack!r} sets no CPU {kind}; using the default {value:g} CPU")
    return limit, request


def wait_for_quiet(patience: float, say: Say) -> None:
    """Wait (at most `patience` seconds) until other work leaves the machine nearly idle."""
    started = time.monotonic()
    said = -60.0
    while patience > 0 and (busy := machine_busy()) > QUIET_CPUS:
        waited = time.monotonic() - started
        if waited > patience:
            say(f"  warning: the machine is still busy ({busy:.1f} CPUs); measuring anyway")
            return
        if waited - said >= 60:  # a line a minute, not one every sample
            say(f"  waiting for the machine to quieten: {busy:.1f} CPUs busy with other work")
            said = waited
        time.sleep(3)


def measure_once(plan: Plan, workers: int, say: Say) -> Step:
    """One measurement with its progress line; one that breaks is reported and counts as empty."""
    wait_for_quiet(plan.quiet_wait, say)
    started = time.monotonic()
    try:
        step = measure(plan, workers, say)
    except Exception as error:  # reported, and the sweep goes on with the next count
        say(f"  step failed: {error} (see {plan.out}/logs/workers-{workers}.log)")
        step = Step(workers, 0, 0, 0, 0, failures=0)
    cpu = dict(zip(COLUMNS, table_row(step, None), strict=True))
    say(
        f"  done in {time.monotonic() - started:.0f} s: {cpu['rps']} req/s, p50 {cpu['p50_ms']} /"
        f" p95 {cpu['p95_ms']} / p99 {cpu['p99_ms']} ms, {step.failures} failures, "
        f"{step.rate_limited} rate-limited; CPU: server {cpu['cpu_util']}, Locust "
        f"{cpu['client_cpu_util']}, PG+Redis {cpu['stores_cpu']}, other {cpu['other_cpu']}"
    )
    return step


def disturbed(step: Step) -> str | None:
    """Why a measurement should be taken again: it broke, or other work ran during it."""
    if not step.requests:
        return "the step completed no requests"
    if (step.other_cpu or 0) > QUIET_CPUS:
        return f"other work used {step.other_cpu:.2f} CPUs meanwhile"
    return None


def measure_step(plan: Plan, workers: int, progress: str, retries: int, say: Say) -> Step:
    """Measure a worker count; again (up to `retries` times) while other work skewed it, keeping
    the least disturbed measurement."""
    say(f"{progress} {workers} worker(s)")
    tries = [measure_once(plan, workers, say)]
    while len(tries) <= retries and (why := disturbed(tries[-1])):
        say(f"  {why}; measuring again")
        tries.append(measure_once(plan, workers, say))
    return min(tries, key=lambda step: (not step.requests, step.other_cpu or 0))


def main(argv: list[str] | None = None) -> int:
    say = lambda line: print(line, flush=True)  # noqa: E731
    # SIGTERM unwinds like Ctrl-C: the server stops and the throwaway database is dropped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    available = sorted(os.sched_getaffinity(0))
    args = parser(len(available)).parse_args(argv)
    if args.apply:
        stack_file(args.apply)  # refuse an unknown stack before minutes of measuring
    limit, request = pod_cpus(args.stack, args.cpu_limit, say)
    explicit = parse_ranges(args.server_cpus) if args.server_cpus else None
    server, client, notes = split_cpus(available, limit, explicit)
    for note in notes:
        say(f"note: {note}")
    plan = Plan(
        users=args.users or Plan.users * len(server),
        duration=args.duration,
        warmup=args.warmup,
        think=args.think,
        seed_users=args.seed_users,
        server_cpus=tuple(server),
        client_cpus=tuple(client),
        pg_url=args.pg_url,
        redis_url=args.redis_url,
        out=args.out,
        quiet_wait=args.quiet_wait,
    )
    objective = Objective(p95_ms=args.p95_ms, margin=args.margin, hpa_headroom=args.hpa_headroom)
    counts = parse_ranges(args.workers)
    step_seconds = plan.warmup + plan.duration + 10
    say(
        f"sizing {len(counts)} worker count(s) {counts}: server on CPU {server}, Locust on "
        f"CPU {client}, {plan.users} users; about {len(counts) * step_seconds // 60 + 1} min"
    )
    if (load := os.getloadavg()[0]) > 0.5:
        say(f"warning: load average {load:.1f}: other work on this machine will skew the figures")
    steps = [
        measure_step(plan, workers, f"[{i}/{len(counts)}]", args.retries, say)
        for i, workers in enumerate(counts, 1)
    ]
    rec = recommend(steps, objective, len(server), request)
    settings = {
        "command": shlex.join(["python", "-m", "loadtests.sizing", *(argv or sys.argv[1:])]),
        "workers": counts, "users": plan.users, "think_s": plan.think,
        "duration_s": plan.duration, "warmup_s": plan.warmup, "p95_objective_ms": objective.p95_ms,
        "margin": objective.margin, "hpa_headroom": objective.hpa_headroom, "stack": args.stack,
        "pod_cpu_limit": limit, "pod_cpu_request": request, "server_cpus": server,
        "client_cpus": client, "machine_cpus": len(available), "notes": notes,
        "load_average_before": round(load, 2),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }  # fmt: skip
    paths = write_all(plan.out, steps, rec, settings)
    say("\n" + table(steps, rec.workers) + "\n\n" + summary(rec))
    say(f"\nwrote {', '.join(str(p) for p in paths.values())}")
    if args.apply:
        if rec.workers is None:
            say(f"nothing applied to stack {args.apply!r}: no worker count qualified")
            return 1
        path = apply(args.apply, rec.workers, rec.hpa_cpu_target)
        say(f"applied workers={rec.workers}, hpaCpuTarget={rec.hpa_cpu_target} to {path}")
    return 0 if any(s.requests for s in steps) else 1


if __name__ == "__main__":
    sys.exit(main())
