"""End to end: `python -m loadtests.sizing` on the real pipeline, one worker count, tiny windows.

The production server runs in a pod-sized cgroup (where this machine allows) on the machine's
PostgreSQL and Redis, driven by the open-loop locustfile; this test reads what the run wrote and
checks the report's structure and its validity logic, never its figures.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CGROUP_V1 = Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us")

pytestmark = pytest.mark.skipif(
    not (REPO / "service" / "main.py").exists(), reason="service/main.py does not exist yet"
)


def test_a_short_run_writes_a_complete_report_marked_not_valid(tmp_path: Path) -> None:
    out = tmp_path / "sizing"
    args = [sys.executable, "-m", "loadtests.sizing", "--workers", "1", "--reps", "1"]
    args += ["--window", "3", "--warmup", "4", "--start-rps", "10", "--max-rps", "20"]
    args += ["--retries", "1", "--seed-users", "4", "--out", str(out), "--progress", "2"]
    args += ["--quiet-wait", "0"]
    # A smoke test checks the pipeline, not this machine's speed (nor how busy it is).
    args += ["--slo", "read=60000/60000", "--slo", "write=60000/60000", "--slo", "login=60000"]

    done = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=150)

    assert done.returncode in (0, 1), done.stdout + done.stderr
    assert "estimated" in done.stdout
    assert "[progress]" in done.stdout
    report = json.loads((out / "sizing.json").read_text())
    assert report["schema_version"] == 2
    assert report["settings"]["stack"] == "staging"
    assert report["settings"]["max_requests"] == 0
    assert {"commit", "python", "cpu", "kernel", "packages"} <= set(report["environment"])
    validity = report["validity"]
    assert validity["valid"] is False
    assert validity["valid_for_apply"] is False
    assert "measured windows of 3 s are shorter than 60 s" in validity["reasons"]
    assert "1 repetition(s) per count, fewer than 3" in validity["reasons"]
    assert any("stolen by the hypervisor" in note for note in validity["notes"])
    if CGROUP_V1.exists():
        assert report["pod_modes"] == ["cgroup-v1"]
        assert report["pods"][0]["cpu_limit"] == 1.0
    steps = report["steps"]
    assert steps
    for step in steps:
        assert step["verdict"] in {"pass", "fail", "invalid"}
        assert step["scheduled"] == step["requests"] + step["dropped"]
        assert step["steal_cpus"] >= 0
    # Every step starts from the same data: the items an earlier step left are removed first.
    # (A first step passes into a second, fails into a lower one, or is invalid and retried.)
    assert len(steps) >= 2
    assert [step["items_at_start"] for step in steps] == [0] * len(steps)
    assert all(step["items_cleared"] > 0 for step in steps[1:])
    (rep,) = report["repetitions"]
    assert rep["workers"] == 1
    assert rep["start_to_ready_s"] > 0
    nothing = report["recommendation"]["workers"] is None
    assert done.returncode == (
        1 if nothing and not report["recommendation"]["indistinguishable"] else 0
    )
    for name in ("sizing.md", "steps.csv", "sizing.png"):
        assert (out / name).stat().st_size > 0
    # The pod's cgroups are gone.
    assert not list(Path("/sys/fs/cgroup/cpu").glob("sizing-*-w1-r1"))
