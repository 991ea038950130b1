"""The run's pure helpers: Locust's statistics read back, the progress ETA, the CLI's order."""

from __future__ import annotations

import os

import pytest

from loadtests.sizing.__main__ import order, parse_ranges, parse_slo, parser
from loadtests.sizing.run import Plan, Progress, estimate_duration_s, machine_cpu_s, parse_stats
from loadtests.sizing.select import Objective, OpStats
from loadtests.sizing.stack import load_stack


def row(kind: str, name: str, count: int, failures: int = 0, p95: str = "50", p99: str = "90"):
    return {"Type": kind, "Name": name, "Request Count": str(count),
            "Failure Count": str(failures), "95%": p95, "99%": p99}  # fmt: skip


def test_parse_stats_separates_schedule_probes_setup_and_429s() -> None:
    rows = [
        row("GET", "me", 100, 1),
        row("POST", "429 me", 3, 3),
        row("POST", "login", 2, 0, "N/A", "N/A"),
        row("SCHED", "late", 4),
        row("SCHED", "dropped", 5, 5),
        row("GET", "probe_ready", 6, 1),
        row("POST", "setup_login", 20),
        row("", "Aggregated", 140),
    ]

    ops, late, dropped, probe_failures = parse_stats(rows)

    assert ops == {
        "me": OpStats(103, 1, 50.0, 90.0, rate_limited=3),
        "login": OpStats(2, 0, 0.0, 0.0),
    }
    assert (late, dropped, probe_failures) == (4, 5, 1)


def test_steal_counts_as_busy_and_is_reported_apart() -> None:
    # /proc/stat's first line: user nice system idle iowait irq softirq steal guest guest_nice
    hz = os.sysconf("SC_CLK_TCK")
    line = f"cpu  {7 * hz} {hz} {2 * hz} {50 * hz} {3 * hz} 0 {hz} {4 * hz} 0 0"

    busy, steal = machine_cpu_s(line)

    # Idle and iowait are the only time nothing wanted the CPU; steal is busy, and apart.
    assert (busy, steal) == (15.0, 4.0)


def test_progress_eta_counts_retries_and_overhead() -> None:
    progress = Progress(total_reps=4, reps_done=2, steps_done=16, retries=4)
    progress.step_seconds = [80.0] * 16
    progress.steps_per_rep = [10, 4]  # the run's first repetition ramps: not a guide
    progress.rep_overhead = [30.0, 40.0]
    progress.waits = [10.0, 0.0]

    # 2 left x (4 steps x 1.25 for retries x 80 s + 35 s overhead + 5 s waiting), 2 steps of
    # the current one done
    assert progress.eta_s(8, 80) == 2 * (4 * 1.25 * 80 + 35 + 5) - 2 * 80
    # Before a repetition is measured: the default steps and step time.
    assert Progress(total_reps=3).eta_s(3.5, 80) == 3 * (3.5 * 80 + 30)


def test_the_full_run_is_estimated_before_it_starts() -> None:
    plan = Plan(stack=load_stack("dev"), cpu_limit=1, objective=Objective(), mix={})

    step = 15 + 60 + 2 + 6
    # 9 steps for the run's first repetition, 6 for each other count's first, 5 for the rest.
    steps = 9 + 2 * 6 + 3 * 4 * 5
    assert estimate_duration_s(plan, counts=3, reps=5) == steps * step + 15 * 40


def test_rounds_shuffle_every_count_once_and_reproducibly() -> None:
    rounds = order([1, 2, 3], 3, seed=13)

    assert rounds == order([1, 2, 3], 3, seed=13)
    assert len(rounds) == 9
    for i in range(3):
        chunk = rounds[3 * i : 3 * i + 3]
        assert sorted(w for w, _ in chunk) == [1, 2, 3]
        assert {rep for _, rep in chunk} == {i + 1}
    assert [w for w, _ in rounds] != [1, 2, 3] * 3  # not ascending every round


def test_cli_parsing() -> None:
    assert parse_ranges("1-3,5") == [1, 2, 3, 5]
    with pytest.raises(ValueError, match="not a list of worker counts"):
        parse_ranges("0-2")
    assert parse_slo(["read=80/200"], Objective())["read"] == (80.0, 200.0)
    args = parser().parse_args([])
    assert (args.reps, args.window, args.warmup, args.stack) == (5, 60, 15, "staging")
