"""Run the program offline under Pulumi mocks with a stack's real ``Pulumi.<stack>.yaml`` config.

Used by ``infra.render`` and the tests: no CLI, no cluster, no Docker engine. The mocks record
every resource's inputs (wire form) and fill in what a provider would (auto-names, the pushed
image digest, generated passwords).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi
import yaml
from pulumi.runtime.mocks import MockMonitor

from infra.config import PROJECT, SECRET_KEYS, key, required_secrets

REPO_ROOT = Path(__file__).resolve().parent.parent
SECRET_SIG = "4dabf18193072939515e22adb298388d"  # noqa: S105 - marks a secret value in Pulumi's wire form
REDACTED = "<redacted: a Pulumi secret>"
# Stand-ins for secrets a stack requires but the repo never holds (they come from `--secret`).
PLACEHOLDER_SECRETS = {
    "jwtSecret": "placeholder-jwt-secret-0123456789abcdef0123456789",
    "databaseUrl": "postgresql://blueprint:placeholder@db.example.internal:5432/blueprint",
    "redisUrl": "redis://:placeholder@cache.example.internal:6379/0",
    "pullPassword": "placeholder-read-only-registry-token",
}


@dataclass
class Recorded:
    type: str
    name: str
    inputs: dict[str, Any]
    outputs: dict[str, Any]
    provider: str | None
    dependencies: list[str] = field(default_factory=list)  # URNs this one waits for
    # The resource options the engine acts on: protect, retainOnDelete, customTimeouts, ...
    options: dict[str, Any] = field(default_factory=dict)


def _as_config(value: object) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value)  # numbers, booleans (true/false), lists and objects


def stack_config(stack: str) -> dict[str, str]:
    """The stack file's `blueprint:` keys as the strings Pulumi hands a program."""
    path = REPO_ROOT / f"Pulumi.{stack}.yaml"
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    # `secure:` values are ciphertext only the stack's secrets provider can read: left out, so
    # a required one is replaced by its placeholder like a secret given in CI.
    return {
        k: _as_config(v)
        for k, v in (data.get("config") or {}).items()
        if not (isinstance(v, dict) and set(v) == {"secure"})
    }


def unwrap(value: Any, secret: Any = None) -> Any:
    """Wire form -> plain data: floats that are whole become ints; secrets become ``secret``."""
    if isinstance(value, dict):
        if SECRET_SIG in value:
            return unwrap(value.get("value"), secret) if secret is None else secret
        return {k: unwrap(v, secret) for k, v in value.items()}
    if isinstance(value, list):
        return [unwrap(v, secret) for v in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


class RecordingMocks(pulumi.runtime.Mocks):
    def __init__(self) -> None:
        self.resources: list[Recorded] = []

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict[str, Any]]:
        outputs = dict(args.inputs)
        if args.typ.startswith("kubernetes:") and "metadata" in outputs:
            metadata = dict(outputs["metadata"])
            metadata["name"] = metadata.get("name") or args.name  # Pulumi would add a suffix
            outputs["metadata"] = metadata
        elif args.typ == "docker:index/image:Image":
            repository = str(outputs["imageName"]).rsplit(":", 1)[0]
            digest = hashlib.sha256(args.name.encode()).hexdigest()
            outputs["repoDigest"] = f"{repository}@sha256:{digest}"
        elif args.typ == "random:index/randomPassword:RandomPassword":
            outputs["result"] = f"generated-{args.name}"
        elif args.typ == "random:index/randomString:RandomString":  # lower-case hex of its length
            length = int(outputs["length"])
            outputs["result"] = hashlib.sha256(args.name.encode()).hexdigest()[:length]
        self.resources.append(
            Recorded(args.typ, args.name, dict(args.inputs), outputs, args.provider)
        )
        return f"{args.name}-id", outputs

    def call(self, args: pulumi.runtime.MockCallArgs) -> tuple[dict[str, Any], Any]:
        return {}, None


class RecordingMonitor(MockMonitor):
    """Also records each registration's dependencies (explicit depends_on and implicit ones)."""

    def __init__(self, mocks: RecordingMocks) -> None:
        super().__init__(mocks)
        self.dependencies: dict[tuple[str, str], list[str]] = {}
        self.options: dict[tuple[str, str], dict[str, Any]] = {}

    def RegisterResource(self, request: Any) -> Any:  # the gRPC method's name
        self.dependencies[(request.type, request.name)] = list(request.dependencies)
        timeouts = request.customTimeouts
        self.options[(request.type, request.name)] = {
            "protect": request.protect,
            "retainOnDelete": request.retainOnDelete,
            "deleteBeforeReplace": request.deleteBeforeReplace,
            "ignoreChanges": list(request.ignoreChanges),
            "customTimeouts": {
                k: v for k in ("create", "update", "delete") if (v := getattr(timeouts, k))
            },
        }
        return super().RegisterResource(request)


def run(
    stack: str,
    overrides: dict[str, str] | None = None,
    *,
    secrets: dict[str, str] | None = None,
) -> list[Recorded]:
    """Run the program for ``stack``; ``overrides`` (plain) and ``secrets`` use bare key names.

    Secrets the stack requires but no one gave are filled with PLACEHOLDER_SECRETS.
    """
    from infra.program import main

    values = stack_config(stack)
    values.update({key(k): v for k, v in (overrides or {}).items()})
    plain = {k.removeprefix(f"{PROJECT}:"): v for k, v in values.items()}
    given = dict(secrets or {})
    for name in required_secrets(plain):
        given.setdefault(name, PLACEHOLDER_SECRETS[name])
    unknown = set(given) - set(SECRET_KEYS)
    if unknown:
        raise ValueError(f"not secret keys: {sorted(unknown)}")
    values.update({key(k): v for k, v in given.items()})

    mocks = RecordingMocks()
    monitor = RecordingMonitor(mocks)
    pulumi.runtime.set_mocks(mocks, project=PROJECT, stack=stack, preview=False, monitor=monitor)
    pulumi.runtime.set_all_config(values, secret_keys=[key(k) for k in given])
    pulumi.runtime.test(main)()
    for resource in mocks.resources:
        resource.dependencies = monitor.dependencies.get((resource.type, resource.name), [])
        resource.options = monitor.options.get((resource.type, resource.name), {})
    return mocks.resources


def kubernetes_objects(resources: list[Recorded], secret: Any = REDACTED) -> list[dict[str, Any]]:
    """The Kubernetes objects as they would be applied, in apply order: names filled, numbers
    normalised, secrets redacted (a Secret's values always are, whatever their origin)."""
    objects = []
    for resource in resources:
        if not resource.type.startswith("kubernetes:") or "kind" not in resource.outputs:
            continue
        obj = unwrap(resource.outputs, secret)
        if obj["kind"] == "Secret" and secret is not None:
            keys = unwrap(resource.outputs).get("stringData", {})
            obj["stringData"] = dict.fromkeys(keys, secret)
        objects.append(obj)
    return sorted(objects, key=_apply_order)


# The order one would apply them in (Helm's install order); registration order is not stable.
KIND_ORDER = (
    "Namespace",
    "NetworkPolicy",
    "Secret",
    "ConfigMap",
    "Service",
    "StatefulSet",
    "Job",
    "Deployment",
    "HorizontalPodAutoscaler",
    "PodDisruptionBudget",
    "Ingress",
)


def _apply_order(obj: dict[str, Any]) -> tuple[int, str]:
    kind = obj["kind"]
    rank = KIND_ORDER.index(kind) if kind in KIND_ORDER else len(KIND_ORDER)
    return rank, obj["metadata"]["name"]
