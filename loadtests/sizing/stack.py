"""What a stack's pod is: its config through infra.config, its server environment, its limits.

The server's environment is the Dockerfile's ENV overlaid with `settings_env(app, exposure)`,
the function the Pulumi program puts in the pod's ConfigMap; the sizing run then overrides only
what a measurement on this machine must (see run.server_env).
"""

from __future__ import annotations

import json
import os
import re
import shlex
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import yaml

from infra.components.app import settings_env
from infra.config import PROJECT, StackConfig, parse, required_secrets
from infra.harness import PLACEHOLDER_SECRETS

REPO = Path(__file__).resolve().parents[2]
MIB = 1024 * 1024


class StackError(ValueError):
    """An unknown stack, or a stack file that is not a Pulumi stack file."""


def stack_file(stack: str, root: Path = REPO) -> Path:
    path = root / f"Pulumi.{stack}.yaml"
    if not path.is_file():
        known = sorted(p.name[len("Pulumi.") : -len(".yaml")] for p in root.glob("Pulumi.*.yaml"))
        raise StackError(f"unknown stack {stack!r}: no {path} (known stacks: {known or 'none'})")
    return path


def _as_config(value: object) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def config_values(text: str) -> dict[str, str]:
    """A stack file's `blueprint:` keys, bare, as the strings Pulumi hands the program."""
    data = yaml.safe_load(text) or {}
    if not isinstance(data, dict) or not isinstance(data.get("config") or {}, dict):
        raise StackError("not a Pulumi stack file (no `config:` mapping)")
    prefix = f"{PROJECT}:"
    return {
        k.removeprefix(prefix): _as_config(v)
        for k, v in (data.get("config") or {}).items()
        if k.startswith(prefix)
    }


def parse_values(stack: str, values: dict[str, str]) -> StackConfig:
    """infra.config.parse with placeholders for the secrets the repo never holds; raises
    infra.config.ConfigError (the connection budget included) like `pulumi up` would."""
    secrets = {name: PLACEHOLDER_SECRETS[name] for name in required_secrets(values)}
    return parse(stack, values, secrets)


def load_stack(stack: str, root: Path = REPO) -> StackConfig:
    return parse_values(stack, config_values(stack_file(stack, root).read_text()))


def parse_cpu(value: str) -> float:
    """A Kubernetes CPU quantity ("1", "1.5", "500m") in CPUs."""
    text = str(value).strip()
    cpus = float(text[:-1]) / 1000 if text.endswith("m") else float(text)
    if cpus <= 0:
        raise ValueError(f"CPU quantity must be positive, not {value!r}")
    return cpus


def with_workers(config: StackConfig, workers: int) -> StackConfig:
    return replace(config, app=replace(config.app, workers=workers))


def memory_limit_bytes(config: StackConfig, workers: int) -> int:
    """The pod's memory limit as the stack derives it for `workers` (base + per worker)."""
    return with_workers(config, workers).app.memory_mi * MIB


def dockerfile_env(text: str) -> dict[str, str]:
    """The final stage's ENV (KEY=VALUE pairs, continuation lines joined); values that refer to
    other variables ($PATH) are left out: this machine's own apply."""
    stages = re.split(r"(?im)^FROM\s", text)
    joined = re.sub(r"\\\n", " ", stages[-1])
    env: dict[str, str] = {}
    for line in joined.splitlines():
        match = re.match(r"\s*ENV\s+(.*)", line, re.IGNORECASE)
        if not match:
            continue
        for pair in shlex.split(match.group(1), comments=True):
            name, sep, value = pair.partition("=")
            if sep and "$" not in value:
                env[name] = value
    return env


def pod_env(
    config: StackConfig, workers: int, dockerfile: Path = REPO / "Dockerfile"
) -> dict[str, Any]:
    """The Dockerfile's ENV (as this machine applies it), then the stack's settings for
    `workers`, as the pod would see them."""
    app = with_workers(config, workers).app
    return {**image_env_here(dockerfile), **settings_env(app, config.exposure)}


def machine_lib_dirs() -> list[Path]:
    """Where this machine's Debian packages put their shared libraries."""
    return [Path(f"/usr/lib/{os.uname().machine}-linux-gnu"), Path("/usr/lib")]


def preloads_here(
    image_preload: str, lib_dirs: Sequence[Path] | None = None
) -> tuple[list[str], list[str]]:
    """(found, missing): the image's LD_PRELOAD libraries, by file name, on this machine.

    The image links each at a path of its own (the Dockerfile's /usr/local/lib link); the
    same Debian package puts it in its architecture's directory here."""
    found, missing = [], []
    for library in image_preload.replace(":", " ").split():
        name = Path(library).name
        path = next((d / name for d in lib_dirs or machine_lib_dirs() if (d / name).exists()), None)
        if path is None:
            missing.append(name)
        else:
            found.append(str(path))
    return found, missing


def on_this_machine(env: dict[str, str], lib_dirs: Sequence[Path] | None = None) -> dict[str, str]:
    """The image's ENV as a server process on this machine gets it: LD_PRELOAD names this
    machine's copies, and a library it lacks is left out (ld.so would print an error for
    every process started; `preloads_here` says which are missing)."""
    if "LD_PRELOAD" not in env:
        return env
    found, _ = preloads_here(env["LD_PRELOAD"], lib_dirs)
    rest = {k: v for k, v in env.items() if k != "LD_PRELOAD"}
    return rest | ({"LD_PRELOAD": " ".join(found)} if found else {})


def missing_preloads(dockerfile: Path = REPO / "Dockerfile") -> list[str]:
    """The image's LD_PRELOAD libraries this machine lacks (preloads_here)."""
    return preloads_here(dockerfile_env(dockerfile.read_text()).get("LD_PRELOAD", ""))[1]


def image_env_here(dockerfile: Path = REPO / "Dockerfile") -> dict[str, str]:
    """The Dockerfile's ENV, on this machine (on_this_machine)."""
    return on_this_machine(dockerfile_env(dockerfile.read_text()))
