"""End to end: `python -m loadtests.sizing` on the real pipeline, two worker counts, a few seconds.

It starts the production server on the machine's PostgreSQL and Redis (127.0.0.1) and drives
Locust, each in its own process; this test only reads what the run wrote.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(
    not (REPO / "service" / "main.py").exists(), reason="service/main.py does not exist yet"
)


def test_two_worker_counts_produce_a_valid_report(tmp_path: Path) -> None:
    out = tmp_path / "sizing"
    args = [sys.executable, "-m", "loadtests.sizing", "--workers", "1,2", "--out", str(out)]
    args += ["--users", "4", "--seed-users", "4", "--warmup", "1", "--duration", "4"]
    # A smoke test checks the pipeline, not this machine's speed (nor how busy it is).
    args += ["--p95-ms", "2000", "--quiet-wait", "0", "--retries", "0"]

    done = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=120, check=False)

    assert done.returncode == 0, done.stdout + done.stderr
    assert "[1/2] 1 worker(s)" in done.stdout
    assert "[2/2] 2 worker(s)" in done.stdout
    report = json.loads((out / "sizing.json").read_text())
    steps = report["steps"]
    assert [s["workers"] for s in steps] == [1, 2]
    for step in steps:
        assert step["rps"] > 0
        assert step["requests"] > 0
        assert 0 <= step["p50_ms"] <= step["p95_ms"] <= step["p99_ms"]
        assert step["p95_ms"] > 0
        failures = out / "locust" / f"workers-{step['workers']}_failures.csv"
        assert step["failures"] == 0, failures.read_text()
        assert step["rate_limited"] == 0  # the run's generous limits kept the limiter out of it
        assert 0 < step["cpu_util"] <= 1.05
    if report["recommended_workers"] is None:
        assert report["reason"].startswith("no worker count meets")
    else:
        assert report["recommended_workers"] in {1, 2}
        assert report["capacity_rps"] > 0
    for name in ("sizing.csv", "sizing.png", "index.html"):
        assert (out / name).stat().st_size > 0
