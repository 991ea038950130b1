"""The sizing run's pure helpers: ranges, CPU split, Locust stats parsing, /proc CPU time."""

from __future__ import annotations

import csv
import io
import os
import subprocess
import sys

import pytest

from loadtests.sizing.run import (
    CLOCK_TICKS,
    Plan,
    cpu_seconds,
    cpu_use,
    parse_ranges,
    split_cpus,
    step_from_stats,
)

# The shape of a Locust 2.47 *_stats.csv, trimmed to the rows and columns that matter.
STATS = """\
Type,Name,Request Count,Failure Count,Median Response Time,Requests/s,50%,95%,99%
GET,/api/v1/items,4000,2,40,200.0,40,110,180
POST,429 /api/v1/auth/token,30,30,3,1.5,3,5,8
GET,/health/live,1970,0,12,98.5,12,60,90
,Aggregated,6000,32,35,300.0,35,100,170
"""


def rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def test_step_from_stats_counts_429s_apart() -> None:
    step = step_from_stats(rows(STATS), workers=2)

    assert step.workers == 2
    assert step.rps == 298.5
    assert (step.p50_ms, step.p95_ms, step.p99_ms) == (35, 100, 170)
    assert (step.failures, step.rate_limited, step.requests) == (2, 30, 5970)
    assert step.cpu_util is None  # measured apart, from /proc


def test_step_from_stats_with_no_requests() -> None:
    empty = ",Aggregated,0,0,0,0.0,N/A,N/A,N/A\n"
    step = step_from_stats(rows(STATS.splitlines()[0] + "\n" + empty), workers=1)

    assert (step.rps, step.p95_ms, step.requests) == (0, 0, 0)


def test_step_from_stats_needs_the_aggregated_row() -> None:
    with pytest.raises(ValueError, match="Aggregated"):
        step_from_stats(rows(STATS.splitlines()[0] + "\n"), workers=1)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("1-5", [1, 2, 3, 4, 5]), ("1,2,4", [1, 2, 4]), ("3", [3]), ("4-5, 1", [1, 4, 5])],
)
def test_parse_ranges(text: str, expected: list[int]) -> None:
    assert parse_ranges(text) == expected


def test_parse_ranges_refuses_nothing() -> None:
    with pytest.raises(ValueError, match="empty"):
        parse_ranges(" , ")


def test_split_cpus_gives_the_server_the_pod_limit_and_locust_the_rest() -> None:
    assert split_cpus([0, 1], 1) == ([0], [1], [])
    assert split_cpus([0, 1, 2, 3], 2) == ([0, 1], [2, 3], [])


def test_split_cpus_falls_back_when_the_limit_leaves_no_cpu_for_locust() -> None:
    server, client, notes = split_cpus([0, 1], 2)

    assert (server, client) == ([0], [1])
    assert "needs 2 CPU(s) but only 2 are usable" in notes[0]


def test_split_cpus_rounds_a_fractional_limit_up_and_says_so() -> None:
    server, client, notes = split_cpus([0, 1], 0.5)

    assert (server, client) == ([0], [1])
    assert "not whole" in notes[0]


def test_split_cpus_on_one_cpu_shares_it_and_says_so() -> None:
    server, client, notes = split_cpus([0], 1)

    assert server == client == [0]
    assert any("steals" in note for note in notes)


def test_split_cpus_honours_an_explicit_server_set() -> None:
    assert split_cpus([0, 1, 2], 1, explicit=[1, 2]) == ([1, 2], [0], [])
    with pytest.raises(ValueError, match="usable"):
        split_cpus([0, 1], 1, explicit=[7])


def test_cpu_seconds_reads_this_process_and_the_machine() -> None:
    before = cpu_seconds(os.getpid(), os.getppid(), "no such database")
    after = before
    while after["server"] - before["server"] < 0.3:  # burn CPU until this process shows it
        sum(i * i for i in range(200_000))
        after = cpu_seconds(os.getpid(), os.getppid(), "no such database")

    burned = after["server"] - before["server"]
    assert before["server"] > 0
    # The kernel samples the machine's and the process's counters separately, tick by tick,
    # so they agree only to a few ticks; a machine counter that missed the burn is far off.
    assert after["machine"] - before["machine"] >= burned - 5 / CLOCK_TICKS
    assert after["client"] >= after["server"]  # the parent's tree holds this process


def test_cpu_use_splits_the_window() -> None:
    before = {"server": 10.0, "client": 5.0, "stores": 1.0, "machine": 100.0}
    after = {"server": 19.5, "client": 7.0, "stores": 4.0, "machine": 118.0}

    used = cpu_use(before, after, wall=10, plan=Plan(server_cpus=(0,), client_cpus=(1, 2)))

    assert used == {"cpu_util": 0.95, "client_cpu_util": 0.1, "stores_cpu": 0.3, "other_cpu": 0.35}


def test_cpu_seconds_keeps_the_cpu_of_reaped_children() -> None:
    # A Gunicorn worker recycled after max_requests must not take its CPU time with it.
    before = cpu_seconds(os.getpid(), 0, "-")["server"]
    burn = "sum(i * i for i in range(3_000_000))"
    subprocess.run([sys.executable, "-c", burn], check=True, timeout=60)

    assert cpu_seconds(os.getpid(), 0, "-")["server"] - before >= 0.05
