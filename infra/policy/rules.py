"""The policy rules as pure functions over (resource type, input props, stack name).

Each ``check_*`` returns violation messages (empty = compliant); ``RESOURCE_POLICIES`` and
``STACK_POLICIES`` wrap them for CrossGuard. Constructing these wrappers is cheap; only the
``PolicyPack`` in ``__main__`` starts a server, so tests exercise everything here without the CLI.
Props arrive in Kubernetes' own camelCase shape (the resource inputs).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from pulumi_policy import (
    EnforcementLevel,
    ReportViolation,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)

PRODUCTION_STACKS = frozenset({"prod", "production"})
K8S = "kubernetes:"
TEMPLATED = {
    f"{K8S}apps/v1:{kind}" for kind in ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet")
} | {f"{K8S}batch/v1:Job"}
LONG_RUNNING = {t for t in TEMPLATED if not t.endswith(":Job")}
HPA = f"{K8S}autoscaling/v2:HorizontalPodAutoscaler"
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|PRIVATE_KEY|DATABASE_URL|REDIS_URL|API_KEY", re.I)
CREDENTIALS_IN_URL = re.compile(r"://[^/@\s]*:[^/@\s]+@")

Check = Callable[[str, Mapping[str, Any], str], list[str]]


def stack_of(urn: str) -> str:
    """urn:pulumi:<stack>::<project>::<type>::<name> -> <stack>."""
    return urn.split("::", 1)[0].split(":")[-1]


def pod_spec(resource_type: str, props: Mapping[str, Any]) -> Mapping[str, Any] | None:
    spec = props.get("spec") or {}
    if resource_type in TEMPLATED:
        return (spec.get("template") or {}).get("spec") or {}
    if resource_type == f"{K8S}batch/v1:CronJob":
        template = ((spec.get("jobTemplate") or {}).get("spec") or {}).get("template") or {}
        return template.get("spec") or {}
    if resource_type == f"{K8S}core/v1:Pod":
        return spec
    return None


def containers(spec: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
    yield from spec.get("initContainers") or []
    yield from spec.get("containers") or []


def _per_container(
    rule: Callable[[Mapping[str, Any], Mapping[str, Any]], list[str]],
) -> Check:
    """Lift a (pod spec, container) rule to a resource check, prefixing the container's name."""

    def check(resource_type: str, props: Mapping[str, Any], stack: str) -> list[str]:
        spec = pod_spec(resource_type, props)
        if spec is None:
            return []
        return [
            f"container {c.get('name')!r}: {problem}"
            for c in containers(spec)
            for problem in rule(spec, c)
        ]

    return check


def _image_pinned(_: Mapping[str, Any], c: Mapping[str, Any]) -> list[str]:
    image = c.get("image")
    if not isinstance(image, str):  # unknown until the image is pushed (preview)
        return []
    if "@sha256:" in image:
        return []
    tag = image.rsplit("/", 1)[-1].partition(":")[2]
    if not tag:
        return [f"image {image!r} has no tag; pin a version or digest"]
    if tag == "latest":
        return [f"image {image!r} uses the 'latest' tag"]
    return []


def _resources_set(_: Mapping[str, Any], c: Mapping[str, Any]) -> list[str]:
    resources = c.get("resources") or {}
    return [
        f"{kind}.{name} is not set"
        for kind in ("requests", "limits")
        for name in ("cpu", "memory")
        if not (resources.get(kind) or {}).get(name)
    ]


def _effective(spec: Mapping[str, Any], c: Mapping[str, Any], field: str) -> Any:
    """A container's security setting, falling back to the pod's."""
    own = (c.get("securityContext") or {}).get(field)
    return own if own is not None else (spec.get("securityContext") or {}).get(field)


def _non_root(spec: Mapping[str, Any], c: Mapping[str, Any]) -> list[str]:
    problems = []
    if _effective(spec, c, "runAsNonRoot") is not True:
        problems.append("runAsNonRoot is not true")
    if _effective(spec, c, "runAsUser") == 0:
        problems.append("runAsUser is 0 (root)")
    if (c.get("securityContext") or {}).get("allowPrivilegeEscalation") is not False:
        problems.append("allowPrivilegeEscalation is not false")
    return problems


def _locked_down(spec: Mapping[str, Any], c: Mapping[str, Any]) -> list[str]:
    context = c.get("securityContext") or {}
    problems = []
    if context.get("readOnlyRootFilesystem") is not True:
        problems.append("readOnlyRootFilesystem is not true")
    if "ALL" not in ((context.get("capabilities") or {}).get("drop") or []):
        problems.append("capabilities are not all dropped")
    if (_effective(spec, c, "seccompProfile") or {}).get("type") != "RuntimeDefault":
        problems.append("seccompProfile is not RuntimeDefault")
    if spec.get("automountServiceAccountToken") is not False:
        problems.append("the pod mounts a service-account token")
    return problems


check_image_pinned = _per_container(_image_pinned)
check_resources_set = _per_container(_resources_set)
check_non_root = _per_container(_non_root)
check_locked_down = _per_container(_locked_down)


def check_probes(resource_type: str, props: Mapping[str, Any], stack: str) -> list[str]:
    """Long-running containers that serve a port need liveness and readiness probes."""
    if resource_type not in LONG_RUNNING:
        return []
    spec = pod_spec(resource_type, props) or {}
    return [
        f"container {c.get('name')!r} serves a port but has no {probe}"
        for c in spec.get("containers") or []
        if c.get("ports")
        for probe in ("livenessProbe", "readinessProbe")
        if not c.get(probe)
    ]


def check_hpa_minimum(resource_type: str, props: Mapping[str, Any], stack: str) -> list[str]:
    if resource_type != HPA or stack not in PRODUCTION_STACKS:
        return []
    minimum = (props.get("spec") or {}).get("minReplicas", 1)
    if isinstance(minimum, int | float) and minimum < 2:
        return [f"minReplicas is {int(minimum)}; production keeps at least 2 replicas"]
    return []


def check_configmap_secrets(resource_type: str, props: Mapping[str, Any], stack: str) -> list[str]:
    if resource_type != f"{K8S}core/v1:ConfigMap":
        return []
    return [
        f"ConfigMap key {name!r} looks like a secret; put it in a Secret"
        for name, value in (props.get("data") or {}).items()
        if SECRET_NAME.search(name) or (isinstance(value, str) and CREDENTIALS_IN_URL.search(value))
    ]


def check_replicas_owned_by_hpa(resources: Sequence[tuple[str, Mapping[str, Any]]]) -> list[str]:
    """A Deployment an HPA scales must not set spec.replicas (each apply would fight the HPA)."""
    scaled = {
        ((props.get("spec") or {}).get("scaleTargetRef") or {}).get("name")
        for resource_type, props in resources
        if resource_type == HPA
    }
    return [
        f"Deployment {name!r} sets replicas but an HPA scales it"
        for resource_type, props in resources
        if resource_type == f"{K8S}apps/v1:Deployment"
        and (name := (props.get("metadata") or {}).get("name")) in scaled
        and "replicas" in (props.get("spec") or {})
    ]


RESOURCE_CHECKS: dict[str, tuple[str, Check]] = {
    "image-pinned": ("Images carry a version tag or digest, never 'latest'.", check_image_pinned),
    "resources-set": (
        "Every container sets CPU and memory requests and limits.",
        check_resources_set,
    ),
    "non-root": ("Containers run as non-root and cannot escalate.", check_non_root),
    "locked-down": (
        "Read-only root, all capabilities dropped, RuntimeDefault seccomp, no SA token.",
        check_locked_down,
    ),
    "probes-present": ("Serving containers have liveness and readiness probes.", check_probes),
    "hpa-minimum-in-production": ("Production HPAs keep at least 2 replicas.", check_hpa_minimum),
    "no-secrets-in-configmaps": (
        "Secrets live in Secrets, not ConfigMaps.",
        check_configmap_secrets,
    ),
}


def _resource_policy(name: str, description: str, check: Check) -> ResourceValidationPolicy:
    def validate(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
        for message in check(args.resource_type, args.props, stack_of(args.urn)):
            report_violation(message, None)

    return ResourceValidationPolicy(
        name=name,
        description=description,
        validate=validate,
        enforcement_level=EnforcementLevel.MANDATORY,
    )


def _validate_stack(args: StackValidationArgs, report_violation: ReportViolation) -> None:
    pairs = [(r.resource_type, r.props) for r in args.resources]
    for message in check_replicas_owned_by_hpa(pairs):
        report_violation(message, None)


RESOURCE_POLICIES = [
    _resource_policy(name, description, check)
    for name, (description, check) in RESOURCE_CHECKS.items()
]
STACK_POLICIES = [
    StackValidationPolicy(
        name="hpa-owns-replicas",
        description="A Deployment scaled by an HPA leaves spec.replicas unset.",
        validate=_validate_stack,
        enforcement_level=EnforcementLevel.MANDATORY,
    )
]
