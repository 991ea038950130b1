"""The CrossGuard rules, without the CLI: pure checks, their CrossGuard wrappers, and the stacks."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from pulumi_policy import (
    PolicyCustomTimeouts,
    PolicyResource,
    PolicyResourceOptions,
    ResourceValidationArgs,
    StackValidationArgs,
)

from infra import harness
from infra.policy import rules

from .conftest import STACKS, run

DEPLOYMENT = "kubernetes:apps/v1:Deployment"
HPA = "kubernetes:autoscaling/v2:HorizontalPodAutoscaler"
CONFIGMAP = "kubernetes:core/v1:ConfigMap"


def _opts() -> PolicyResourceOptions:
    return PolicyResourceOptions(False, [], None, [], PolicyCustomTimeouts(0, 0, 0), [])


def urn(stack: str, resource_type: str, name: str) -> str:
    return f"urn:pulumi:{stack}::blueprint::{resource_type}::{name}"


def violations(
    resource_type: str, props: dict[str, Any], stack: str = "dev"
) -> dict[str, list[str]]:
    """Run every resource policy through CrossGuard's own argument type; policy -> messages."""
    found: dict[str, list[str]] = {}
    for policy in rules.RESOURCE_POLICIES:
        args = ResourceValidationArgs(
            resource_type, props, urn(stack, resource_type, "x"), "x", _opts(), None
        )
        messages: list[str] = []

        def report(message: str, _urn: str | None, into: list[str] = messages) -> None:
            into.append(message)

        policy.validate(args, report)
        if messages:
            found[policy.name] = messages
    return found


def stack_violations(resources: list[tuple[str, dict[str, Any]]]) -> list[str]:
    policy_resources = [
        PolicyResource(t, p, urn("dev", t, str(i)), str(i), _opts(), None, None, [], {})
        for i, (t, p) in enumerate(resources)
    ]
    messages: list[str] = []
    for policy in rules.STACK_POLICIES:
        policy.validate(StackValidationArgs(policy_resources), lambda m, _u: messages.append(m))
    return messages


def recorded(stack: str) -> list[tuple[str, dict[str, Any]]]:
    """What the policy engine would see: the program's resource inputs."""
    return [(r.type, harness.unwrap(r.inputs, "secret")) for r in run(stack)]


def the_api(stack: str = "prod") -> dict[str, Any]:
    (props,) = [p for t, p in recorded(stack) if t == DEPLOYMENT and p["metadata"]["name"] == "api"]
    return copy.deepcopy(props)


@pytest.mark.parametrize("stack", STACKS)
def test_every_committed_stack_passes_every_policy(stack: str) -> None:
    for resource_type, props in recorded(stack):
        assert violations(resource_type, props, stack) == {}, (resource_type, props.get("metadata"))
    assert stack_violations(recorded(stack)) == []


def test_latest_or_missing_tag_is_refused() -> None:
    api = the_api()
    api["spec"]["template"]["spec"]["containers"][0]["image"] = "ghcr.io/example/blueprint:latest"
    assert violations(DEPLOYMENT, api) == {
        "image-pinned": [
            "container 'api': image 'ghcr.io/example/blueprint:latest' uses the 'latest' tag"
        ]
    }
    api["spec"]["template"]["spec"]["containers"][0]["image"] = "localhost:5001/blueprint"
    assert "has no tag" in violations(DEPLOYMENT, api)["image-pinned"][0]


def test_missing_limits_are_named() -> None:
    api = the_api()
    del api["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert violations(DEPLOYMENT, api) == {
        "resources-set": [
            "container 'api': limits.cpu is not set",
            "container 'api': limits.memory is not set",
        ]
    }


def test_root_and_escalation_are_refused() -> None:
    api = the_api()
    spec = api["spec"]["template"]["spec"]
    del spec["securityContext"]["runAsNonRoot"]
    del spec["containers"][0]["securityContext"]["runAsNonRoot"]
    spec["containers"][0]["securityContext"]["allowPrivilegeEscalation"] = True
    assert violations(DEPLOYMENT, api) == {
        "non-root": [
            "container 'api': runAsNonRoot is not true",
            "container 'api': allowPrivilegeEscalation is not false",
        ]
    }


def test_writable_root_capabilities_and_token_are_refused() -> None:
    api = the_api()
    spec = api["spec"]["template"]["spec"]
    spec["automountServiceAccountToken"] = True
    spec["containers"][0]["securityContext"].update(readOnlyRootFilesystem=False, capabilities={})
    assert violations(DEPLOYMENT, api)["locked-down"] == [
        "container 'api': readOnlyRootFilesystem is not true",
        "container 'api': capabilities are not all dropped",
        "container 'api': the pod mounts a service-account token",
    ]


def test_a_serving_container_without_probes_is_refused() -> None:
    api = the_api()
    del api["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]
    assert violations(DEPLOYMENT, api) == {
        "probes-present": ["container 'api' serves a port but has no readinessProbe"]
    }


def test_hpa_minimum_of_two_applies_to_production_only() -> None:
    hpa = {"spec": {"minReplicas": 1.0, "maxReplicas": 4.0}}  # wire form: numbers as floats
    assert violations(HPA, hpa, "prod") == {
        "hpa-minimum-in-production": ["minReplicas is 1; production keeps at least 2 replicas"]
    }
    assert violations(HPA, hpa, "dev") == {}
    assert rules.stack_of(urn("prod", HPA, "api")) == "prod"


def test_secrets_in_a_configmap_are_refused() -> None:
    data = {"LOG_LEVEL": "INFO", "JWT_SECRET": "x", "CACHE": "redis://:hunter2@cache:6379/0"}
    assert violations(CONFIGMAP, {"data": data}) == {
        "no-secrets-in-configmaps": [
            "ConfigMap key 'JWT_SECRET' looks like a secret; put it in a Secret",
            "ConfigMap key 'CACHE' looks like a secret; put it in a Secret",
        ]
    }


def test_replicas_on_an_autoscaled_deployment_are_refused() -> None:
    api = the_api()
    api["spec"]["replicas"] = 3
    hpa = {"spec": {"scaleTargetRef": {"kind": "Deployment", "name": "api"}}}
    assert stack_violations([(DEPLOYMENT, api), (HPA, hpa)]) == [
        "Deployment 'api' sets replicas but an HPA scales it"
    ]
    assert stack_violations([(DEPLOYMENT, api)]) == []  # no HPA: replicas are fine


def test_unknown_values_during_preview_are_not_violations() -> None:
    api = the_api()
    api["spec"]["template"]["spec"]["containers"][0]["image"] = None  # digest not known yet
    assert violations(DEPLOYMENT, api) == {}
