"""Medians, bootstrap intervals and stability: deterministic, so pinned exactly."""

from __future__ import annotations

import random
import statistics

import pytest

from loadtests.sizing.stats import Estimate, bootstrap, quantile, relative_spread, stability


def test_quantile_interpolates_between_ranks() -> None:
    assert quantile([1, 2, 3, 4], 0.5) == 2.5
    assert quantile([10, 20, 30], 0.25) == 15
    assert quantile([5], 0.975) == 5
    assert quantile([3, 1, 2], 0) == 1
    with pytest.raises(ValueError, match="no values"):
        quantile([], 0.5)


def test_identical_repetitions_have_a_zero_width_interval() -> None:
    assert bootstrap([300.0] * 5, random.Random(1)) == Estimate(300.0, 300.0, 300.0, 5)


def test_the_interval_holds_the_median_and_is_reproducible() -> None:
    values = [280.0, 300.0, 310.0, 320.0, 400.0]

    first = bootstrap(values, random.Random(7), rounds=500)
    again = bootstrap(values, random.Random(7), rounds=500)

    assert first == again
    assert first.median == 310.0
    assert 280.0 <= first.low <= 310.0 <= first.high <= 400.0
    # The median of five resampled values is one of the values: so are the interval's ends.
    assert {first.low, first.high} <= set(values)


def test_overlap() -> None:
    assert Estimate(100, 90, 110, 5).overlaps(Estimate(115, 108, 120, 5))
    assert not Estimate(100, 90, 110, 5).overlaps(Estimate(130, 120, 140, 5))


def test_stability_counts_resamples_that_keep_the_choice() -> None:
    far_apart = {1: [100.0, 101.0, 102.0], 2: [200.0, 201.0, 202.0]}
    best = lambda medians: max(medians, key=medians.get)  # noqa: E731

    assert stability(far_apart, best, random.Random(3), rounds=200) == (2, 1.0)

    close = {1: [100.0, 150.0, 200.0], 2: [140.0, 150.0, 160.0]}
    choice, share = stability(close, best, random.Random(3), rounds=400)
    assert choice == best({k: statistics.median(v) for k, v in close.items()})
    assert 0.2 < share < 0.9


def test_relative_spread() -> None:
    assert relative_spread([90.0, 100.0, 120.0]) == 0.3
