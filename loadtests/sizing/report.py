"""The sizing run's outputs: a text table, sizing.json, sizing.csv, sizing.png and index.html."""

from __future__ import annotations

import csv
import html
import json
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

from loadtests.sizing.select import Recommendation, Step, plural

COLUMNS = [f.name for f in fields(Step)]
HEADINGS = {
    "workers": "workers",
    "rps": "req/s",
    "p50_ms": "p50 ms",
    "p95_ms": "p95 ms",
    "p99_ms": "p99 ms",
    "failures": "failures",
    "rate_limited": "429s",
    "requests": "requests",
    "cpu_util": "server CPU",
    "client_cpu_util": "Locust CPU",
    "stores_cpu": "PG+Redis CPUs",
    "other_cpu": "other CPUs",
}


def _cell(column: str, value: object) -> str:
    if value is None:
        return "-"
    if column.endswith("cpu_util"):
        return f"{float(value):.0%}"  # type: ignore[arg-type]
    if column.endswith("_cpu"):
        return f"{float(value):.2f}"  # type: ignore[arg-type]
    return f"{value:.0f}" if isinstance(value, float) else str(value)


def table_row(step: Step, recommended: int | None) -> list[str]:
    """One step's cells, marked with a * when it is the recommended one."""
    mark = {"workers": "*"} if step.workers == recommended else {}
    return [_cell(c, getattr(step, c)) + mark.get(c, "") for c in COLUMNS]


def table(steps: list[Step], recommended: int | None) -> str:
    """A Markdown table (readable in a terminal too)."""
    lines = [[HEADINGS[c] for c in COLUMNS], *(table_row(s, recommended) for s in steps)]
    widths = [max(len(line[i]) for line in lines) for i in range(len(COLUMNS))]
    out = [
        "| " + " | ".join(v.rjust(w) for v, w in zip(line, widths, strict=True)) + " |"
        for line in lines
    ]
    out.insert(1, "|" + "|".join("-" * (w + 1) + ":" for w in widths) + "|")
    return "\n".join(out)


def summary(rec: Recommendation) -> str:
    if rec.workers is None:
        return f"No recommendation: {rec.reason}"
    lines = [f"Recommended workers: {rec.workers}. {rec.reason}"]
    if rec.capacity_rps is not None:
        lines.append(f"Per-pod capacity at the objective: {rec.capacity_rps:.0f} req/s.")
    if rec.hpa_cpu_target is not None:
        lines.append(f"Autoscaler CPU target: {rec.hpa_cpu_target}%: {rec.hpa_reason}")
    elif rec.hpa_reason:
        lines.append(rec.hpa_reason)
    return "\n".join(lines)


def document(steps: list[Step], rec: Recommendation, settings: dict[str, Any]) -> dict[str, Any]:
    """The content of sizing.json."""
    return {
        "recommended_workers": rec.workers,
        "reason": rec.reason,
        "capacity_rps": rec.capacity_rps,
        "cpu_utilisation": rec.cpu_util,
        "hpa_cpu_target": rec.hpa_cpu_target,
        "hpa_reason": rec.hpa_reason,
        "settings": settings,
        "steps": [asdict(s) for s in steps],
    }


def chart(steps: list[Step], rec: Recommendation, p95_objective: float, path: Path) -> None:
    """Throughput (bars) and p95 (line, with the objective) against the worker count."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    workers = [s.workers for s in steps]
    fig, rps_axis = plt.subplots(figsize=(7, 4), dpi=120)
    colours = ["tab:green" if w == rec.workers else "tab:blue" for w in workers]
    rps_axis.bar(workers, [s.rps for s in steps], color=colours, alpha=0.7, label="req/s")
    rps_axis.set_xlabel("Gunicorn workers")
    rps_axis.set_ylabel("throughput (req/s)")
    rps_axis.set_xticks(workers)
    p95_axis = rps_axis.twinx()
    p95_axis.plot(workers, [s.p95_ms for s in steps], "o-", color="tab:red", label="p95 ms")
    p95_axis.axhline(
        p95_objective,
        color="tab:red",
        linestyle="--",
        linewidth=1,
        label=f"p95 objective {p95_objective:g} ms",
    )
    p95_axis.set_ylabel("p95 latency (ms)")
    p95_axis.set_ylim(0, max([p95_objective, *(s.p95_ms for s in steps)]) * 1.15)
    title = "recommended: " + (plural(rec.workers) if rec.workers else "none")
    rps_axis.set_title(f"Worker sizing ({title})")
    handles = [*rps_axis.get_legend_handles_labels()[0], *p95_axis.get_legend_handles_labels()[0]]
    rps_axis.legend(
        handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.15), ncol=3, fontsize="small"
    )
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def page(steps: list[Step], rec: Recommendation, settings: dict[str, Any]) -> str:
    """A small self-describing HTML report next to the chart."""
    head = "".join(f"<th>{html.escape(HEADINGS[c])}</th>" for c in COLUMNS)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(v)}</td>" for v in row) + "</tr>"
        for row in (table_row(s, rec.workers) for s in steps)
    )
    listed = "".join(
        f"<li>{html.escape(str(k))}: {html.escape(str(v))}</li>" for k, v in settings.items()
    )
    paragraphs = "".join(f"<p>{html.escape(line)}</p>" for line in summary(rec).splitlines())
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Worker sizing</title>
<style>body{{font-family:sans-serif;max-width:52em;margin:2em auto}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:.2em .6em;text-align:right}}
</style></head><body>
<h1>Worker sizing</h1>
{paragraphs}
<img src="sizing.png" alt="throughput and p95 against the worker count">
<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>
<p>* recommended</p>
<h2>Settings</h2><ul>{listed}</ul>
</body></html>
"""


def write_all(
    out: Path, steps: list[Step], rec: Recommendation, settings: dict[str, Any]
) -> dict[str, Path]:
    """Write every output into `out`; returns them by kind."""
    out.mkdir(parents=True, exist_ok=True)
    paths = {k: out / f"sizing.{k}" for k in ("json", "csv", "png")} | {"html": out / "index.html"}
    paths["json"].write_text(json.dumps(document(steps, rec, settings), indent=2) + "\n")
    with paths["csv"].open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(asdict(s) for s in steps)
    chart(steps, rec, float(settings["p95_objective_ms"]), paths["png"])
    paths["html"].write_text(page(steps, rec, settings))
    return paths
