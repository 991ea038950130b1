"""The pod's cgroup: the file protocol (on a temporary tree standing in for /sys/fs/cgroup, so
both layouts are exercised here) and, where this machine allows, a real CFS quota."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from loadtests.sizing.pod import (
    CgroupV1,
    CgroupV2,
    Limits,
    Pinned,
    PodError,
    open_pod,
    own_cgroups,
    read_kv,
)

LIMITS = Limits(cpu=0.5, memory_bytes=256 * 1024 * 1024)
V1_SELF = "4:memory:/outer\n3:cpuacct:/\n2:cpu:/\n0::/\n"


def fake_v1(root: Path) -> None:
    """Controller mounts as plain folders: the kernel's files are whatever the code writes."""
    for controller in ("cpu", "cpuacct", "memory/outer"):
        (root / controller).mkdir(parents=True)


def test_own_cgroups() -> None:
    assert own_cgroups("4:memory:/a/b\n3:cpu,cpuacct:/\n0::/user.slice\n") == {
        "memory": "/a/b",
        "cpu": "/",
        "cpuacct": "/",
        "": "/user.slice",
    }


def test_v1_writes_the_quota_and_the_memory_limit_under_our_own_group(tmp_path: Path) -> None:
    fake_v1(tmp_path)

    pod = open_pod(LIMITS, "pod-1", print, root=tmp_path, proc_cgroup=V1_SELF)

    assert isinstance(pod, CgroupV1)
    assert (tmp_path / "cpu/pod-1/cpu.cfs_period_us").read_text() == "100000"
    assert (tmp_path / "cpu/pod-1/cpu.cfs_quota_us").read_text() == "50000"
    assert (tmp_path / "memory/outer/pod-1/memory.limit_in_bytes").read_text() == "268435456"
    wrapped = pod.wrap(["gunicorn", "-c", "x"])
    assert wrapped[:2] == ["sh", "-c"]
    assert wrapped[-5:] == [str(tmp_path / "memory/outer/pod-1"), "--", "gunicorn", "-c", "x"]


def test_v2_writes_cpu_max_and_memory_max(tmp_path: Path) -> None:
    (tmp_path / "cgroup.controllers").write_text("cpu memory io\n")
    (tmp_path / "user").mkdir()
    (tmp_path / "user/cgroup.subtree_control").write_text("")

    pod = open_pod(LIMITS, "pod-2", print, root=tmp_path, proc_cgroup="0::/user\n")

    assert isinstance(pod, CgroupV2)
    assert (tmp_path / "user/pod-2/cpu.max").read_text() == "50000 100000"
    assert (tmp_path / "user/pod-2/memory.max").read_text() == "268435456"
    assert (tmp_path / "user/cgroup.subtree_control").read_text() in (
        "+cpu +memory",
        "+memory +cpu",
    )


def test_without_a_writable_cgroup_the_fallback_is_taskset_and_says_so(tmp_path: Path) -> None:
    said: list[str] = []

    pod = open_pod(LIMITS, "pod-3", said.append, root=tmp_path, proc_cgroup="0::/\n", cpus=[0, 1])

    assert isinstance(pod, Pinned)
    assert not pod.faithful
    assert pod.wrap(["gunicorn"]) == ["taskset", "-c", "0", "gunicorn"]
    assert said[0].startswith("WARNING: no writable cgroup")
    with pytest.raises(PodError):
        open_pod(LIMITS, "p", print, root=tmp_path, proc_cgroup="0::/\n", allow_fallback=False)


def test_read_kv(tmp_path: Path) -> None:
    (tmp_path / "cpu.stat").write_text("nr_periods 15\nnr_throttled 9\nthrottled_time 812\nx y\n")

    assert read_kv(tmp_path / "cpu.stat") == {
        "nr_periods": 15,
        "nr_throttled": 9,
        "throttled_time": 812,
    }


REAL = Path("/sys/fs/cgroup/cpu")


@pytest.mark.skipif(
    os.geteuid() != 0 or not (REAL / "cpu.cfs_quota_us").exists(),
    reason="needs root and a cgroup v1 cpu controller",
)
def test_a_real_quota_throttles_a_busy_process() -> None:
    # 100m: a busy loop exceeds it even on a machine whose other work leaves it half a CPU.
    tenth = Limits(cpu=0.1, memory_bytes=64 * 1024 * 1024)
    pod = open_pod(tenth, f"sizing-test-{os.getpid()}", print, allow_fallback=False)
    try:
        busy = subprocess.Popen(pod.wrap(["sh", "-c", "while :; do :; done"]))
        time.sleep(0.3)
        before, started = pod.cpu(), time.monotonic()
        time.sleep(1.5)
        used, wall = pod.cpu() - before, time.monotonic() - started
        busy.kill()
        busy.wait()
    finally:
        pod.close()

    assert used.throttled > 0
    assert used.throttled_s > 0
    # A busy loop gets no more than its quota (slack for the periods at the window's edges).
    assert used.usage_s / wall < 0.15
