"""--apply: the two keys change in Pulumi.<stack>.yaml, everything else (comments too) stays."""

from __future__ import annotations

from pathlib import Path

import pytest

from loadtests.sizing.apply import StackError, apply, parse_cpu, pod_cpu, read_config

REPO = Path(__file__).resolve().parents[2]

STACK = """\
# The dev stack: one small pod.
config:
  # Gunicorn workers per pod (make size measures this).
  blueprint:workers: "3"
  blueprint:cpuLimit: 500m   # per pod
  blueprint:hpaCpuTarget: "70"
  blueprint:image:
    repository: ghcr.io/example/blueprint  # pushed by CI
    tag: latest
  blueprint:dbPassword:
    secure: v1:abc123
"""


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "Pulumi.dev.yaml").write_text(STACK)
    return tmp_path


def test_apply_rewrites_the_two_keys_and_keeps_the_rest(root: Path) -> None:
    path = apply("dev", workers=2, hpa_cpu_target=76, root=root)

    expected = STACK.replace('workers: "3"', 'workers: "2"').replace('Target: "70"', 'Target: "76"')
    assert path.read_text() == expected


def test_apply_adds_missing_keys_as_strings(root: Path) -> None:
    (root / "Pulumi.prod.yaml").write_text("# prod\nconfig:\n  blueprint:replicas: 3  # min\n")

    apply("prod", workers=2, hpa_cpu_target=None, root=root)

    text = (root / "Pulumi.prod.yaml").read_text()
    assert text == '# prod\nconfig:\n  blueprint:replicas: 3  # min\n  blueprint:workers: "2"\n'
    assert read_config("prod", root)["blueprint:workers"] == "2"


def test_apply_keeps_integer_values_integers(root: Path) -> None:
    (root / "Pulumi.int.yaml").write_text("config:\n  blueprint:workers: 3\n")

    apply("int", workers=4, hpa_cpu_target=80, root=root)

    assert read_config("int", root) == {"blueprint:workers": 4, "blueprint:hpaCpuTarget": "80"}


def test_apply_refuses_an_unknown_stack(root: Path) -> None:
    with pytest.raises(StackError, match=r"unknown stack 'staging'.*\['dev'\]"):
        apply("staging", workers=2, hpa_cpu_target=70, root=root)
    assert sorted(p.name for p in root.iterdir()) == ["Pulumi.dev.yaml"]


def test_apply_refuses_a_file_that_is_not_a_stack(root: Path) -> None:
    (root / "Pulumi.odd.yaml").write_text("- a list\n")

    with pytest.raises(StackError, match="not a Pulumi stack file"):
        apply("odd", workers=2, hpa_cpu_target=70, root=root)


def test_pod_cpu_reads_the_stack_or_the_pulumi_programs_defaults(root: Path) -> None:
    config = read_config("dev", root)

    assert pod_cpu(config, "limit") == (0.5, False)
    assert pod_cpu(config, "request") == (0.25, True)  # infra/config.py's default, 250m
    assert pod_cpu({}, "limit") == (1, True)


@pytest.mark.parametrize(("value", "cpus"), [("1", 1), ("500m", 0.5), (2, 2), ("1.5", 1.5)])
def test_parse_cpu(value: object, cpus: float) -> None:
    assert parse_cpu(value) == cpus


def test_parse_cpu_refuses_zero() -> None:
    with pytest.raises(ValueError, match="positive"):
        parse_cpu("0m")


@pytest.mark.parametrize("stack_path", sorted(REPO.glob("Pulumi.*.yaml")), ids=lambda p: p.name)
def test_apply_on_a_copy_of_each_real_stack_changes_two_lines(
    stack_path: Path, tmp_path: Path
) -> None:
    copy = tmp_path / stack_path.name
    copy.write_text(stack_path.read_text())
    stack = stack_path.name.removeprefix("Pulumi.").removesuffix(".yaml")

    apply(stack, workers=7, hpa_cpu_target=61, root=tmp_path)

    before, after = stack_path.read_text().splitlines(), copy.read_text().splitlines()
    changed = [new for old, new in zip(before, after, strict=False) if old != new]
    added = after[len(before) :]
    assert [line.split(":")[1] for line in changed + added] == ["workers", "hpaCpuTarget"]
    config = read_config(stack, tmp_path)
    assert str(config["blueprint:workers"]) == "7"
    assert str(config["blueprint:hpaCpuTarget"]) == "61"
