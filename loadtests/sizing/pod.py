"""A pod's CPU and memory limit on one machine: a cgroup with a CFS quota and a memory limit.

Kubernetes turns `limits.cpu` into a CFS quota (cpu.cfs_quota_us / cpu.cfs_period_us in cgroup v1,
cpu.max in v2) and `limits.memory` into memory.limit_in_bytes (v1) / memory.max (v2). Several
workers may run in parallel until the period's quota is spent, then all wait: that throttling is
what decides one worker against several, and `taskset` cannot show it. Groups are created under
this process's own cgroup (so whatever accounts for this process still sees the server), and
removed afterwards. Where neither layout is writable, `taskset` pins ceil(limit) CPUs and the
pod is marked as a fallback (a visible warning; `--apply` refuses it).

`root` is injectable so the tests drive the file protocol on a temporary tree as well as on the
machine's real /sys/fs/cgroup.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
PERIOD_US = 100_000  # the kubelet's CFS period
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
Say = Callable[[str], None]


class PodError(RuntimeError):
    """The cgroup could not be created or written."""


@dataclass(frozen=True)
class Limits:
    cpu: float  # CPUs, fractional allowed (0.5 = 500m)
    memory_bytes: int

    @property
    def quota_us(self) -> int:
        return round(self.cpu * PERIOD_US)


@dataclass(frozen=True)
class CpuSample:
    usage_s: float
    periods: int = 0
    throttled: int = 0
    throttled_s: float = 0.0

    def __sub__(self, other: CpuSample) -> CpuSample:
        return CpuSample(
            self.usage_s - other.usage_s,
            self.periods - other.periods,
            self.throttled - other.throttled,
            self.throttled_s - other.throttled_s,
        )


def read_kv(path: Path) -> dict[str, int]:
    """ "key value" lines (cpu.stat, memory.events, memory.oom_control) as a dict."""
    out = {}
    for line in path.read_text().splitlines():
        key, _, value = line.partition(" ")
        if value.strip().lstrip("-").isdigit():
            out[key] = int(value)
    return out


def own_cgroups(proc_cgroup: str) -> dict[str, str]:
    """/proc/self/cgroup as {controller: path}; the v2 entry ("0::/path") under ""."""
    out = {}
    for line in proc_cgroup.splitlines():
        _, controllers, path = line.split(":", 2)
        for controller in controllers.split(",") if controllers else [""]:
            out[controller] = path
    return out


def peak_rss_bytes(pid: int) -> int | None:
    """VmHWM: the process's resident-set high-water mark."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def process_cpu_s(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime


def process_table() -> dict[int, tuple[int, str, float]]:
    """pid -> (parent pid, command name, CPU seconds) of every process, from /proc."""
    table = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue  # the process ended while we looked
            fields = stat[stat.rindex(")") + 2 :].split()
            comm = stat[stat.index("(") + 1 : stat.rindex(")")]
            # utime + stime, plus cutime + cstime: the CPU of children it reaped (a Gunicorn
            # worker recycled after max_requests), which would otherwise vanish from the tree.
            ticks = sum(int(v) for v in fields[11:15])
            table[int(entry.name)] = (int(fields[1]), comm, ticks / CLOCK_TICKS)
    return table


def tree(table: dict[int, tuple[int, str, float]], root: int) -> list[int]:
    """`root` and its descendants."""
    found, frontier = [root], [root]
    while frontier:
        parent = frontier.pop()
        kids = [pid for pid, row in table.items() if row[0] == parent and pid not in found]
        found.extend(kids)
        frontier.extend(kids)
    return found


def tree_cpu_seconds(table: dict[int, tuple[int, str, float]], root: int) -> float:
    """CPU seconds of a live process and all its descendants."""
    return sum(table[pid][2] for pid in tree(table, root) if pid in table)


def children(pid: int) -> list[int]:
    """`pid` and its descendants, from /proc."""
    return tree(process_table(), pid)


class Pod:
    """Where the server runs. Subclasses: CgroupV1, CgroupV2, Pinned (the fallback)."""

    mode = "none"
    faithful = False  # whether the limits are a pod's (a quota and a memory limit)

    def __init__(self, limits: Limits) -> None:
        self.limits = limits

    def wrap(self, command: list[str]) -> list[str]:
        """The command, entering the pod before it execs (its children inherit the group)."""
        return command

    def pids(self) -> list[int]:
        return []

    def started(self, pid: int) -> None:
        """The server's pid, once it runs (a cgroup finds its processes itself)."""

    def cpu(self) -> CpuSample:
        return CpuSample(sum(process_cpu_s(p) for p in self.pids()))

    def memory_peak(self) -> int | None:
        return None

    def oom_kills(self) -> int:
        return 0

    def close(self) -> None:
        return None

    def describe(self) -> dict[str, object]:
        return {
            "mode": self.mode,
            "faithful": self.faithful,
            "cpu_limit": self.limits.cpu,
            "memory_limit_bytes": self.limits.memory_bytes,
        }


def _enter(groups: list[Path], command: list[str]) -> list[str]:
    # The shell writes its own pid into each group, then becomes the server: nothing runs
    # outside the group, and Python's unsafe preexec_fn is not needed.
    script = 'while [ "$1" != -- ]; do echo $$ > "$1/cgroup.procs"; shift; done; shift; exec "$@"'
    return ["sh", "-c", script, "sh", *map(str, groups), "--", *command]


def _write(path: Path, value: str) -> None:
    try:
        path.write_text(value)
    except OSError as error:
        raise PodError(f"cannot write {value!r} to {path}: {error}") from None


class CgroupV1(Pod):
    mode = "cgroup-v1"
    faithful = True

    def __init__(self, limits: Limits, name: str, root: Path, own: dict[str, str]) -> None:
        super().__init__(limits)
        self.groups: dict[str, Path] = {}
        try:
            for controller in ("cpu", "cpuacct", "memory"):
                mount = root / controller
                if not mount.is_dir():
                    raise PodError(f"no cgroup v1 {controller} controller at {mount}")
                group = mount / own.get(controller, "/").lstrip("/") / name
                group.mkdir()
                self.groups[controller] = group
            cpu, memory = self.groups["cpu"], self.groups["memory"]
            _write(cpu / "cpu.cfs_period_us", str(PERIOD_US))
            _write(cpu / "cpu.cfs_quota_us", str(limits.quota_us))
            _write(memory / "memory.limit_in_bytes", str(limits.memory_bytes))
            if (memory / "memory.memsw.limit_in_bytes").exists():  # pods do not swap
                _write(memory / "memory.memsw.limit_in_bytes", str(limits.memory_bytes))
        except (OSError, PodError):
            self.close()
            raise

    def wrap(self, command: list[str]) -> list[str]:
        return _enter(list(self.groups.values()), command)

    def pids(self) -> list[int]:
        text = (self.groups["memory"] / "cgroup.procs").read_text()
        return [int(p) for p in text.split()]

    def cpu(self) -> CpuSample:
        stat = read_kv(self.groups["cpu"] / "cpu.stat")
        usage_ns = int((self.groups["cpuacct"] / "cpuacct.usage").read_text())
        return CpuSample(
            usage_ns / 1e9,
            stat.get("nr_periods", 0),
            stat.get("nr_throttled", 0),
            stat.get("throttled_time", 0) / 1e9,
        )

    def memory_peak(self) -> int:
        return int((self.groups["memory"] / "memory.max_usage_in_bytes").read_text())

    def oom_kills(self) -> int:
        return read_kv(self.groups["memory"] / "memory.oom_control").get("oom_kill", 0)

    def close(self) -> None:
        for group in self.groups.values():
            _remove(group)


class CgroupV2(Pod):
    mode = "cgroup-v2"
    faithful = True

    def __init__(self, limits: Limits, name: str, mount: Path, own: str) -> None:
        super().__init__(limits)
        parent = mount / own.lstrip("/")
        wanted = {"cpu", "memory"}
        if not wanted <= set((mount / "cgroup.controllers").read_text().split()):
            raise PodError(f"{mount} does not offer the cpu and memory controllers")
        enabled = set((parent / "cgroup.subtree_control").read_text().split())
        if not wanted <= enabled:
            _write(parent / "cgroup.subtree_control", " ".join(f"+{c}" for c in wanted - enabled))
        self.group = parent / name
        self.group.mkdir()
        self.groups = {"unified": self.group}
        try:
            _write(self.group / "cpu.max", f"{limits.quota_us} {PERIOD_US}")
            _write(self.group / "memory.max", str(limits.memory_bytes))
            if (self.group / "memory.swap.max").exists():
                _write(self.group / "memory.swap.max", "0")
        except PodError:
            self.close()
            raise
        self._peak_seen = 0

    def wrap(self, command: list[str]) -> list[str]:
        return _enter([self.group], command)

    def pids(self) -> list[int]:
        return [int(p) for p in (self.group / "cgroup.procs").read_text().split()]

    def cpu(self) -> CpuSample:
        stat = read_kv(self.group / "cpu.stat")
        self.sample_memory()
        return CpuSample(
            stat.get("usage_usec", 0) / 1e6,
            stat.get("nr_periods", 0),
            stat.get("nr_throttled", 0),
            stat.get("throttled_usec", 0) / 1e6,
        )

    def sample_memory(self) -> None:
        current = int((self.group / "memory.current").read_text())
        self._peak_seen = max(self._peak_seen, current)

    def memory_peak(self) -> int:
        peak = self.group / "memory.peak"  # Linux 5.19+; else the largest value sampled
        return int(peak.read_text()) if peak.exists() else self._peak_seen

    def oom_kills(self) -> int:
        return read_kv(self.group / "memory.events").get("oom_kill", 0)

    def close(self) -> None:
        _remove(self.group)


class Pinned(Pod):
    """The fallback: ceil(limit) CPUs by affinity, no quota, no memory limit."""

    mode = "taskset"
    faithful = False

    def __init__(self, limits: Limits, cpus: list[int]) -> None:
        super().__init__(limits)
        self.cpus = cpus[: max(1, math.ceil(limits.cpu))]
        self.leader: int | None = None

    def wrap(self, command: list[str]) -> list[str]:
        return ["taskset", "-c", ",".join(map(str, self.cpus)), *command]

    def started(self, pid: int) -> None:
        self.leader = pid

    def pids(self) -> list[int]:
        return children(self.leader) if self.leader else []

    def memory_peak(self) -> int | None:
        peaks = [peak_rss_bytes(p) or 0 for p in self.pids()]
        return sum(peaks) or None

    def describe(self) -> dict[str, object]:
        return {**super().describe(), "cpus": self.cpus}


def _remove(group: Path) -> None:
    # The kernel refuses rmdir while a process is inside; the server has just been stopped.
    for _ in range(50):
        try:
            group.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError:
            time.sleep(0.1)


def open_pod(
    limits: Limits,
    name: str,
    say: Say,
    root: Path = CGROUP_ROOT,
    proc_cgroup: str | None = None,
    cpus: list[int] | None = None,
    allow_fallback: bool = True,
) -> Pod:
    """A cgroup v1 pod, else a v2 one, else (warning) taskset."""
    own = own_cgroups(proc_cgroup or Path("/proc/self/cgroup").read_text())
    problems = []
    if (root / "cpu").is_dir() and (root / "memory").is_dir():
        try:
            return CgroupV1(limits, name, root, own)
        except (OSError, PodError) as error:
            problems.append(f"cgroup v1: {error}")
    for mount in (root, root / "unified"):
        if (mount / "cgroup.controllers").exists():
            try:
                return CgroupV2(limits, name, mount, own.get("", "/"))
            except (OSError, PodError) as error:
                problems.append(f"cgroup v2 at {mount}: {error}")
    if not allow_fallback:
        raise PodError("; ".join(problems) or f"no cgroup hierarchy under {root}")
    pinned = Pinned(limits, cpus or sorted(os.sched_getaffinity(0)))
    say(
        f"WARNING: no writable cgroup ({'; '.join(problems) or 'none found'}): the server runs "
        f"under taskset on CPU {pinned.cpus} with no CPU quota and no memory limit. This is not "
        "a pod: the figures are not valid for --apply."
    )
    return pinned
