"""--apply: refused unless the run can be trusted, validated by infra.config, atomic, traced."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from loadtests.sizing.apply import ApplyRefused, apply, edit, refusals, updates, write_atomic
from loadtests.sizing.stack import REPO

STACK = """\
config:
  blueprint:namespace: blueprint
  # Sizing: `make size ARGS="--apply <stack>"` rewrites these.
  blueprint:workers: 4
  blueprint:hpaCpuTarget: "65" # percent of cpuRequest
  blueprint:cpuRequest: "1"
"""


def report(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "settings": {"stack": "prod"},
        "validity": {"valid_for_apply": True, "reasons": []},
        "recommendation": {"workers": 2, "reason": "2 workers: ..."},
        "hpa": {"target": 58},
        "memory": {"base_mi": 64, "per_worker_mi": 144},
    }
    base.update(changes)
    return base


def test_edit_changes_only_the_sized_keys_and_leaves_provenance() -> None:
    values = {"workers": 2, "hpaCpuTarget": 58, "memoryBaseMi": 64, "memoryPerWorkerMi": 144}

    once = edit(STACK, values, "2026-12-01 by make size, commit abc, sizing.json sha256 01")
    twice = edit(once, values, "2026-12-02 by make size, commit def, sizing.json sha256 02")

    assert once == (
        "config:\n"
        "  blueprint:namespace: blueprint\n"
        '  # Sizing: `make size ARGS="--apply <stack>"` rewrites these.\n'
        "  # sizing: 2026-12-01 by make size, commit abc, sizing.json sha256 01\n"
        "  blueprint:workers: 2\n"
        "  blueprint:memoryBaseMi: 64\n"
        "  blueprint:memoryPerWorkerMi: 144\n"
        '  blueprint:hpaCpuTarget: "58" # percent of cpuRequest\n'
        '  blueprint:cpuRequest: "1"\n'
    )
    # A second apply replaces the provenance line rather than stacking another.
    assert twice == once.replace("2026-12-01", "2026-12-02").replace("abc", "def").replace(
        "sha256 01", "sha256 02"
    )


def test_refusals_name_every_reason() -> None:
    assert refusals(report(), "prod") == []
    assert refusals(report(), "dev") == ["the run measured stack 'prod', not 'dev'"]
    noisy = report(validity={"valid_for_apply": False, "reasons": ["noisy: ..."]})
    assert refusals(noisy, "prod") == ["noisy: ..."]
    tied = report(recommendation={"workers": None, "reason": "1 and 2 cannot be told apart"})
    assert refusals(tied, "prod") == [
        "no worker count is recommended: 1 and 2 cannot be told apart"
    ]


def test_updates_leave_out_what_was_not_derived() -> None:
    assert updates(report(hpa={"target": None}, memory=None)) == {"workers": 2}


@pytest.fixture
def stacks(tmp_path: Path) -> Path:
    for name in ("Pulumi.prod.yaml", "Pulumi.dev.yaml"):
        shutil.copy(REPO / name, tmp_path / name)
    return tmp_path


def test_apply_writes_the_measured_stack_atomically(stacks: Path) -> None:
    before = (stacks / "Pulumi.prod.yaml").read_text()

    done = apply("prod", report(), "today", root=stacks)

    after = (stacks / "Pulumi.prod.yaml").read_text()
    assert done.written
    assert "  blueprint:workers: 2\n" in after
    assert "  blueprint:hpaCpuTarget: 58\n" in after
    assert "  # sizing: today\n" in after
    assert "-  blueprint:workers: 4\n" in done.diff
    assert "+  # sizing: today\n+  blueprint:workers: 2\n" in done.diff
    # Everything else is byte for byte what it was.
    changed = {"  blueprint:workers: 4", "  blueprint:hpaCpuTarget: 65"}
    assert [line for line in before.splitlines() if line not in changed] == [
        line for line in after.splitlines() if line in before.splitlines()
    ]
    assert [p.name for p in stacks.iterdir() if p.name.startswith(".")] == []  # no temp left


def test_dry_run_shows_the_diff_and_writes_nothing(stacks: Path) -> None:
    before = (stacks / "Pulumi.prod.yaml").read_text()

    done = apply("prod", report(), "today", root=stacks, dry_run=True)

    assert not done.written
    assert "+  blueprint:workers: 2" in done.diff
    assert (stacks / "Pulumi.prod.yaml").read_text() == before


def test_apply_refuses_what_infra_config_refuses(stacks: Path) -> None:
    # prod: maxReplicas 10 + surge 1, pools of 5 + 5, 500 connections: 5 workers is 550 + 20.
    before = (stacks / "Pulumi.prod.yaml").read_text()

    with pytest.raises(ApplyRefused, match="connection budget exceeded"):
        apply("prod", report(recommendation={"workers": 5, "reason": ""}), "x", root=stacks)

    assert (stacks / "Pulumi.prod.yaml").read_text() == before


def test_apply_refuses_another_stacks_measurement(stacks: Path) -> None:
    with pytest.raises(ApplyRefused, match="the run measured stack 'dev', not 'prod'"):
        apply("prod", report(settings={"stack": "dev"}), "x", root=stacks)


def test_a_failed_write_leaves_the_file_as_it_was(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "Pulumi.x.yaml"
    path.write_text("old\n")

    def fail(*_: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr("loadtests.sizing.apply.os.replace", fail)
    with pytest.raises(OSError, match="disk full"):
        write_atomic(path, "new\n")

    assert path.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["Pulumi.x.yaml"]
