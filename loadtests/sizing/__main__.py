"""`python -m loadtests.sizing` (`make size ARGS=...`): how many Gunicorn workers a pod should run.

For each worker count, repeated on a fresh server in shuffled rounds: the stack's pod (its CPU
limit as a CFS quota, its memory limit) runs the production command; open-loop Locust load
finds λ*, the highest arrival rate that meets the objective, to ±3 %. The recommendation is the
count that serves --peak-rps at the lowest cost, with bootstrap intervals and a stability figure;
the memory budget and the HPA CPU target follow from what was measured. See docs/sizing.md.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import random
import shlex
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from loadtests.sizing import mix as mixes
from loadtests.sizing.apply import ApplyRefused, apply
from loadtests.sizing.report import environment, write_all
from loadtests.sizing.run import (
    Plan,
    Progress,
    RepetitionRecord,
    estimate_duration_s,
    estimated_steps,
    progress_thread,
    repetition,
    step_seconds,
    wait_for_quiet,
)
from loadtests.sizing.select import (
    Conditions,
    CostModel,
    Hpa,
    Objective,
    Recommendation,
    Repetition,
    hpa_advice,
    memory_advice,
    plan_search,
    recommend,
    summarise,
    validity,
)
from loadtests.sizing.stack import REPO, StackError, load_stack, parse_cpu, stack_file

SCHEMA_VERSION = 2
TOKEN_TTL_S = 900  # the service's ACCESS_TOKEN_TTL_SECONDS default; the run checks it


def parse_ranges(text: str) -> list[int]:
    """ "1-3,5" -> [1, 2, 3, 5] (sorted, unique)."""
    values: set[int] = set()
    for part in filter(None, (p.strip() for p in text.split(","))):
        low, _, high = part.partition("-")
        values.update(range(int(low), int(high or low) + 1))
    if not values or min(values) < 1:
        raise ValueError(f"not a list of worker counts: {text!r}")
    return sorted(values)


def parse_slo(items: list[str], base: Objective) -> dict[str, tuple[float, float]]:
    """["read=100/250", ...] over the defaults."""
    out = dict(base.latency_ms)
    for item in items:
        cls, _, values = item.partition("=")
        p95, _, p99 = values.partition("/")
        out[cls] = (float(p95), float(p99 or "inf"))
    return out


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m loadtests.sizing", description=__doc__)
    add = p.add_argument
    add("--stack", default="staging", help="stack whose pod is measured (%(default)s)")
    add("--apply", metavar="STACK", help="measure STACK's pod and write the result into it")
    add("--dry-run", action="store_true", help="with --apply: show the diff, write nothing")
    add("--workers", help="counts, e.g. 1-3 or 1,2,4 (default: 1 to 2 x ceil(CPU limit) + 1)")
    add("--reps", type=int, default=5, help="repetitions per count, fresh server each (5)")
    add("--window", type=int, default=60, help="measured seconds per step (60; <60 not valid)")
    add("--warmup", type=int, default=15, help="discarded seconds before each window (15)")
    add("--quick", action="store_true", help="3 reps, 10 s windows: a look, never --apply")
    add("--peak-rps", type=float, default=1000.0, help="the rate to size for (%(default)s)")
    add("--start-rps", type=float, help="first arrival rate tried (default 50 per CPU)")
    add("--max-rps", type=float, default=Plan.max_rps, help="highest rate tried (%(default)s)")
    add("--processes", type=int, default=1, help="Locust processes (%(default)s)")
    add("--arrivals", choices=("poisson", "constant"), default="poisson")
    add("--slo", action="append", default=[], metavar="CLASS=P95/P99", help="ms, e.g. read=100/250")
    add("--error-budget", type=float, default=Objective.error_budget, help="(%(default)s)")
    add("--seed-users", type=int, default=20, help="accounts seeded (%(default)s)")
    add("--client-rps", type=float, default=1.0, help="one client's request rate (%(default)s)")
    add("--token-ttl", type=float, default=TOKEN_TTL_S, help="access token lifetime, s (900)")
    add("--login-fraction", type=float, help="default: 1 / (token TTL x client rate)")
    add("--growth-per-min", type=float, default=Hpa.growth_per_min, help="HPA: load growth")
    add("--cpu-limit", help="override the stack's CPU limit (the result is then not applicable)")
    add("--retries", type=int, default=1, help="re-measure an invalid step (%(default)s times)")
    add("--min-stability", type=float, default=Conditions.min_stability)
    add("--max-noise", type=float, default=Conditions.max_noise)
    add("--seed", type=int, default=13, help="order, arrivals and resampling seed (13)")
    add("--pg-url", default=Plan.pg_url)
    add("--redis-url", default=Plan.redis_url)
    add("--out", type=Path, default=Plan.out)
    add("--quiet-wait", type=float, default=120, help="before each repetition, wait at most "
        "this long for other work to fall below --quiet-cpus (%(default)s s)")  # fmt: skip
    add("--quiet-cpus", type=float, default=0.3, help="(%(default)s)")
    add("--progress", type=float, default=5.0, help="seconds between progress lines (5)")
    return p


def git_commit() -> str:
    # A snapshot copied away from ongoing edits names its commit in SIZING_COMMIT.
    if named := os.environ.get("SIZING_COMMIT"):
        return named
    done = subprocess.run(
        ["git", "rev-parse", "--short=12", "HEAD"], cwd=REPO, capture_output=True, text=True
    )
    dirty = subprocess.run(
        ["git", "status", "--porcelain"], cwd=REPO, capture_output=True, text=True
    )
    commit = done.stdout.strip() or "unknown"
    return commit + ("-dirty" if dirty.stdout.strip() else "")


def order(counts: list[int], reps: int, seed: int) -> list[tuple[int, int]]:
    """Rounds of every count, each round shuffled: drift hits every count alike."""
    rng = random.Random(seed)
    out = []
    for rep in range(1, reps + 1):
        round_ = list(counts)
        rng.shuffle(round_)
        out += [(w, rep) for w in round_]
    return out


def main(argv: list[str] | None = None) -> int:
    say = lambda line: print(line, flush=True)  # noqa: E731
    # SIGTERM unwinds like Ctrl-C: the server stops, the cgroup and the database are removed.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    p = parser()
    args = p.parse_args(argv)
    if args.apply:
        args.stack = args.apply  # --apply X measures X's pod, nothing else
    if args.quick:
        args.reps, args.window, args.warmup = min(args.reps, 3), min(args.window, 10), 3
    try:
        stack_file(args.stack)
        config = load_stack(args.stack)
    except (StackError, Exception) as error:  # ConfigError too: say it before minutes of work
        p.error(f"stack {args.stack!r}: {error}")
    limit = parse_cpu(args.cpu_limit or config.app.cpu_limit)
    request = parse_cpu(config.app.cpu)
    counts = parse_ranges(args.workers or f"1-{2 * math.ceil(limit) + 1}")
    objective = Objective(
        latency_ms=parse_slo(args.slo, Objective()), error_budget=args.error_budget
    )
    login = args.login_fraction
    if login is None:
        login = mixes.login_fraction(args.token_ttl, args.client_rps)
    mix = mixes.build(mixes.DEFAULT_FRACTIONS, login)
    plan = Plan(
        stack=config,
        cpu_limit=limit,
        objective=objective,
        mix=mix,
        window_s=args.window,
        warmup_s=args.warmup,
        processes=args.processes,
        arrivals=args.arrivals,
        seed_users=args.seed_users,
        start_rps=args.start_rps or 50 * limit,
        max_rps=args.max_rps,
        retries=args.retries,
        pg_url=args.pg_url,
        redis_url=args.redis_url,
        out=args.out,
    )
    schedule = order(counts, args.reps, args.seed)
    full = estimate_duration_s(plan, len(counts), args.reps)
    say(
        f"sizing stack {args.stack!r}: pod CPU limit {limit:g} (request {request:g}), worker "
        f"counts {counts} x {args.reps} repetitions in shuffled rounds, {args.warmup} s warm-up +"
        f" {args.window} s windows, {args.arrivals} arrivals, peak {args.peak_rps:g} req/s; "
        f"login fraction {login:.4%}; estimated {full / 3600:.1f} h, plus up to "
        f"{args.quiet_wait * len(schedule) / 60:.0f} min waiting for a quiet machine"
    )
    if (load := os.getloadavg()[0]) > 0.5:
        say(f"warning: load average {load:.1f}: other work on this machine will skew the figures")
    progress = Progress(total_reps=len(schedule))
    per_rep = estimated_steps(len(counts), args.reps) / len(schedule)
    stop = progress_thread(progress, say, args.progress, per_rep, step_seconds(plan))
    reps: list[Repetition] = []
    records: list[RepetitionRecord] = []

    def conclude(final: bool) -> tuple[dict[str, Path], Recommendation]:
        """The report from the repetitions so far: rewritten after each one (marked incomplete),
        so an interrupted run still leaves one."""
        # Every repetition's peaks count, valid or not: one that hit the memory limit is the case
        # the budget must cover.
        mem = memory_advice(reps)
        cost = CostModel(
            cpu_request=request,
            connections_per_worker=config.app.db_pool_size + config.app.db_max_overflow,
            min_replicas=config.app.min_replicas,
        )
        summaries = summarise(reps, cost, mem, args.peak_rps, args.seed)
        rec = recommend(reps, summaries, cost, mem, args.peak_rps, min(3, args.reps), args.seed)
        hpa = None
        chosen = next((s for s in summaries if s.workers == rec.workers), None)
        if chosen and chosen.cpus_at_star:
            hpa = hpa_advice(
                chosen.cpus_at_star.median,
                request,
                chosen.start_to_ready_s or 0.0,
                Hpa(growth_per_min=args.growth_per_min),
            )
        others = [s.result.other_cpu for rr in records for s in rr.steps]
        faithful = all(rr.pod.get("faithful") for rr in records)
        verdict = validity(
            Conditions(
                window_s=args.window,
                reps=args.reps,
                pod_faithful=faithful,
                stack_pod=args.cpu_limit is None,
                max_noise=args.max_noise,
                min_stability=args.min_stability,
            ),
            summaries,
            rec,
            sum(not r.valid for r in reps),
            statistics.median(others) if others else 0.0,
        )
        if others:
            steals = [s.result.steal_cpu for rr in records for s in rr.steps]
            verdict["notes"].append(
                f"other work during the windows: a median of {statistics.median(others):.2f} "
                f"CPUs, {statistics.median(steals):.2f} of them stolen by the hypervisor (steal: "
                "the pod's requests wait through it, and its cgroup does not count it)"
            )
        ttls = sorted({rr.token_ttl_s for rr in records if rr.token_ttl_s})
        if ttls and ttls != [int(args.token_ttl)]:
            verdict["notes"].append(
                f"the server's tokens live {ttls} s, not --token-ttl {args.token_ttl:g}: the login "
                "fraction assumed the latter"
            )
        settings = {
            "command": shlex.join(["python", "-m", "loadtests.sizing", *(argv or sys.argv[1:])]),
            "stack": args.stack, "workers": counts, "reps": args.reps, "window_s": args.window,
            "warmup_s": args.warmup, "arrivals": args.arrivals, "processes": args.processes,
            "peak_rps": args.peak_rps, "pod_cpu_limit": limit, "pod_cpu_request": request,
            "objective": {"latency_ms": objective.latency_ms,
                          "error_budget": objective.error_budget,
                          "max_late": objective.max_late, "max_dropped": objective.max_dropped,
                          "max_client_cpu": objective.max_client_cpu,
                          "precision": objective.precision},
            "mix": mix, "login_fraction": login, "seed_users": args.seed_users, "seed": args.seed,
            "order": schedule, "estimated_s": round(full), "load_average_before": round(load, 2),
            "max_requests": 0,
        }  # fmt: skip
        report: dict[str, Any] = {
            "schema_version": SCHEMA_VERSION,
            "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "environment": environment(git_commit()),
            "settings": settings,
            "validity": verdict,
            "elapsed_s": round(time.monotonic() - progress.started),
        }
        paths = write_all(plan.out, report, records, reps, summaries, rec, mem, hpa, say, final)
        return paths, rec

    try:
        for i, (workers, rep) in enumerate(schedule, 1):
            found = {
                w: [r.lambda_star for r in reps if r.workers == w and r.lambda_star] for w in counts
            }
            search = plan_search(workers, found, plan.start_rps, objective.precision, plan.max_rps)
            say(
                f"[{i}/{len(schedule)}] {workers} worker(s), repetition {rep}, "
                f"from {search.start:g} req/s"
            )
            progress.current = "waiting for a quiet machine"
            progress.waits.append(wait_for_quiet(args.quiet_wait, args.quiet_cpus, say))
            try:
                record = repetition(plan, workers, rep, say, progress, search)
            except Exception as error:  # reported; the run goes on with the next repetition
                say(f"  repetition failed: {error} (see {plan.out}/logs/)")
                progress.reps_done += 1
                reps.append(Repetition(workers, None, None, False, (f"failed: {error}",)))
                continue
            records.append(record)
            reps.append(record.repetition)
            r = record.repetition
            conclude(final=False)
            say(
                f"  λ* {r.lambda_star or 0:g} req/s (first fail {r.high or '-'}), "
                f"{'valid' if r.valid else 'INVALID: ' + '; '.join(r.notes)}; "
                f"ready in {r.start_to_ready_s} s, took {record.seconds / 60:.1f} min"
            )
    finally:
        stop.set()

    paths, rec = conclude(final=True)
    if args.apply:
        written = paths["json"].read_bytes()
        report = json.loads(written)
        provenance = (
            f"{report['date']} by `make size`, commit {report['environment']['commit']}, "
            f"sizing.json sha256 {hashlib.sha256(written).hexdigest()[:16]}"
        )
        try:
            done = apply(args.apply, report, provenance, dry_run=args.dry_run)
        except ApplyRefused as error:
            say(str(error))
            return 2
        say(done.diff or "(no change)")
        say(f"{'would write' if args.dry_run else 'wrote'} {done.path}")
    return 0 if rec.workers is not None or rec.indistinguishable else 1


if __name__ == "__main__":
    sys.exit(main())
