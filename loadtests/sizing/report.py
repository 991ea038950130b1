"""The sizing report: sizing.json (schema_version), sizing.md, steps.csv and sizing.png.

The JSON holds everything the decision used; the Markdown is what a reviewer reads; the chart
plots, per worker count, p95 latency and pod CPU against the offered arrival rate (every step)
and λ* with its bootstrap interval.
"""

from __future__ import annotations

import csv
import importlib.metadata
import json
import os
import platform
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from loadtests.sizing.select import (
    CountSummary,
    HpaAdvice,
    MemoryAdvice,
    Recommendation,
    Repetition,
    plural,
)

MIB = 1024 * 1024
PACKAGES = ("locust", "gunicorn", "uvicorn", "fastapi", "sqlalchemy", "asyncpg")


def environment(commit: str) -> dict[str, Any]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "commit": commit,
        "python": platform.python_version(),
        "packages": versions,
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "kernel": platform.release(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


def step_rows(records: Sequence[Any]) -> list[dict[str, Any]]:
    rows = []
    for rec in records:
        for i, step in enumerate(rec.steps):
            r = step.result
            lat = r.class_latency()
            rows.append(
                {
                    "workers": r.workers,
                    "repetition": rec_index(records, rec),
                    "step": i + 1,
                    "offered_rps": r.offered_rps,
                    "achieved_rps": round(r.achieved_rps, 1),
                    "verdict": step.verdict.status,
                    "reasons": "; ".join(step.verdict.reasons),
                    **{f"{c}_p95_ms": lat[c][0] for c in sorted(lat)},
                    **{f"{c}_p99_ms": lat[c][1] for c in sorted(lat)},
                    "requests": r.requests,
                    "failures": r.failures,
                    "rate_limited": r.rate_limited,
                    "scheduled": r.scheduled,
                    "late": r.late,
                    "dropped": r.dropped,
                    "pod_cpus": round(r.server_cpus_used, 3),
                    "cpu_ms_per_request": round(r.cpu_per_request_ms or 0, 3),
                    "throttled_periods": r.throttled_periods,
                    "periods": r.periods,
                    "throttled_s": round(r.throttled_s, 3),
                    "client_cpu": "/".join(f"{c:.2f}" for c in r.client_cpu),
                    "stores_cpus": step.stores_cpu,
                    "other_cpus": r.other_cpu,
                    "steal_cpus": r.steal_cpu,
                    "attempt": step.attempt,
                    "items_at_start": step.items_at_start,
                    "items_cleared": step.items_cleared,
                    "ops": {op: asdict(s) for op, s in r.ops.items()},
                }
            )
    return rows


def rec_index(records: Sequence[Any], rec: Any) -> int:
    """The repetition's number among those of its worker count."""
    same = [r for r in records if r.repetition.workers == rec.repetition.workers]
    return same.index(rec) + 1


def _summary_dict(s: CountSummary) -> dict[str, Any]:
    return {
        "workers": s.workers,
        "valid_repetitions": s.reps,
        "lambda_star_rps": s.lambda_star.as_dict() if s.lambda_star else None,
        "cpu_ms_per_request": s.cpu_per_request_ms.as_dict() if s.cpu_per_request_ms else None,
        "p95_ms": {c: e.as_dict() for c, e in s.p95_ms.items()},
        "pod_cpus_at_lambda_star": s.cpus_at_star.as_dict() if s.cpus_at_star else None,
        "start_to_ready_s": s.start_to_ready_s,
        "memory_limit_mi": s.memory_mi,
        "cost_at_peak": s.cost,
    }


def markdown(report: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    rec, val = report["recommendation"], report["validity"]
    lines = [
        f"# Sizing report ({report['date']}, stack `{report['settings']['stack']}`)",
        "",
        f"**Verdict:** {'valid' if val['valid'] else 'NOT VALID'}"
        f"{', applicable' if val['valid_for_apply'] else ', not for --apply'}."
        + "".join(f"\n- {r}" for r in val["reasons"] + val["notes"]),
        "",
        f"**Recommendation:** {rec['reason']}"
        + (f" Stability {rec['stability']:.0%}." if rec.get("stability") is not None else ""),
        "",
        "| workers | valid reps | λ* req/s (95 % CI) | CPU ms/req | pod CPUs at λ* | read p95 ms |"
        " memory limit MiB | cost at peak |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for s in report["counts"]:
        lam, cpu, at = s["lambda_star_rps"], s["cpu_ms_per_request"], s["pod_cpus_at_lambda_star"]
        read = s["p95_ms"].get("read")
        lines.append(
            f"| {s['workers']} | {s['valid_repetitions']} | "
            + (f"{lam['median']:.0f} ({lam['low']:.0f}-{lam['high']:.0f})" if lam else "-")
            + (f" | {cpu['median']:.2f}" if cpu else " | -")
            + (f" | {at['median']:.2f}" if at else " | -")
            + (f" | {read['median']:.0f}" if read else " | -")
            + f" | {s['memory_limit_mi'] or '-'}"
            + (f" | {s['cost_at_peak'][0]:.2f}" if s["cost_at_peak"] else " | -")
            + " |"
        )
    mem, hpa = report.get("memory"), report.get("hpa")
    lines += ["", "## Memory", "", mem["explanation"] if mem else "not measured"]
    lines += ["", "## HPA", "", hpa["explanation"] if hpa else "no target: nothing recommended"]
    if hpa:
        lines += ["", *(f"- {k}: {v}" for k, v in hpa["terms"].items())]
    lines += [
        "",
        "## Repetitions",
        "",
        "Worker recycling is off (MAX_REQUESTS=0, as in benchmarks/run.py): a recycle inside a "
        "window would decide the result by chance. A worker replaced anyway (crash, memory "
        "limit) is counted and invalidates its repetition: "
        f"{sum(p.get('recycles', 0) for p in report['pods'])} in this run.",
        "",
        "| workers | λ* | first fail | valid | ready s | peak MiB pod/worker | throttled | notes |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in report["repetitions"]:
        pod = (r["peak_memory_bytes"] or 0) / MIB
        worker = (r["worker_peak_bytes"] or 0) / MIB
        thr = r["throttled_fraction"]
        lines.append(
            f"| {r['workers']} | {r['lambda_star'] or '-'} | {r['high'] or '-'} | {r['valid']} | "
            f"{r['start_to_ready_s'] or '-'} | {pod:.0f}/{worker:.0f} | "
            f"{f'{thr:.0%}' if thr is not None else '-'} | {'; '.join(r['notes'])} |"
        )
    lines += [
        "",
        "## Steps",
        "",
        "| w | rep | offered | done | verdict | read p95/p99 | write p95/p99 | login p95 |"
        " late | dropped | pod CPU | throttled | Locust CPU | other CPU | of it, steal |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:

        def lat(cls: str, row: dict[str, Any] = row) -> str:
            p95, p99 = row.get(f"{cls}_p95_ms"), row.get(f"{cls}_p99_ms")
            return f"{p95:.0f}/{p99:.0f}" if p95 is not None and p99 is not None else "-"

        lines.append(
            f"| {row['workers']} | {row['repetition']} | {row['offered_rps']:g} | "
            f"{row['achieved_rps']:g} | {row['verdict']} | {lat('read')} | {lat('write')} | "
            f"{row.get('login_p95_ms', '-')} | {row['late']} | {row['dropped']} | "
            f"{row['pod_cpus']} | {row['throttled_periods']}/{row['periods']} | "
            f"{row['client_cpu']} | {row['other_cpus']} | {row['steal_cpus']} |"
        )
    env = report["environment"]
    lines += [
        "",
        "## Environment",
        "",
        f"commit {env['commit']}, Python {env['python']}, {env['cpus']} x {env['cpu']}, kernel "
        f"{env['kernel']}, pods: {', '.join(sorted(report['pod_modes'])) or 'none'}; "
        + ", ".join(f"{k} {v}" for k, v in env["packages"].items()),
        "",
        f"Command: `{report['settings']['command']}`; took {report['elapsed_s'] / 60:.0f} min.",
    ]
    return "\n".join(lines) + "\n"


def chart(path: Path, rows: list[dict[str, Any]], report: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (lat, cpu, lam) = plt.subplots(1, 3, figsize=(15, 4.5))
    counts = sorted({r["workers"] for r in rows})
    for w in counts:
        mine = sorted((r for r in rows if r["workers"] == w), key=lambda r: r["offered_rps"])
        xs = [r["offered_rps"] for r in mine]
        lat.scatter(xs, [r.get("read_p95_ms", 0) for r in mine], s=12, label=plural(w))
        cpu.scatter(xs, [r["pod_cpus"] for r in mine], s=12, label=plural(w))
    want = report["settings"]["objective"]["latency_ms"].get("read", [None])[0]
    if want:
        lat.axhline(want, color="grey", linestyle="--", linewidth=1, label="read p95 objective")
    lat.set(xlabel="offered arrival rate (req/s)", ylabel="read p95 (ms)", yscale="log")
    lat.set_title("latency against arrival rate (every step)")
    cpu.set(xlabel="offered arrival rate (req/s)", ylabel="pod CPUs")
    cpu.axhline(report["settings"]["pod_cpu_limit"], color="grey", linestyle="--", linewidth=1)
    cpu.set_title("CPU against arrival rate (limit dashed)")
    good = [s for s in report["counts"] if s["lambda_star_rps"]]
    if good:
        ws = [s["workers"] for s in good]
        med = [s["lambda_star_rps"]["median"] for s in good]
        low = [s["lambda_star_rps"]["low"] for s in good]
        high = [s["lambda_star_rps"]["high"] for s in good]
        lam.fill_between(ws, low, high, alpha=0.3, label="95 % bootstrap interval")
        lam.plot(ws, med, marker="o", label="median λ*")
    lam.set(xlabel="Gunicorn workers", ylabel="λ* (req/s per pod)")
    lam.set_title("capacity at the objective")
    for ax in (lat, cpu, lam):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_all(
    out: Path,
    report: dict[str, Any],
    records: Sequence[Any],
    reps: Sequence[Repetition],
    summaries: Sequence[CountSummary],
    rec: Recommendation,
    memory: MemoryAdvice | None,
    hpa: HpaAdvice | None,
    say: Callable[[str], None],
    final: bool = True,
) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    rows = step_rows(records)
    report = {
        **report,
        "recommendation": asdict(rec),
        "counts": [_summary_dict(s) for s in summaries],
        "memory": asdict(memory) if memory else None,
        "hpa": asdict(hpa) if hpa else None,
        "repetitions": [asdict(r) for r in reps],
        "pod_modes": sorted({str(r.pod.get("mode")) for r in records}),
        "pods": [r.pod for r in records],
        "steps": rows,
    }
    paths = {
        "json": out / "sizing.json",
        "md": out / "sizing.md",
        "csv": out / "steps.csv",
        "png": out / "sizing.png",
    }
    paths["json"].write_text(json.dumps(report, indent=2, default=str) + "\n")
    paths["md"].write_text(markdown(report, rows))
    with paths["csv"].open("w", newline="") as f:
        flat = [{k: v for k, v in r.items() if k != "ops"} for r in rows]
        fields = sorted({k for r in flat for k in r})
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(flat)
    chart(paths["png"], rows, report)
    if not final:
        return paths
    say("")
    say(paths["md"].read_text().split("## Repetitions")[0].rstrip())
    say(f"\nwrote {', '.join(str(p) for p in paths.values())}")
    return paths
