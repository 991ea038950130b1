"""Shared Kubernetes building blocks: one helper per idea, so every workload is hardened alike."""

from __future__ import annotations

import base64
import ipaddress
import json
from collections.abc import Callable
from typing import Any, TypeVar

import pulumi
import pulumi_kubernetes as k8s
import pulumi_random as random

from infra.config import PROJECT, Resources

R = TypeVar("R", bound=pulumi.CustomResource)

UID = 10001  # the service image's user; every pod here runs as this non-root UID
TMP = "/tmp"  # noqa: S108 - an emptyDir, the only writable path besides declared volumes
# Room for the Prometheus multiprocess files (PROMETHEUS_MULTIPROC_DIR=/tmp/prometheus, one set
# per Gunicorn worker, new ones after each recycle): a pod exceeding it is evicted.
TMP_SIZE = "256Mi"
# Pods labelled like this may open connections to Postgres and Redis: the API and its one-off
# Jobs (the migrations, the load-test seed; app.job).
CLIENT_LABELS = {"app.kubernetes.io/name": PROJECT}
PASSWORD_LENGTH = 40  # characters of every generated secret (letters and digits: ~238 bits)


def password(name: str, parent: pulumi.Resource) -> pulumi.Output[str]:
    """A generated secret, stable across updates (kept, encrypted, in the stack's state).

    Letters and digits only, so it can sit in a URL without escaping.
    """
    generated = random.RandomPassword(
        name, length=PASSWORD_LENGTH, special=False, opts=pulumi.ResourceOptions(parent=parent)
    )
    return pulumi.Output.secret(generated.result)


def labels(name: str, component: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": name,
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/part-of": PROJECT,
        "app.kubernetes.io/managed-by": "pulumi",
    }


def selector(pod_labels: dict[str, str]) -> dict[str, str]:
    """The stable subset of labels that selectors use (name and component)."""
    keys = ("app.kubernetes.io/name", "app.kubernetes.io/component")
    return {k: pod_labels[k] for k in keys}


def checkov_skips(**reasons: str) -> dict[str, str]:
    """Annotations that skip a checkov check on one object, the reason beside it."""
    return {
        f"checkov.io/skip{i}": f"{check}={reason}"
        for i, (check, reason) in enumerate(reasons.items(), start=1)
    }


def create(
    cls: Callable[..., R],
    name: str,
    parent: pulumi.Resource,
    namespace: pulumi.Input[str] | None,
    obj_labels: dict[str, str],
    *,
    named: bool = True,
    annotations: dict[str, str] | None = None,
    opts: pulumi.ResourceOptions | None = None,
    **fields: Any,
) -> R:
    """Create a Kubernetes object as a child of ``parent``.

    ``named=False`` leaves metadata.name to Pulumi's auto-naming (a suffix per replacement), for
    objects that are replaced rather than updated: ConfigMaps, Secrets and the migration Job, so a
    change gets a new name and the pods referencing it roll.
    """
    metadata: dict[str, Any] = {"labels": obj_labels}
    if named:
        metadata["name"] = name
    if namespace is not None:
        metadata["namespace"] = namespace
    if annotations:
        metadata["annotations"] = annotations
    options = pulumi.ResourceOptions.merge(pulumi.ResourceOptions(parent=parent), opts)
    return cls(name, metadata=metadata, opts=options, **fields)


def resources(spec: Resources) -> dict[str, Any]:
    """Requests and limits; memory request = limit so the scheduler never overcommits memory."""
    return {
        "requests": {"cpu": spec.cpu, "memory": spec.memory},
        "limits": {"cpu": spec.cpu_limit, "memory": spec.memory},
    }


def container(
    name: str,
    image: pulumi.Input[str],
    spec: Resources,
    mounts: list[dict[str, Any]] | None = None,
    **fields: Any,
) -> dict[str, Any]:
    """A container that cannot escalate: non-root, read-only root, no capabilities."""
    return {
        "name": name,
        "image": image,
        "imagePullPolicy": pull_policy(image),
        "resources": resources(spec),
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": UID,
            "runAsGroup": UID,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "privileged": False,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumeMounts": [{"name": "tmp", "mountPath": TMP}, *(mounts or [])],
        **fields,
    }


def pull_policy(image: pulumi.Input[str]) -> pulumi.Output[str]:
    """A digest never changes content, so a cached copy is fine; a tag is re-checked every start."""
    return pulumi.Output.from_input(image).apply(
        lambda ref: "IfNotPresent" if "@sha256:" in ref else "Always"
    )


def pod(
    pod_labels: dict[str, str],
    containers: list[dict[str, Any]],
    volumes: list[dict[str, Any]] | None = None,
    **fields: Any,
) -> dict[str, Any]:
    """A pod template: no service-account token, RuntimeDefault seccomp, an emptyDir for /tmp."""
    return {
        "metadata": {"labels": pod_labels},
        "spec": {
            "automountServiceAccountToken": False,
            "enableServiceLinks": False,
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": UID,
                "runAsGroup": UID,
                "fsGroup": UID,
                # Re-own a volume's files only when its root is not ours yet: a large volume
                # is not walked on every start.
                "fsGroupChangePolicy": "OnRootMismatch",
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": containers,
            "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": TMP_SIZE}}, *(volumes or [])],
            **fields,
        },
    }


def tcp_probes(port: str) -> dict[str, Any]:
    probe = {"tcpSocket": {"port": port}, "periodSeconds": 10, "timeoutSeconds": 2}
    return {"livenessProbe": probe, "readinessProbe": {**probe, "periodSeconds": 5}}


def secret_volume(name: str, secret_name: pulumi.Input[str]) -> dict[str, Any]:
    return {"name": name, "secret": {"secretName": secret_name, "defaultMode": 0o440}}


def secret_env(secret_name: pulumi.Input[str], *keys: str) -> list[dict[str, Any]]:
    """Environment variables named after the Secret's keys, each read from it (secretKeyRef)."""
    return [
        {"name": k, "valueFrom": {"secretKeyRef": {"name": secret_name, "key": k}}} for k in keys
    ]


def service(
    parent: pulumi.Resource,
    namespace: pulumi.Input[str],
    pod_labels: dict[str, str],
    ports: dict[str, int],
    *,
    name: str | None = None,
    headless: bool = False,
    annotations: dict[str, str] | None = None,
    opts: pulumi.ResourceOptions | None = None,
    **spec: Any,
) -> pulumi.CustomResource:
    """A Service for the selected pods; ``ports`` maps each container port's name to its port."""
    return create(
        k8s.core.v1.Service,
        name or pod_labels["app.kubernetes.io/name"],
        parent,
        namespace,
        pod_labels,
        annotations=annotations,
        opts=opts,
        spec={
            "selector": selector(pod_labels),
            "ports": [
                {"name": target, "port": port, "targetPort": target, "protocol": "TCP"}
                for target, port in ports.items()
            ],
            **({"clusterIP": "None"} if headless else {}),
            **spec,
        },
    )


def allow_ingress(
    parent: pulumi.Resource,
    namespace: pulumi.Input[str],
    pod_labels: dict[str, str],
    port: int,
    peers: list[dict[str, Any]],
    *,
    name: str | None = None,
    match: dict[str, str] | None = None,
) -> pulumi.CustomResource:
    """A NetworkPolicy: only ``peers`` may reach ``port`` of the selected pods (``pod_labels``'
    selector, or ``match`` for pods someone else labels)."""
    policy_name = name or f"{pod_labels['app.kubernetes.io/name']}-ingress"
    return create(
        k8s.networking.v1.NetworkPolicy,
        policy_name,
        parent,
        namespace,
        pod_labels,
        spec={
            "podSelector": {"matchLabels": match or selector(pod_labels)},
            "policyTypes": ["Ingress"],
            "ingress": [{"from": peers, "ports": [{"port": port, "protocol": "TCP"}]}],
        },
    )


def pods_peer(match_labels: dict[str, str]) -> dict[str, Any]:
    return {"podSelector": {"matchLabels": match_labels}}


def namespace_peer(namespace: str) -> dict[str, Any]:
    return {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}}}


def ip_peer(cidr: str, excluded: tuple[str, ...] = ()) -> dict[str, Any]:
    """An ipBlock peer; ``excluded`` networks inside ``cidr`` are cut out of it."""
    network = ipaddress.ip_network(cidr, strict=False)
    cut = [
        e
        for e in excluded
        if (inner := ipaddress.ip_network(e)).version == network.version
        and inner.subnet_of(network)  # type: ignore[arg-type]
    ]
    return {"ipBlock": {"cidr": cidr, **({"except": cut} if cut else {})}}


# Instance metadata endpoints (AWS, GCP, Azure, OpenStack: 169.254.169.254; AWS's IPv6 one):
# a pod that reaches them can read the node's cloud credentials.
CLOUD_METADATA = ("169.254.169.254/32", "fd00:ec2::254/128")
DNS_PEER = {
    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
    "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
}


def allow_egress(
    parent: pulumi.Resource,
    namespace: pulumi.Input[str],
    pod_labels: dict[str, str],
    rules: list[dict[str, Any]],
    *,
    name: str,
) -> pulumi.CustomResource:
    """A NetworkPolicy: the selected pods may open connections to DNS and ``rules`` only."""
    dns = {
        "to": [DNS_PEER],
        "ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}],
    }
    return create(
        k8s.networking.v1.NetworkPolicy,
        name,
        parent,
        namespace,
        pod_labels,
        spec={
            "podSelector": {"matchLabels": pod_labels},
            "policyTypes": ["Egress"],
            "egress": [dns, *rules],
        },
    )


def registry_secret(
    parent: pulumi.Resource,
    namespace: pulumi.Input[str],
    name: str,
    server: str,
    username: str,
    token: pulumi.Input[str],
    opts: pulumi.ResourceOptions | None = None,
) -> k8s.core.v1.Secret:
    """A docker-registry Secret (``kubernetes.io/dockerconfigjson``) the pods pull with."""

    def dockerconfig(secret: str) -> str:
        auth = base64.b64encode(f"{username}:{secret}".encode()).decode()
        return json.dumps({"auths": {server: {"username": username, "auth": auth}}})

    return create(
        k8s.core.v1.Secret,
        name,
        parent,
        namespace,
        labels(PROJECT, "image-pull"),
        opts=opts,
        type="kubernetes.io/dockerconfigjson",
        string_data={".dockerconfigjson": pulumi.Output.secret(token).apply(dockerconfig)},
    )
