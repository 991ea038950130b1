"""The recommendation on recorded step data: knee, SLO miss, failures, ties, HPA target."""

from __future__ import annotations

import pytest

from loadtests.sizing.select import Objective, Step, disqualification, hpa_target, recommend

OBJECTIVE = Objective(p95_ms=200, margin=0.05, hpa_headroom=0.8)


def step(workers: int, rps: float, p95: float, failures: int = 0, **extra: object) -> Step:
    fields: dict = {"requests": int(rps * 20), "cpu_util": 0.97, **extra}
    return Step(workers, rps, p95 / 2, p95, p95 * 1.5, failures, **fields)


# A sweep recorded on one pinned CPU: throughput rises to a knee at 3 workers, then falls off.
KNEE = [
    step(1, 310, 180),
    step(2, 395, 120),
    step(3, 405, 115),
    step(4, 400, 130),
    step(5, 380, 160),
]


def test_knee_picks_the_fewest_workers_within_the_margin_of_the_best() -> None:
    rec = recommend(KNEE, OBJECTIVE)

    assert rec.workers == 2  # 395 >= 405 x 0.95; 1 worker (310) is below the margin
    assert rec.capacity_rps == 395
    assert "within 5% of the best (405 req/s at 3 workers)" in rec.reason
    assert "1 worker reached only 310 req/s" in rec.reason


def test_zero_margin_takes_the_best_throughput() -> None:
    rec = recommend(KNEE, Objective(p95_ms=200, margin=0))

    assert rec.workers == 3
    assert "the best throughput measured" in rec.reason


def test_no_count_meets_the_objective() -> None:
    rec = recommend(KNEE, Objective(p95_ms=100))

    assert rec.workers is None
    assert rec.capacity_rps is None
    assert rec.hpa_cpu_target is None
    assert rec.reason.startswith("no worker count meets p95 <= 100 ms")
    for workers, p95 in [(1, 180), (2, 120), (3, 115), (4, 130), (5, 160)]:
        assert f"{workers} worker" in rec.reason
        assert f"p95 {p95} ms is over the 100 ms objective" in rec.reason


def test_failures_disqualify_even_the_fastest_count() -> None:
    steps = [step(1, 410, 180, failures=3), step(2, 395, 120), step(3, 420, 115, failures=1)]

    rec = recommend(steps, OBJECTIVE)

    assert rec.workers == 2
    assert rec.capacity_rps == 395
    assert "the best throughput measured" in rec.reason  # 420 and 410 do not count
    assert "1 worker had 3 failed requests" in rec.reason


def test_rate_limited_steps_do_not_count_as_capacity() -> None:
    steps = [step(1, 390, 150, rate_limited=12), step(2, 400, 120)]

    rec = recommend(steps, OBJECTIVE)

    assert rec.workers == 2
    assert "1 worker was rate-limited 12 times" in rec.reason


def test_ties_go_to_fewer_workers() -> None:
    steps = [step(3, 400, 100), step(2, 400, 100), step(4, 400, 90)]

    assert recommend(steps, Objective(p95_ms=200, margin=0)).workers == 2


def test_a_step_that_completed_nothing_is_disqualified() -> None:
    dead = Step(1, 0, 0, 0, 0, failures=0)

    assert disqualification(dead, OBJECTIVE) == "completed no requests"
    assert recommend([dead], OBJECTIVE).workers is None
    assert recommend([], OBJECTIVE).reason == "no worker count was measured"


@pytest.mark.parametrize(
    ("cpu_util", "server_cpus", "cpu_request", "expected"),
    [
        (0.97, 1, 1, 78),  # 97% x 0.8
        (0.5, 1, 1, 40),
        (0.2, 1, 1, 30),  # clamped up: a target that low would scale out on noise
        (1.0, 1, 0.5, 90),  # 200% of a half-CPU request x 0.8 = 160, clamped down
        (0.9, 2, 2, 72),
    ],
)
def test_hpa_target(cpu_util: float, server_cpus: float, cpu_request: float, expected: int) -> None:
    target, why = hpa_target(cpu_util, OBJECTIVE, server_cpus, cpu_request)

    assert target == expected
    assert "adds pods before latency breaks the objective" in why
    assert ("request is too small" in why) == (cpu_request < cpu_util * server_cpus * 0.9)


def test_hpa_target_without_a_cpu_measurement() -> None:
    target, why = hpa_target(None, OBJECTIVE)

    assert target is None
    assert "not measured" in why


def test_recommendation_carries_the_hpa_target_of_the_chosen_step() -> None:
    steps = [step(1, 300, 100, cpu_util=0.6), step(2, 500, 100, cpu_util=0.95)]

    rec = recommend(steps, OBJECTIVE)

    assert (rec.workers, rec.cpu_util, rec.hpa_cpu_target) == (2, 0.95, 76)
    assert "0.95 CPU (95% of a 1 CPU request)" in rec.hpa_reason
