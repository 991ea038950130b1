"""Statistics of repeated measurements: medians, bootstrap intervals, overlap and stability.

Pure and deterministic (every random draw comes from a seeded `random.Random`), so the tests pin
exact values. The standard library only: a few medians of a handful of repetitions need no numpy.
"""

from __future__ import annotations

import random
import statistics
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

K = TypeVar("K", bound=Hashable)
R = TypeVar("R")
BOOTSTRAP_ROUNDS = 2000
CONFIDENCE = 0.95


@dataclass(frozen=True)
class Estimate:
    """A median and its bootstrap interval over `n` repetitions."""

    median: float
    low: float
    high: float
    n: int

    def overlaps(self, other: Estimate) -> bool:
        return self.low <= other.high and other.low <= self.high

    def as_dict(self) -> dict[str, float | int]:
        return {"median": self.median, "low": self.low, "high": self.high, "n": self.n}


def quantile(values: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default, "type 7")."""
    if not values:
        raise ValueError("no values")
    if not 0 <= q <= 1:
        raise ValueError(f"quantile {q} is not in [0, 1]")
    ordered = sorted(values)
    position = q * (len(ordered) - 1)
    below = int(position)
    above = min(below + 1, len(ordered) - 1)
    return ordered[below] + (ordered[above] - ordered[below]) * (position - below)


def resample(values: Sequence[float], rng: random.Random) -> list[float]:
    return [values[rng.randrange(len(values))] for _ in values]


def bootstrap(
    values: Sequence[float],
    rng: random.Random,
    rounds: int = BOOTSTRAP_ROUNDS,
    confidence: float = CONFIDENCE,
) -> Estimate:
    """The median with a percentile-bootstrap interval of the median."""
    if not values:
        raise ValueError("no values")
    medians = [statistics.median(resample(values, rng)) for _ in range(rounds)]
    tail = (1 - confidence) / 2
    return Estimate(
        median=statistics.median(values),
        low=quantile(medians, tail),
        high=quantile(medians, 1 - tail),
        n=len(values),
    )


def stability(
    samples: Mapping[K, Sequence[float]],
    choose: Callable[[Mapping[K, float]], R],
    rng: random.Random,
    rounds: int = BOOTSTRAP_ROUNDS,
) -> tuple[R, float]:
    """The choice made from the medians, and how often the same choice is made from the medians
    of resampled repetitions (each key resampled on its own): 1.0 means every resample agrees."""
    point = choose({k: statistics.median(v) for k, v in samples.items()})
    same = sum(
        choose({k: statistics.median(resample(v, rng)) for k, v in samples.items()}) == point
        for _ in range(rounds)
    )
    return point, same / rounds if rounds else 1.0


def relative_spread(values: Sequence[float]) -> float:
    """(max - min) / median: how far identical repetitions disagree."""
    middle = statistics.median(values)
    return (max(values) - min(values)) / middle if middle else float("inf")
