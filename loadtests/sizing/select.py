"""Pure decisions of the sizing run: a step's verdict, the arrival-rate search, the choice of
worker count at a peak rate, the memory limit and the HPA CPU target.

No I/O: everything takes recorded data and returns values and the sentences that explain them.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from statistics import median
from typing import Any

from loadtests.sizing.mix import CLASSES, mix_deviations
from loadtests.sizing.stats import Estimate, bootstrap, stability

MIB = 1024 * 1024


def plural(n: int) -> str:
    return f"{n} worker" if n == 1 else f"{n} workers"


@dataclass(frozen=True)
class Objective:
    """What a step must meet. Latency objectives are per endpoint class: (p95, p99) in ms."""

    latency_ms: Mapping[str, tuple[float, float]] = field(
        default_factory=lambda: {
            "read": (100.0, 250.0),
            "write": (150.0, 400.0),
            "login": (800.0, 1500.0),
        }
    )
    error_budget: float = 0.001  # failed (non-429) requests / requests
    max_late: float = 0.001  # starts later than the schedule allows / scheduled: else invalid
    max_dropped: float = 0.001  # starts with no free client slot / scheduled: over capacity
    max_client_cpu: float = 0.70  # a Locust process busier than this cannot keep a schedule
    precision: float = 0.03  # the search stops when (fail - pass) / pass <= this


@dataclass(frozen=True)
class OpStats:
    requests: int
    failures: int  # non-429 failures, validation failures included
    p95_ms: float
    p99_ms: float
    rate_limited: int = 0


@dataclass(frozen=True)
class StepResult:
    """One open-loop step: an offered arrival rate held for a measured window."""

    workers: int
    offered_rps: float
    window_s: float
    ops: Mapping[str, OpStats]
    scheduled: int  # starts the schedule asked for in the window
    late: int
    dropped: int
    client_cpu: Sequence[float] = ()  # per Locust process, fraction of one CPU
    server_cpu_s: float = 0.0  # CPU seconds the pod used in the window
    throttled_periods: int = 0
    periods: int = 0
    throttled_s: float = 0.0
    other_cpu: float = 0.0  # CPUs busy with work that is neither the pod nor Locust nor stores
    steal_cpu: float = 0.0  # of other_cpu, CPUs the hypervisor gave to someone else (steal)
    mix: Mapping[str, float] = field(default_factory=dict)  # the intended fractions
    probe_failures: int = 0  # liveness/readiness probes that failed: the pod would be pulled

    @property
    def requests(self) -> int:
        return sum(s.requests for s in self.ops.values())

    @property
    def failures(self) -> int:
        return sum(s.failures for s in self.ops.values())

    @property
    def rate_limited(self) -> int:
        return sum(s.rate_limited for s in self.ops.values())

    @property
    def achieved_rps(self) -> float:
        return self.requests / self.window_s if self.window_s else 0.0

    @property
    def cpu_per_request_ms(self) -> float | None:
        return 1000 * self.server_cpu_s / self.requests if self.requests else None

    @property
    def server_cpus_used(self) -> float:
        return self.server_cpu_s / self.window_s if self.window_s else 0.0

    def class_latency(self) -> dict[str, tuple[float, float]]:
        """Per class, the worst operation's (p95, p99): an upper bound of the class's own
        percentiles (a mixture's quantile never exceeds its components' largest)."""
        out: dict[str, tuple[float, float]] = {}
        for op, s in self.ops.items():
            if not s.requests:
                continue
            cls = CLASSES.get(op, op)
            p95, p99 = out.get(cls, (0.0, 0.0))
            out[cls] = (max(p95, s.p95_ms), max(p99, s.p99_ms))
        return out


@dataclass(frozen=True)
class Verdict:
    status: str  # "pass", "fail" (over capacity) or "invalid" (the measurement cannot be used)
    reasons: tuple[str, ...] = ()


def verdict(step: StepResult, objective: Objective) -> Verdict:
    """ "fail" when the server missed the objective; "invalid" when the client may be to blame:
    a busy Locust process always, late starts or a skewed mix when the step would have passed
    (under overload the client falls behind and retries logins because the server did)."""
    if step.requests == 0 or step.scheduled == 0:
        return Verdict("invalid", ("the step completed no requests",))
    client, suspect, fail = [], [], []
    busy = [c for c in step.client_cpu if c > objective.max_client_cpu]
    if busy:
        client.append(
            f"a Locust process used {max(busy):.0%} CPU (over {objective.max_client_cpu:.0%}): "
            "add --processes"
        )
    if step.late / step.scheduled > objective.max_late:
        suspect.append(
            f"{step.late} of {step.scheduled} starts were late (over {objective.max_late:.1%}): "
            "the client did not keep the schedule"
        )
    counts = {op: s.requests for op, s in step.ops.items()}
    if step.mix and (off := mix_deviations(step.mix, counts)):
        suspect.append(f"the realised mix is off by more than 2 points: {off}")
    if step.dropped / step.scheduled > objective.max_dropped:
        fail.append(
            f"{step.dropped} of {step.scheduled} starts found no free client slot (over "
            f"{objective.max_dropped:.1%}): requests piled up"
        )
    if step.probe_failures:
        fail.append(f"{step.probe_failures} health probes failed")
    if step.rate_limited:
        fail.append(f"{step.rate_limited} requests were rate-limited (429)")
    errors = step.failures / step.requests
    if errors > objective.error_budget:
        fail.append(f"error rate {errors:.2%} is over the {objective.error_budget:.2%} budget")
    for cls, (p95, p99) in sorted(step.class_latency().items()):
        want95, want99 = objective.latency_ms.get(cls, (math.inf, math.inf))
        if p95 > want95:
            fail.append(f"{cls} p95 {p95:.0f} ms is over {want95:.0f} ms")
        if p99 > want99:
            fail.append(f"{cls} p99 {p99:.0f} ms is over {want99:.0f} ms")
    if client or (suspect and not fail):
        return Verdict("invalid", tuple(client + suspect + fail))
    return Verdict("fail", tuple(fail + suspect)) if fail else Verdict("pass")


@dataclass(frozen=True)
class Search:
    """Ramp from `start` (multiply by `growth` while steps pass, divide while they fail), then
    bisect geometrically between the highest pass and the lowest fail until they are within
    `precision` of each other.

    With `expand` > 1 each further move in the same direction raises the factor to that power
    (2: growth, growth², growth⁴, ...): a start within `precision` of λ* brackets it in two
    steps, and a start far off still reaches it in a few."""

    start: float
    growth: float = 2.0
    precision: float = 0.03
    expand: float = 1.0
    min_rps: float = 1.0
    max_rps: float = 100_000.0


def bracket(trials: Sequence[tuple[float, bool]]) -> tuple[float | None, float | None]:
    """(highest pass below the lowest fail, lowest fail); a pass above a fail is noise, ignored."""
    fails = [rate for rate, ok in trials if not ok]
    high = min(fails) if fails else None
    passes = [rate for rate, ok in trials if ok and (high is None or rate < high)]
    return (max(passes) if passes else None), high


def next_rate(search: Search, trials: Sequence[tuple[float, bool]]) -> float | None:
    """The next arrival rate to offer, or None when the search is done (see `bracket`)."""
    if not trials:
        return search.start
    low, high = bracket(trials)
    factor = search.growth ** (search.expand ** (len(trials) - 1))
    if high is None:
        assert low is not None
        nxt = low * factor
        return None if low >= search.max_rps else round(min(nxt, search.max_rps), 1)
    if low is None:
        nxt = high / factor
        return None if high <= search.min_rps else round(max(nxt, search.min_rps), 1)
    if (high - low) / low <= search.precision:
        return None
    nxt = round(math.sqrt(low * high), 1)
    return None if nxt in (low, high) else nxt


def plan_search(
    workers: int,
    found: Mapping[int, Sequence[float]],
    first_rps: float,
    precision: float,
    max_rps: float,
) -> Search:
    """Where a repetition's search starts, from the λ* found so far (per worker count).

    - Later repetitions of a count start just below its median λ*, stepping by less than
      `precision`: when λ* is where it was, a pass and then a fail bracket it in two steps.
    - A count's first repetition starts at the nearest measured count's median (a pod's CPU
      limit, not its worker count, sets most of its capacity), ramping by 10 %.
    - The run's first repetition ramps by doubling from `first_rps`.
    Every start expands its steps when λ* is elsewhere (`Search.expand`)."""
    own = found.get(workers)
    if own:
        step = 1 + precision * 0.9  # below `precision` after rounding to 0.1 req/s
        start = median(own) / math.sqrt(step)
        return Search(round(start, 1), step, precision, expand=2.0, max_rps=max_rps)
    measured = sorted((abs(w - workers), w) for w, values in found.items() if values)
    if measured:
        nearest = measured[0][1]
        return Search(round(median(found[nearest]), 1), 1.1, precision, expand=2.0, max_rps=max_rps)
    return Search(first_rps, 2.0, precision, max_rps=max_rps)


@dataclass(frozen=True)
class Repetition:
    """One fresh server for one worker count: its search, and the figures at its λ*."""

    workers: int
    lambda_star: float | None  # highest passing arrival rate; None when none passed or invalid
    high: float | None  # the lowest failing rate (None: the ceiling was never found)
    valid: bool
    notes: tuple[str, ...] = ()
    p95_ms: Mapping[str, float] = field(default_factory=dict)  # per class, at λ*
    p99_ms: Mapping[str, float] = field(default_factory=dict)
    cpu_per_request_ms: float | None = None
    cpus_at_star: float | None = None  # CPUs the pod used at λ*
    peak_memory_bytes: int | None = None  # the pod's (cgroup) peak over the repetition
    master_peak_bytes: int | None = None
    worker_peak_bytes: int | None = None  # the largest worker's peak RSS
    start_to_ready_s: float | None = None
    throttled_fraction: float | None = None  # of CFS periods at λ*


@dataclass(frozen=True)
class CostModel:
    """What a pod costs, in CPU-equivalents: its CPU request, its memory and the database
    connections it may open (each costs the database server memory)."""

    cpu_request: float
    gib_per_cpu: float = 8.0  # cloud list prices put 1 vCPU at about the price of 8 GiB
    connection_mib: float = 10.0  # a PostgreSQL backend's memory
    connections_per_worker: int = 10  # dbPoolSize + dbMaxOverflow
    min_replicas: int = 1

    def pod(self, workers: int, memory_mi: float) -> float:
        connections = workers * self.connections_per_worker
        return (
            self.cpu_request
            + memory_mi / 1024 / self.gib_per_cpu
            + connections * self.connection_mib / 1024 / self.gib_per_cpu
        )

    def at_peak(self, workers: int, memory_mi: float, capacity: float, peak_rps: float) -> float:
        pods = max(self.min_replicas, math.ceil(peak_rps / capacity)) if capacity > 0 else math.inf
        return pods * self.pod(workers, memory_mi)


@dataclass(frozen=True)
class MemoryAdvice:
    base_mi: int  # memoryBaseMi: the Gunicorn master
    per_worker_mi: int  # memoryPerWorkerMi
    pod_peak_mi: float
    explanation: str

    def limit_mi(self, workers: int) -> int:
        return self.base_mi + workers * self.per_worker_mi


def round_up(value: float, step: int) -> int:
    return int(math.ceil(value / step) * step)


def memory_advice(reps: Sequence[Repetition], headroom: float = 0.25) -> MemoryAdvice | None:
    """memoryBaseMi and memoryPerWorkerMi from the largest measured peaks, plus headroom, in
    16 MiB steps: the stack's memory limit is base + workers x per-worker."""
    masters = [r.master_peak_bytes for r in reps if r.master_peak_bytes]
    workers = [r.worker_peak_bytes for r in reps if r.worker_peak_bytes]
    pods = [r.peak_memory_bytes for r in reps if r.peak_memory_bytes]
    if not masters or not workers:
        return None
    master_mi, worker_mi = max(masters) / MIB, max(workers) / MIB
    base = max(32, round_up(master_mi * (1 + headroom), 16))
    per = max(32, round_up(worker_mi * (1 + headroom), 16))
    return MemoryAdvice(
        base,
        per,
        max(pods) / MIB if pods else 0.0,
        f"largest peaks: master {master_mi:.0f} MiB, worker {worker_mi:.0f} MiB (RSS high-water "
        f"marks); + {headroom:.0%} headroom, rounded up to 16 MiB: memoryBaseMi {base}, "
        f"memoryPerWorkerMi {per}",
    )


@dataclass(frozen=True)
class Hpa:
    """How quickly the HorizontalPodAutoscaler reacts, and how fast load may grow meanwhile."""

    tolerance: float = 0.10  # the controller ignores ratios within 10 % of 1
    sync_period_s: float = 15.0  # --horizontal-pod-autoscaler-sync-period
    metrics_window_s: float = 15.0  # metrics-server's --metric-resolution
    schedule_s: float = 10.0  # scheduling and image pull, before the container starts
    growth_per_min: float = 0.5  # how much the load may grow in a minute (0.5: +50 %)
    request_factor: float = 2.0  # a request further than this factor from the use is refused
    min_target: int = 20
    max_target: int = 95


@dataclass(frozen=True)
class HpaAdvice:
    target: int | None
    proposed_request_m: int | None
    terms: Mapping[str, float]
    explanation: str


def hpa_advice(
    cpus_at_star: float, cpu_request: float, start_to_ready_s: float, hpa: Hpa
) -> HpaAdvice:
    """The CPU target (percent of the request) at which the HPA must act so that, by the time a
    new pod is ready, load grown at `growth_per_min` has not pushed the pods past λ*:

        target = use at λ* / request / ((1 + tolerance) x (1 + growth x reaction))
        reaction = sync period + metrics window + scheduling + measured start-to-ready

    Refused (with a proposed request) when the request is far from the use: the HPA divides by
    the request, so a small one makes any target meaningless."""
    reaction = hpa.sync_period_s + hpa.metrics_window_s + hpa.schedule_s + start_to_ready_s
    growth = hpa.growth_per_min * reaction / 60
    utilisation = cpus_at_star / cpu_request
    raw = 100 * utilisation / ((1 + hpa.tolerance) * (1 + growth))
    terms = {
        "cpus_at_lambda_star": round(cpus_at_star, 3),
        "cpu_request": cpu_request,
        "utilisation_at_lambda_star": round(utilisation, 3),
        "tolerance": hpa.tolerance,
        "sync_period_s": hpa.sync_period_s,
        "metrics_window_s": hpa.metrics_window_s,
        "schedule_s": hpa.schedule_s,
        "start_to_ready_s": round(start_to_ready_s, 2),
        "reaction_s": round(reaction, 2),
        "growth_per_min": hpa.growth_per_min,
        "growth_during_reaction": round(growth, 4),
        "raw_target_percent": round(raw, 1),
    }
    formula = (
        f"target = {utilisation:.2f} (use {cpus_at_star:.2f} CPU / request {cpu_request:g}) / "
        f"((1 + {hpa.tolerance:g} tolerance) x (1 + {hpa.growth_per_min:g}/min x {reaction:.1f} s "
        f"reaction = {hpa.sync_period_s:g} sync + {hpa.metrics_window_s:g} metrics + "
        f"{hpa.schedule_s:g} scheduling + {start_to_ready_s:.1f} start-to-ready)) = {raw:.0f}%"
    )
    ratio = utilisation
    if ratio > hpa.request_factor or ratio < 1 / hpa.request_factor:
        proposed = max(50, round_up(cpus_at_star * 1000, 50))
        return HpaAdvice(
            None,
            proposed,
            terms,
            f"no HPA target: the pod uses {cpus_at_star:.2f} CPU at λ*, {ratio:.1f} x its "
            f"{cpu_request:g} CPU request (beyond a factor {hpa.request_factor:g}), so a target "
            f"in percent of the request would not track load. Set cpuRequest to about "
            f"{proposed}m and measure again ({formula})",
        )
    if raw < hpa.min_target or raw > hpa.max_target:
        return HpaAdvice(
            None,
            None,
            terms,
            f"no HPA target: {formula}, outside {hpa.min_target}-{hpa.max_target}%; "
            "revisit the growth rate or the request",
        )
    return HpaAdvice(round(raw), None, terms, formula)


@dataclass(frozen=True)
class CountSummary:
    workers: int
    reps: int  # valid repetitions
    lambda_star: Estimate | None
    cpu_per_request_ms: Estimate | None
    p95_ms: Mapping[str, Estimate]
    cpus_at_star: Estimate | None
    start_to_ready_s: float | None
    memory_mi: float | None  # the limit the stack would give (from memory advice)
    cost: tuple[float, float, float] | None  # (at median, at interval low, at interval high)


def estimate(values: Sequence[float], rng: random.Random) -> Estimate | None:
    return bootstrap(values, rng) if values else None


def summarise(
    reps: Sequence[Repetition],
    cost: CostModel,
    memory: MemoryAdvice | None,
    peak_rps: float,
    seed: int = 13,
) -> list[CountSummary]:
    out = []
    for w in sorted({r.workers for r in reps}):
        good = [r for r in reps if r.workers == w and r.valid and r.lambda_star]
        rng = random.Random(seed * 1000 + w)
        lam = estimate([r.lambda_star for r in good if r.lambda_star], rng)
        classes = sorted({c for r in good for c in r.p95_ms})
        p95 = {
            c: e
            for c in classes
            if (e := estimate([r.p95_ms[c] for r in good if c in r.p95_ms], rng))
        }
        mem = memory.limit_mi(w) if memory else None
        costs = None
        if lam and mem:
            costs = (
                cost.at_peak(w, mem, lam.median, peak_rps),
                cost.at_peak(w, mem, lam.high, peak_rps),  # more capacity: lower cost
                cost.at_peak(w, mem, lam.low, peak_rps),
            )
        ready = [r.start_to_ready_s for r in good if r.start_to_ready_s]
        out.append(
            CountSummary(
                w,
                len(good),
                lam,
                estimate([r.cpu_per_request_ms for r in good if r.cpu_per_request_ms], rng),
                p95,
                estimate([r.cpus_at_star for r in good if r.cpus_at_star], rng),
                max(ready) if ready else None,
                mem,
                costs,
            )
        )
    return out


@dataclass(frozen=True)
class Recommendation:
    workers: int | None
    reason: str
    indistinguishable: tuple[int, ...] = ()  # counts whose cost intervals overlap the best's
    stability: float | None = None  # share of resamples that make the same choice
    capacity_rps: float | None = None
    cost: float | None = None


def cheapest(
    capacities: Mapping[int, float], cost: CostModel, memory: MemoryAdvice, peak_rps: float
) -> int:
    """The count with the lowest cost at the peak rate (fewer workers on a tie)."""
    return min(
        capacities,
        key=lambda w: (cost.at_peak(w, memory.limit_mi(w), capacities[w], peak_rps), w),
    )


def recommend(
    reps: Sequence[Repetition],
    summaries: Sequence[CountSummary],
    cost: CostModel,
    memory: MemoryAdvice | None,
    peak_rps: float,
    min_reps: int = 3,
    seed: int = 13,
) -> Recommendation:
    """The worker count that serves `peak_rps` within the objective at the lowest cost, unless
    its cost interval overlaps another count's (then they cannot be told apart)."""
    usable = [s for s in summaries if s.lambda_star and s.cost and s.reps >= min_reps]
    if not usable or memory is None:
        short = [f"{plural(s.workers)}: {s.reps} valid repetition(s)" for s in summaries]
        return Recommendation(
            None,
            f"no worker count qualified (each needs {min_reps} valid repetitions with a λ*; "
            f"{'; '.join(short) or 'none measured'}"
            + ("; memory was not measured" if memory is None else "")
            + ")",
        )
    best = min(usable, key=lambda s: (s.cost[0] if s.cost else math.inf, s.workers))
    assert best.cost
    assert best.lambda_star
    ties = tuple(
        s.workers
        for s in usable
        if s is not best and s.cost and s.cost[1] <= best.cost[2] and best.cost[1] <= s.cost[2]
    )
    samples = {
        s.workers: [
            r.lambda_star for r in reps if r.workers == s.workers and r.valid and r.lambda_star
        ]
        for s in usable
    }
    _, stable = stability(
        samples, lambda caps: cheapest(caps, cost, memory, peak_rps), random.Random(seed)
    )
    pods = max(cost.min_replicas, math.ceil(peak_rps / best.lambda_star.median))
    figures = (
        f"λ* {best.lambda_star.median:.0f} req/s per pod (95 % interval "
        f"{best.lambda_star.low:.0f}-{best.lambda_star.high:.0f}, {best.reps} repetition(s)); "
        f"{pods} pod(s) for {peak_rps:g} req/s cost {best.cost[0]:.2f} CPU-equivalents"
    )
    if ties:
        return Recommendation(
            None,
            f"{plural(best.workers)} and {', '.join(map(str, ties))} cannot be told apart: their "
            f"cost intervals at {peak_rps:g} req/s overlap ({figures}); measure more repetitions "
            "or choose on other grounds.",
            (*ties, best.workers),
            stable,
            best.lambda_star.median,
            best.cost[0],
        )
    return Recommendation(
        best.workers,
        f"{plural(best.workers)}: {figures}, the lowest of the counts measured.",
        (),
        stable,
        best.lambda_star.median,
        best.cost[0],
    )


@dataclass(frozen=True)
class Conditions:
    """How the run was made, for the validity verdict."""

    window_s: float
    min_window_s: float = 60.0
    reps: int = 5
    done: int = 0  # repetitions that ran so far (of `planned`)
    planned: int = 0
    min_reps: int = 3
    pod_faithful: bool = True
    stack_pod: bool = True  # the stack's own CPU limit (no --cpu-limit override)
    max_noise: float = 0.10  # λ* interval half-width / median, at most
    min_stability: float = 0.80
    max_other_cpu: float = 0.50  # median CPUs of unrelated work during the windows


def noise(summary: CountSummary) -> float | None:
    lam = summary.lambda_star
    return (lam.high - lam.low) / 2 / lam.median if lam and lam.median else None


def validity(
    conditions: Conditions,
    summaries: Sequence[CountSummary],
    rec: Recommendation,
    invalid_reps: int,
    other_cpu: float,
) -> dict[str, Any]:
    """Whether the report may be trusted, and written into the stack (--apply)."""
    c = conditions
    blocking: list[str] = []
    if c.done < c.planned:
        blocking.append(f"incomplete: {c.done} of {c.planned} repetitions have run")
    if c.window_s < c.min_window_s:
        blocking.append(
            f"measured windows of {c.window_s:g} s are shorter than {c.min_window_s:g} s"
        )
    if c.reps < c.min_reps:
        blocking.append(f"{c.reps} repetition(s) per count, fewer than {c.min_reps}")
    if not c.pod_faithful:
        blocking.append("the server ran under taskset, not the pod's CPU quota and memory limit")
    if not c.stack_pod:
        blocking.append("--cpu-limit overrode the stack's CPU limit: not the stack's pod")
    noisy = {s.workers: n for s in summaries if (n := noise(s)) is not None and n > c.max_noise}
    if noisy:
        blocking.append(
            "noisy: λ* intervals wider than ±"
            f"{c.max_noise:.0%} ({', '.join(f'{w}: ±{n:.0%}' for w, n in sorted(noisy.items()))})"
        )
    if other_cpu > c.max_other_cpu:
        blocking.append(f"other work used {other_cpu:.2f} CPUs (median) during the windows")
    if rec.stability is not None and rec.stability < c.min_stability:
        blocking.append(
            f"unstable: the recommendation holds in {rec.stability:.0%} of resamples "
            f"(at least {c.min_stability:.0%} wanted)"
        )
    notes = [f"{invalid_reps} repetition(s) were invalid and left out"] if invalid_reps else []
    complete = rec.workers is not None or bool(rec.indistinguishable)
    return {
        "valid": complete and not blocking,
        "valid_for_apply": complete and not blocking and rec.workers is not None,
        "reasons": blocking,
        "notes": notes,
    }
