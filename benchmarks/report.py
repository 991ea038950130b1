"""Pure part of the benchmarks: the targets of issue 4 judged on measured figures, and the table."""

from __future__ import annotations

from typing import Any

Figures = dict[str, dict[str, Any]]

# (key in results["runs"], label), in table order.
ROWS = [
    ("floor.me", "floor: GET /api/v1/users/me"),
    ("full_on.me", "full stack, limiter on (Redis): GET /api/v1/users/me"),
    ("full_off.me", "full stack, limiter off: GET /api/v1/users/me"),
    ("floor.live", "floor: GET /health/live"),
    ("full_on.live", "full stack, limiter on: GET /health/live"),
    ("full_off.live", "full stack, limiter off: GET /health/live"),
    ("full_on.probe_idle", "full stack: paced /health/live probe, idle"),
    ("full_on.probe_flood", "full stack: paced /health/live probe, during the login flood"),
    ("full_on.login_flood", "full stack: POST /api/v1/auth/token (the login flood)"),
]
RSS_LIMIT_MIB = 120.0
RSS_GROWTH_MIB = 2.0  # "no growth": allocator noise of a MiB or two is not a leak


def _check(name: str, value: float, target: str, met: bool) -> dict[str, Any]:
    return {"check": name, "value": round(value, 3), "target": target, "met": met}


def verdicts(runs: Figures, memory: Figures) -> list[dict[str, Any]]:
    """Every target of the issue as {check, value, target, met}."""
    floor, on, off = runs["floor.me"], runs["full_on.me"], runs["full_off.me"]
    rps = on["rps"] / floor["rps"]
    p99 = on["p99_ms"] / floor["p99_ms"]
    limiter = 1 - on["rps"] / off["rps"]
    live = runs["full_on.live"]["rps"] / runs["floor.live"]["rps"]
    flood = runs["full_on.probe_flood"]["p99_ms"] / runs["full_on.probe_idle"]["p99_ms"]
    checks = [
        _check("full stack req/s / floor's", rps, ">= 0.75", rps >= 0.75),
        _check("full stack p99 / floor's", p99, "<= 1.5", p99 <= 1.5),
        _check("limiter cost: 1 - req/s on / off", limiter, "< 0.10", limiter < 0.10),
        _check("/health/live req/s / floor's", live, ">= 0.90", live >= 0.90),
        _check("probe p99 during login flood / idle", flood, "<= 3", flood <= 3),
    ]
    for server, rss in memory.items():
        if server == "floor":
            continue  # context, not a target
        peak = max(rss["rss_mib_50k"].values())
        growth = max(
            rss["rss_mib_50k"][pid] - rss["rss_mib_10k"][pid] for pid in rss["rss_mib_10k"]
        )
        checks += [
            _check(
                f"{server}: largest worker RSS at 50k, MiB", peak, "<= 120", peak <= RSS_LIMIT_MIB
            ),
            _check(
                f"{server}: RSS growth 10k -> 50k, MiB", growth, "<= 2", growth <= RSS_GROWTH_MIB
            ),
        ]
    return checks


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def table(runs: Figures, memory: Figures, checks: list[dict[str, Any]]) -> str:
    """Markdown: the runs, the workers' memory, the targets."""
    lines = [
        "| workload | req/s | p50 ms | p99 ms | errors | server CPU ms/req | load avg before "
        "| CPU 0 to others |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    rows = ROWS + [(k, f"variant {k.removesuffix('.me')}") for k in runs if k not in dict(ROWS)]
    for key, label in rows:
        if r := runs.get(key):
            lines.append(
                f"| {label} | {r['rps']:.0f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} "
                f"| {r['errors']} | {_ms(r['server_cpu_ms_per_req'])} "
                f"| {r['load_before']:.2f} | {r['cpu0_others_pct']:.0f} % |"
            )
    lines += [
        "",
        "| server | worker RSS after 10k requests, MiB | after 50k | after the login flood |",
        "|---|---|---|---|",
    ]
    for server, rss in memory.items():
        cells = [
            ", ".join(f"{v:.1f}" for v in rss[key].values()) if key in rss else "n/a"
            for key in ("rss_mib_10k", "rss_mib_50k", "rss_mib_after_login_flood")
        ]
        lines.append(f"| {server} | {' | '.join(cells)} |")
    lines += ["", "| target | measured | wanted | met |", "|---|---:|---|---|"]
    for c in checks:
        met = "yes" if c["met"] else "**no**"
        lines.append(f"| {c['check']} | {c['value']:.3g} | {c['target']} | {met} |")
    return "\n".join(lines)
