"""The benchmark's verdicts: medians of interleaved rounds, every balance run, PASS/FAIL."""

from __future__ import annotations

from typing import Any

from benchmarks.report import table, verdicts

ME, LIVE = "/api/v1/users/me", "/health/live"


def _run(server: str, path: str, round_: int, rps: float, p99: float) -> dict[str, Any]:
    return {
        "server": server,
        "path": path,
        "round": round_,
        "rps": rps,
        "p50_ms": p99 / 3,
        "p99_ms": p99,
        "errors": 0,
        "server_cpu_ms_per_req": 1000 / rps,
        "load_before": 1.0,
        "cpu0_others_pct": 0.0,
    }


def _balance(shares: tuple[float, float]) -> dict[str, Any]:
    return {
        "round": 1,
        "path": LIVE,
        "rps": 1000,
        "worker_cpu_s": list(shares),
        "worker_cpu_share": list(shares),
        "connections_per_worker": [32, 32],
        "cores_used": 1.0,
        "min_over_max": min(shares) / max(shares),
        "load_before": 1.0,
    }


def _results(balance: list[dict[str, Any]]) -> dict[str, Any]:
    runs = []
    # One disturbed round each; the medians ignore it.
    for round_, factor in ((1, 1.0), (2, 0.2), (3, 1.0)):
        runs += [
            _run("floor", ME, round_, 1000 * factor, 10),
            _run("full_on", ME, round_, 850 * factor, 14),
            _run("full_off", ME, round_, 900 * factor, 13),
            _run("floor", LIVE, round_, 5000 * factor, 5),
            _run("full_on", LIVE, round_, 4600 * factor, 5),
        ]
    idle = {"p50_ms": 1, "p99_ms": 4, "requests": 500}
    flood = {
        "round": 1,
        "load_before": 1.0,
        "probe_idle": idle,
        "probe_flood": idle | {"p99_ms": 11},
        "logins": {"requests": 400, "p99_ms": 900, "statuses": {"2xx": 400, "429": 0, "5xx": 0}},
    }
    memory = {"full_on": {"after 50000 requests": {"1": 100.0, "2": 110.0}, "requests": 50000}}
    return {"runs": runs, "balance": balance, "flood": [flood], "memory": memory}


def test_targets_are_judged_on_medians_and_pass_when_every_figure_holds() -> None:
    results = _results([_balance((0.5, 0.5)), _balance((0.45, 0.55))])
    checks = {c["check"]: c for c in verdicts(results)}
    assert checks["/users/me req/s, full stack / floor"]["value"] == 0.85
    assert checks["limiter cost: 1 - req/s on / off"]["value"] == round(1 - 850 / 900, 3)
    failed = [c for c in checks.values() if not c["met"] and not c.get("context")]
    assert failed == []
    results["checks"] = list(checks.values())
    text = table(results)
    assert "PASS" in text
    assert "FAIL" not in text


def test_one_unbalanced_run_fails_the_balance_target() -> None:
    results = _results([_balance((0.5, 0.5)), _balance((0.3, 0.7)), _balance((0.5, 0.5))])
    (balance,) = [c for c in verdicts(results) if c["check"].startswith("worker CPU")]
    assert not balance["met"]
    assert balance["value"] == round(0.3 / 0.7, 3)


def test_a_5xx_during_the_flood_fails_it() -> None:
    results = _results([])
    results["flood"][0]["logins"]["statuses"]["5xx"] = 1
    (fivexx,) = [c for c in verdicts(results) if c["check"] == "login flood: 5xx answers"]
    assert not fivexx["met"]


def test_the_floor_with_the_services_headers_is_context_not_a_target() -> None:
    results = _results([_balance((0.5, 0.5))])
    for round_ in (1, 2, 3):
        results["runs"].append(_run("floor", LIVE + "/with-headers", round_, 4250, 5))
    checks = {c["check"]: c for c in verdicts(results)}
    headers = checks[
        "context: /health/live req/s, floor with the service's response headers / floor"
    ]
    assert headers["value"] == 0.85
    assert headers["context"] is True
    assert not headers["met"]
    assert all(c["met"] for c in checks.values() if not c.get("context"))
