"""The sizing run's pure decisions, pinned exactly: verdicts, the search, cost, memory, HPA."""

from __future__ import annotations

import math
from statistics import median

import pytest

from loadtests.sizing.select import (
    MIB,
    Conditions,
    CostModel,
    Hpa,
    Objective,
    OpStats,
    Repetition,
    Search,
    StepResult,
    bracket,
    hpa_advice,
    memory_advice,
    next_rate,
    plan_search,
    recommend,
    summarise,
    validity,
    verdict,
)

OBJECTIVE = Objective()
MIX = {"me": 0.5, "create_item": 0.5}


def step(
    *,
    me: OpStats | None = None,
    create: OpStats | None = None,
    late: int = 0,
    dropped: int = 0,
    client_cpu: tuple[float, ...] = (0.3,),
    probe_failures: int = 0,
) -> StepResult:
    ops = {
        "me": me or OpStats(5000, 0, 40.0, 90.0),
        "create_item": create or OpStats(5000, 0, 60.0, 120.0),
    }
    return StepResult(
        workers=2,
        offered_rps=100,
        window_s=100,
        ops=ops,
        scheduled=10_000 + dropped,
        late=late,
        dropped=dropped,
        client_cpu=client_cpu,
        server_cpu_s=50.0,
        mix=MIX,
        probe_failures=probe_failures,
    )


def test_a_step_within_every_objective_passes() -> None:
    good = step()

    assert verdict(good, OBJECTIVE).status == "pass"
    assert good.class_latency() == {"read": (40.0, 90.0), "write": (60.0, 120.0)}
    assert good.cpu_per_request_ms == 5.0
    assert good.server_cpus_used == 0.5


def test_latency_errors_429s_drops_and_probes_fail_a_step() -> None:
    slow = step(me=OpStats(5000, 0, 120.0, 300.0))
    assert verdict(slow, OBJECTIVE).reasons == (
        "read p95 120 ms is over 100 ms",
        "read p99 300 ms is over 250 ms",
    )
    # The error budget is not zero: 5 of 10,000 is within 0.1 %, 11 is not.
    assert verdict(step(me=OpStats(5000, 5, 40.0, 90.0)), OBJECTIVE).status == "pass"
    assert verdict(step(me=OpStats(5000, 11, 40.0, 90.0)), OBJECTIVE).reasons == (
        "error rate 0.11% is over the 0.10% budget",
    )
    limited = step(me=OpStats(5000, 0, 40.0, 90.0, rate_limited=1))
    assert verdict(limited, OBJECTIVE).reasons == ("1 requests were rate-limited (429)",)
    dropped = verdict(step(dropped=20), OBJECTIVE)
    assert dropped.status == "fail"
    assert dropped.reasons[0].startswith("20 of 10020 starts found no free client slot")
    assert verdict(step(probe_failures=1), OBJECTIVE).reasons == ("1 health probes failed",)


def test_late_starts_and_a_busy_client_make_a_step_invalid() -> None:
    late = verdict(step(late=11), OBJECTIVE)
    assert late.status == "invalid"
    assert late.reasons == (
        "11 of 10000 starts were late (over 0.1%): the client did not keep the schedule",
    )
    assert verdict(step(late=10), OBJECTIVE).status == "pass"
    busy = verdict(step(client_cpu=(0.4, 0.75)), OBJECTIVE)
    assert busy.status == "invalid"
    assert busy.reasons == ("a Locust process used 75% CPU (over 70%): add --processes",)
    # An overloaded server also makes the client late: that step failed, it is not invalid.
    overloaded = verdict(step(late=500, me=OpStats(5000, 0, 900.0, 2000.0)), OBJECTIVE)
    assert overloaded.status == "fail"


def test_a_skewed_mix_makes_a_passing_step_invalid() -> None:
    skewed = step(me=OpStats(6000, 0, 40.0, 90.0), create=OpStats(4000, 0, 60.0, 120.0))

    result = verdict(skewed, OBJECTIVE)
    assert result.status == "invalid"
    assert result.reasons == (
        "the realised mix is off by more than 2 points: {'create_item': -0.1, 'me': 0.1}",
    )


def test_the_search_ramps_then_bisects_to_three_percent() -> None:
    search = Search(start=100)
    trials: list[tuple[float, bool]] = []
    while (rate := next_rate(search, trials)) is not None:
        trials.append((rate, rate <= 150))  # a server whose λ* is 150 req/s

    assert trials == [
        (100, True),
        (200.0, False),
        (141.4, True),
        (168.2, False),
        (154.2, False),
        (147.7, True),
        (150.9, False),
    ]
    low, high = bracket(trials)
    assert (low, high) == (147.7, 150.9)
    assert low is not None
    assert high is not None
    assert (high - low) / low <= 0.03


def test_the_search_walks_down_when_the_start_fails_and_ignores_noisy_passes() -> None:
    search = Search(start=100)
    assert next_rate(search, [(100, False)]) == 50.0
    assert next_rate(search, [(100, False), (50, True)]) == 70.7
    # A pass above the lowest fail is noise: it does not move the bracket.
    assert bracket([(100, True), (80, False), (120, True), (60, True)]) == (60, 80)
    assert next_rate(Search(start=10, max_rps=20), [(10, True), (20, True)]) is None


def search_until_done(search: Search, lambda_star: float) -> list[tuple[float, bool]]:
    trials: list[tuple[float, bool]] = []
    while (rate := next_rate(search, trials)) is not None:
        trials.append((rate, rate <= lambda_star))
    return trials


def test_an_expanding_search_squares_its_factor_with_each_move() -> None:
    search = Search(start=100, growth=1.03, expand=2.0)

    up = search_until_done(search, lambda_star=150)
    assert [rate for rate, _ in up[:5]] == [100, 103.0, 109.3, 123.0, 155.8]
    down = search_until_done(search, lambda_star=60)
    assert [rate for rate, _ in down[:5]] == [100, 97.1, 91.5, 81.3, 64.2]
    for trials in (up, down):
        low, high = bracket(trials)
        assert low is not None
        assert high is not None
        assert (high - low) / low <= 0.03


def test_a_later_repetition_brackets_its_counts_median_in_two_steps() -> None:
    search = plan_search(2, {1: [300.0], 2: [200.0, 210.0]}, 50, 0.03, 20_000)

    assert search.start < 205 < search.start * search.growth
    for lambda_star in (205.0, 203.0, 207.5):
        trials = search_until_done(search, lambda_star)
        assert len(trials) == 2
        assert bracket(trials)[0] is not None
    assert len(search_until_done(search, 190)) == 4  # further off: still a few steps


def test_a_counts_first_repetition_starts_at_the_nearest_measured_count() -> None:
    found: dict[int, list[float]] = {1: [300.0, 320.0], 2: [], 5: [500.0]}

    assert plan_search(2, found, 50, 0.03, 20_000) == Search(
        310.0, 1.1, 0.03, expand=2.0, max_rps=20_000
    )
    assert plan_search(3, found, 50, 0.03, 20_000).start == 310.0  # a tie: the lower count
    assert plan_search(4, found, 50, 0.03, 20_000).start == 500.0
    assert plan_search(1, {}, 50, 0.03, 400) == Search(50, 2.0, 0.03, max_rps=400)


def test_planned_searches_cost_fewer_steps_than_ramping_from_the_start() -> None:
    """Three counts x five repetitions against λ* that differ by count and drift by a few
    percent between repetitions: the steps `plan_search` takes against the old rule (each
    count's first repetition from --start-rps, later ones from 0.95 x median by 1.15)."""
    truth = {1: 480.0, 2: 520.0, 3: 505.0}
    drift = [1.0, 1.02, 0.98, 1.04, 0.97]
    found: dict[int, list[float]] = {w: [] for w in truth}
    planned = old = 0
    for rep in range(5):
        for workers, star in truth.items():
            star *= drift[rep]
            trials = search_until_done(plan_search(workers, found, 50, 0.03, 20_000), star)
            planned += len(trials)
            earlier = found[workers]
            start = (round(0.95 * median(earlier), 1), 1.15) if earlier else (50, 2.0)
            old += len(search_until_done(Search(start[0], start[1]), star))
            found[workers].append(bracket(trials)[0] or 0)

    assert (planned, old) == (54, 90)


def test_cost_counts_cpu_memory_and_connections_per_pod() -> None:
    cost = CostModel(cpu_request=1)

    assert cost.pod(2, 320) == 1 + 320 / 1024 / 8 + 20 * 10 / 1024 / 8
    assert cost.at_peak(2, 320, capacity=300, peak_rps=1000) == 4 * cost.pod(2, 320)
    assert CostModel(1, min_replicas=3).at_peak(2, 320, 1000, 100) == 3 * cost.pod(2, 320)
    assert cost.at_peak(2, 320, 0, 100) == math.inf


def test_memory_budget_from_the_largest_peaks_with_headroom() -> None:
    reps = [
        Repetition(1, 100, 110, True, master_peak_bytes=40 * MIB, worker_peak_bytes=90 * MIB),
        Repetition(2, 180, 190, True, master_peak_bytes=50 * MIB, worker_peak_bytes=100 * MIB,
                   peak_memory_bytes=260 * MIB),
    ]  # fmt: skip

    advice = memory_advice(reps)

    assert advice is not None
    assert (advice.base_mi, advice.per_worker_mi, advice.pod_peak_mi) == (64, 128, 260.0)
    assert advice.limit_mi(3) == 64 + 3 * 128
    assert memory_advice([Repetition(1, 100, 110, True)]) is None


def test_hpa_target_from_use_tolerance_and_reaction_time() -> None:
    advice = hpa_advice(0.9, 1.0, 5.0, Hpa())

    # reaction 15 sync + 15 metrics + 10 scheduling + 5 ready = 45 s; growth 0.5/min x 45 s
    # = 0.375; 100 x 0.9 / (1.1 x 1.375) = 59.5
    assert advice.target == 60
    assert advice.proposed_request_m is None
    assert advice.terms["reaction_s"] == 45.0
    assert advice.terms["growth_during_reaction"] == 0.375
    assert advice.terms["raw_target_percent"] == 59.5
    assert advice.explanation.startswith("target = 0.90 (use 0.90 CPU / request 1) / ((1 + 0.1")


def test_no_hpa_target_when_the_request_is_far_from_the_use() -> None:
    advice = hpa_advice(0.9, 0.1, 5.0, Hpa())

    assert advice.target is None
    assert advice.proposed_request_m == 900
    assert "Set cpuRequest to about 900m" in advice.explanation
    assert hpa_advice(0.2, 1.0, 5.0, Hpa()).proposed_request_m == 200


def _reps(workers: int, lambdas: list[float]) -> list[Repetition]:
    return [
        Repetition(workers, lam, lam * 1.03, True, cpus_at_star=0.9,
                   master_peak_bytes=50 * MIB, worker_peak_bytes=100 * MIB)
        for lam in lambdas
    ]  # fmt: skip


def test_recommend_the_cheapest_count_at_the_peak() -> None:
    reps = _reps(1, [300, 310, 305]) + _reps(2, [500, 510, 505])
    cost, memory = CostModel(cpu_request=1), memory_advice(reps)
    summaries = summarise(reps, cost, memory, peak_rps=1000)

    rec = recommend(reps, summaries, cost, memory, peak_rps=1000)

    assert rec.workers == 2
    assert rec.indistinguishable == ()
    assert rec.stability == 1.0
    assert rec.capacity_rps == 505
    assert rec.cost == 2 * cost.pod(2, 64 + 2 * 128)
    assert rec.reason.startswith("2 workers: λ* 505 req/s per pod (95 % interval 500-510")


def test_counts_whose_cost_intervals_overlap_cannot_be_told_apart() -> None:
    reps = _reps(1, [480, 500, 520]) + _reps(2, [490, 510, 530])
    cost, memory = CostModel(cpu_request=1), memory_advice(reps)
    summaries = summarise(reps, cost, memory, peak_rps=1000)

    rec = recommend(reps, summaries, cost, memory, peak_rps=1000)

    assert rec.workers is None
    assert sorted(rec.indistinguishable) == [1, 2]
    assert "cannot be told apart" in rec.reason


def test_nothing_qualifies_without_enough_valid_repetitions() -> None:
    reps = [*_reps(1, [300, 310]), Repetition(1, None, None, False, ("failed",))]
    cost, memory = CostModel(cpu_request=1), memory_advice(reps)

    rec = recommend(reps, summarise(reps, cost, memory, 1000), cost, memory, 1000)

    assert rec.workers is None
    assert rec.reason == (
        "no worker count qualified (each needs 3 valid repetitions with a λ*; "
        "1 worker: 2 valid repetition(s))"
    )


@pytest.mark.parametrize(
    ("conditions", "reason"),
    [
        (Conditions(window_s=30), "measured windows of 30 s are shorter than 60 s"),
        (
            Conditions(window_s=60, done=4, planned=15),
            "incomplete: 4 of 15 repetitions have run",
        ),
        (Conditions(window_s=60, reps=2), "2 repetition(s) per count, fewer than 3"),
        (
            Conditions(window_s=60, pod_faithful=False),
            "the server ran under taskset, not the pod's CPU quota and memory limit",
        ),
        (
            Conditions(window_s=60, stack_pod=False),
            "--cpu-limit overrode the stack's CPU limit: not the stack's pod",
        ),
    ],
)
def test_validity_blocks_apply_for_each_shortcut(conditions: Conditions, reason: str) -> None:
    reps = _reps(1, [300, 310, 305])
    cost, memory = CostModel(cpu_request=1), memory_advice(reps)
    summaries = summarise(reps, cost, memory, 1000)
    rec = recommend(reps, summaries, cost, memory, 1000)

    verdict_ = validity(conditions, summaries, rec, 0, 0.1)

    assert verdict_["reasons"] == [reason]
    assert verdict_["valid_for_apply"] is False
    assert validity(Conditions(window_s=60), summaries, rec, 0, 0.1)["valid_for_apply"] is True


def test_noise_and_instability_block_apply() -> None:
    reps = _reps(1, [200, 300, 400])
    cost, memory = CostModel(cpu_request=1), memory_advice(reps)
    summaries = summarise(reps, cost, memory, 1000)
    rec = recommend(reps, summaries, cost, memory, 1000)

    reasons = validity(Conditions(window_s=60), summaries, rec, 1, 0.9)["reasons"]

    assert reasons[0].startswith("noisy: λ* intervals wider than ±10% (1: ±")
    assert reasons[1] == "other work used 0.90 CPUs (median) during the windows"
