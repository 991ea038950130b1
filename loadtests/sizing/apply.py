"""Read the pod's CPU from a Pulumi stack file, and write the sizing result back into it.

`Pulumi.<stack>.yaml` is edited with ruamel.yaml's round-trip mode, so its comments, key order
and quoting survive; only the two keys the Pulumi program reads change.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.scalarstring import DoubleQuotedScalarString
from ruamel.yaml.util import load_yaml_guess_indent

PROJECT = "blueprint"
WORKERS_KEY = f"{PROJECT}:workers"
HPA_KEY = f"{PROJECT}:hpaCpuTarget"
# The pod's CPU as infra/config.py reads it, with its defaults when the stack does not say.
CPU_KEYS = {"limit": (f"{PROJECT}:cpuLimit", "1"), "request": (f"{PROJECT}:cpuRequest", "250m")}


class StackError(ValueError):
    """An unknown stack, or a stack file this module cannot read."""


def stack_file(stack: str, root: Path = Path()) -> Path:
    path = root / f"Pulumi.{stack}.yaml"
    if not path.is_file():
        known = sorted(p.name[len("Pulumi.") : -len(".yaml")] for p in root.glob("Pulumi.*.yaml"))
        raise StackError(f"unknown stack {stack!r}: no {path} (known stacks: {known or 'none'})")
    return path


def _load(path: Path) -> tuple[YAML, Any]:
    yaml = YAML()  # round-trip
    yaml.preserve_quotes = True
    yaml.width = 4096  # never fold a long value (image digests) onto a new line
    text = path.read_text()
    _, indent, dash_offset = load_yaml_guess_indent(text)
    if dash_offset is not None:  # keep the file's list style ("  key:\n    - item")
        yaml.indent(mapping=2, sequence=indent, offset=dash_offset)
    doc = yaml.load(text)
    if doc is None:
        doc = {}
    if not isinstance(doc, dict) or not isinstance(doc.get("config", {}), dict):
        raise StackError(f"{path} is not a Pulumi stack file (no `config:` mapping)")
    return yaml, doc


def read_config(stack: str, root: Path = Path()) -> dict[str, Any]:
    """The stack's `config:` mapping (empty when it has none)."""
    return dict(_load(stack_file(stack, root))[1].get("config") or {})


def parse_cpu(value: object) -> float:
    """A Kubernetes CPU quantity ("1", "1.5", "500m", 2) in CPUs."""
    text = str(value).strip()
    cpus = float(text[:-1]) / 1000 if text.endswith("m") else float(text)
    if cpus <= 0:
        raise ValueError(f"CPU quantity must be positive, not {value!r}")
    return cpus


def pod_cpu(config: dict[str, Any], kind: str = "limit") -> tuple[float, bool]:
    """The pod's CPU limit or request in CPUs, and whether it is the Pulumi program's default."""
    key, default = CPU_KEYS[kind]
    value = config.get(key)
    return parse_cpu(default if value is None else value), value is None


def apply(stack: str, workers: int, hpa_cpu_target: int | None, root: Path = Path()) -> Path:
    """Write the worker count (and the HPA target, when derived) into Pulumi.<stack>.yaml."""
    path = stack_file(stack, root)
    yaml, doc = _load(path)
    if "config" not in doc or doc["config"] is None:
        doc["config"] = {}
    config = doc["config"]
    updates = {WORKERS_KEY: workers, HPA_KEY: hpa_cpu_target}
    for key, value in updates.items():
        if value is None:
            continue
        # Keep the file's own style for the value: Pulumi's CLI writes strings ("3").
        config[key] = (
            value if isinstance(config.get(key), int) else DoubleQuotedScalarString(str(value))
        )
    with path.open("w") as out:
        yaml.dump(doc, out)
    return path
