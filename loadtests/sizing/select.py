"""Pure decisions of the sizing run: which worker count to recommend, why, and the HPA CPU target.

No I/O here: everything takes recorded step data and returns values and sentences.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Step:
    """What one worker count measured at the fixed load."""

    workers: int
    rps: float  # completed requests per second, 429s excluded
    p50_ms: float
    p95_ms: float
    p99_ms: float
    failures: int  # failed requests, 429s excluded
    rate_limited: int = 0  # 429 answers: the limiter, not capacity; a sizing run should have none
    requests: int = 0
    cpu_util: float | None = None  # the server's CPU use as a fraction of its pinned CPUs
    client_cpu_util: float | None = None  # Locust's, of its CPUs: near 100% means client-bound
    stores_cpu: float | None = None  # CPUs used by PostgreSQL (this database's backends) and Redis
    other_cpu: float | None = None  # CPUs used by everything else on the machine: noise


@dataclass(frozen=True)
class Objective:
    p95_ms: float = 200.0
    margin: float = 0.05  # a count within this fraction of the best throughput is good enough
    hpa_headroom: float = 0.8  # scale out at this fraction of the CPU use measured at the objective
    hpa_min: int = 30
    hpa_max: int = 90


@dataclass(frozen=True)
class Recommendation:
    workers: int | None
    reason: str
    capacity_rps: float | None = None  # per pod, at the objective
    cpu_util: float | None = None  # the server's CPU use at that load
    hpa_cpu_target: int | None = None  # percent of the pod's CPU request
    hpa_reason: str = ""


def plural(n: int) -> str:
    return f"{n} worker" if n == 1 else f"{n} workers"


def disqualification(step: Step, objective: Objective) -> str | None:
    """Why a step cannot be recommended, or None when it meets the objective."""
    if step.requests == 0 and step.rps <= 0:
        return "completed no requests"
    if step.failures:
        return f"had {step.failures} failed requests"
    if step.rate_limited:
        return f"was rate-limited {step.rate_limited} times (raise RATE_LIMIT_* for sizing)"
    if step.p95_ms > objective.p95_ms:
        return f"p95 {step.p95_ms:.0f} ms is over the {objective.p95_ms:.0f} ms objective"
    return None


def hpa_target(
    cpu_util: float | None, objective: Objective, server_cpus: float = 1, cpu_request: float = 1
) -> tuple[int | None, str]:
    """The autoscaler's CPU target, in percent of the pod's CPU request (what the HPA divides by).

    `cpu_util` is the fraction of the `server_cpus` the server used at the recommended load.
    """
    if cpu_util is None or cpu_util <= 0:
        return None, "the server's CPU use was not measured, so no autoscaler target is derived"
    of_request = cpu_util * server_cpus / cpu_request
    raw = of_request * 100 * objective.hpa_headroom
    target = round(min(max(raw, objective.hpa_min), objective.hpa_max))
    why = (
        f"at that load the server used {cpu_util * server_cpus:.2f} CPU ({of_request:.0%} of a "
        f"{cpu_request:g} CPU request); scaling out at {of_request:.0%} x "
        f"{objective.hpa_headroom:g} = {raw:.0f}%"
    )
    if target != round(raw):
        why += f", clamped to {target}% (range {objective.hpa_min}-{objective.hpa_max}%),"
    why += " adds pods before latency breaks the objective"
    if raw > objective.hpa_max:
        why += (
            f". The CPU request is too small for the autoscaler to track this load: set "
            f"cpuRequest to about the {cpu_util * server_cpus:.2f} CPU a pod uses at the objective"
        )
    return target, why


def recommend(
    steps: list[Step], objective: Objective, server_cpus: float = 1, cpu_request: float = 1
) -> Recommendation:
    """The smallest worker count within `margin` of the best qualifying throughput.

    A step qualifies when it completed requests with no failures, no 429s and p95 within the
    objective. Ties (and near-ties inside the margin) go to fewer workers: less memory and fewer
    database connections for the same throughput.
    """
    if not steps:
        return Recommendation(None, "no worker count was measured")
    verdicts = {s.workers: disqualification(s, objective) for s in steps}
    qualified = [s for s in steps if verdicts[s.workers] is None]
    if not qualified:
        misses = "; ".join(f"{plural(s.workers)} {verdicts[s.workers]}" for s in steps)
        return Recommendation(
            None,
            f"no worker count meets p95 <= {objective.p95_ms:.0f} ms with zero failures "
            f"({misses}). Lower the load (--users), relax --p95-ms, or give the pod more CPU.",
        )
    best = max(qualified, key=lambda s: (s.rps, -s.workers))
    floor = best.rps * (1 - objective.margin)
    chosen = min((s for s in qualified if s.rps >= floor), key=lambda s: s.workers)
    reason = (
        f"{plural(chosen.workers)}: {chosen.rps:.0f} req/s with p95 {chosen.p95_ms:.0f} ms "
        f"(objective {objective.p95_ms:.0f} ms) and zero failures"
    )
    if chosen is best:
        reason += ", the best throughput measured"
    else:
        reason += (
            f", within {objective.margin:.0%} of the best ({best.rps:.0f} req/s at "
            f"{plural(best.workers)}), so the extra workers are not worth their memory"
        )
    fewer = [s for s in steps if s.workers < chosen.workers]
    if fewer:
        why_not = []
        for s in fewer:
            verdict = verdicts[s.workers] or f"reached only {s.rps:.0f} req/s"
            why_not.append(f"{plural(s.workers)} {verdict}")
        reason += "; fewer would not do: " + "; ".join(why_not)
    target, hpa_reason = hpa_target(chosen.cpu_util, objective, server_cpus, cpu_request)
    return Recommendation(
        chosen.workers, reason + ".", chosen.rps, chosen.cpu_util, target, hpa_reason + "."
    )
