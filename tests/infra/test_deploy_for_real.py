"""What a real engine and cluster would hit (issue 12): options, annotations, wiring, objects.

Provider and engine behaviour these tests rely on is cited where the program sets it
(infra/components/*.py); here the program is held to it under mocks.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any

import pytest

from infra import harness
from infra.components import app as app_component
from infra.config import ConfigError
from infra.harness import Recorded

from .conftest import Obj, container, find, objects, pod_spec, run
from .test_config import parse_with

DOCS = harness.REPO_ROOT / "docs" / "deployment.md"


def recorded(stack: str, type_suffix: str, name: str, **overrides: str) -> Recorded:
    (match,) = [
        r for r in run(stack, **overrides) if r.type.endswith(type_suffix) and r.name == name
    ]
    return match


def depends_on(resource: Recorded, type_suffix: str, name: str) -> bool:
    return any(urn.endswith(f"{type_suffix}::{name}") for urn in resource.dependencies)


def minutes(duration: str) -> float:
    value, unit = re.fullmatch(r"(\d+)([smh])", duration).groups()  # type: ignore[union-attr]
    return int(value) * {"s": 1 / 60, "m": 1, "h": 60}[unit]


# --- 2 and 5: nothing by hand; pull secrets managed; a local stack apart from CI's ------------


def test_the_guide_creates_nothing_by_hand() -> None:
    # pulumi-kubernetes >= 4.29 creates client-side and fails with AlreadyExists on an object
    # made beforehand (CHANGELOG 4.29.0, pulumi/pulumi-kubernetes#2926; upsertExistingObjects
    # defaults to false). So no step of the guide may create what the program manages.
    commands = re.findall(r"```bash\n(.*?)```", DOCS.read_text(), flags=re.S)
    assert commands
    for block in commands:
        assert not re.search(r"kubectl\s+(-n\s+\S+\s+)?(create|apply)\b", block), block


@pytest.mark.parametrize("stack", ["dev", "staging", "prod"])
def test_private_registry_stacks_get_a_pull_secret_the_program_manages(stack: str) -> None:
    objs = objects(stack)
    pull = find(objs, "Secret", "ghcr-pull")
    assert pull["type"] == "kubernetes.io/dockerconfigjson"
    assert '"ghcr.io"' in pull["stringData"][".dockerconfigjson"]
    for workload in ("Deployment", "Job"):
        spec = pod_spec(find(objs, workload, "api" if workload == "Deployment" else "api-migrate"))
        assert spec["imagePullSecrets"] == [{"name": "ghcr-pull"}]
    # Wired by the Secret's output: the pods never start before it exists.
    deployment = recorded(stack, "apps/v1:Deployment", "api")
    assert depends_on(deployment, "core/v1:Secret", "ghcr-pull")


def test_a_pull_secret_needs_its_credentials() -> None:
    with pytest.raises(ConfigError, match="pullUsername"):
        parse_with("dev", pullUsername="")
    with pytest.raises(ConfigError, match="pullPassword"):
        parse_with("dev", {})


def test_the_local_stack_is_not_the_ci_dev_stack() -> None:
    local, dev = parse_with("local"), parse_with("dev")
    assert local.image.registry == "localhost:5001"
    assert dev.image.ref is not None
    assert "localhost" not in dev.image.ref
    assert "localtest.me" not in (dev.exposure.host or "")
    assert local.namespace != dev.namespace


# --- 3: a failed migration Job does not block later deploys ------------------------------------


@pytest.mark.parametrize("stack", ["dev", "staging", "prod"])
def test_migration_job_is_replaced_when_unready_and_pulumi_outwaits_its_deadline(
    stack: str,
) -> None:
    job = find(objects(stack), "Job", "api-migrate")
    assert job["metadata"]["annotations"]["pulumi.com/replaceUnready"] == "true"
    deadline_minutes = job["spec"]["activeDeadlineSeconds"] / 60
    options = recorded(stack, "batch/v1:Job", "api-migrate").options["customTimeouts"]
    assert minutes(options["create"]) > deadline_minutes
    assert minutes(options["update"]) > deadline_minutes


# --- 6: HTTP-01 solver reachable ---------------------------------------------------------------


@pytest.mark.parametrize("stack", ["staging", "prod"])
def test_cert_manager_solver_is_reachable_from_the_controller(stack: str) -> None:
    policy = find(objects(stack), "NetworkPolicy", "acme-http01-solver-ingress")
    spec = policy["spec"]
    assert spec["podSelector"] == {"matchLabels": {"acme.cert-manager.io/http01-solver": "true"}}
    (rule,) = spec["ingress"]
    assert rule["ports"] == [{"port": 8089, "protocol": "TCP"}]
    assert {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}
    } in rule["from"]


def test_no_solver_policy_without_cert_manager() -> None:
    names = {o["metadata"]["name"] for o in objects("dev") if o["kind"] == "NetworkPolicy"}
    assert "acme-http01-solver-ingress" not in names


# --- 7: a storage change is refused, not reported as success -----------------------------------


def test_in_cluster_postgres_is_protected_and_keeps_its_claim() -> None:
    statefulset = recorded("dev", "apps/v1:StatefulSet", "postgres")
    # The engine refuses to replace or delete a protected resource, so a changed
    # volumeClaimTemplate (immutable: replacement) fails the update instead of re-binding.
    assert statefulset.options["protect"] is True
    spec = find(objects("dev"), "StatefulSet", "postgres")["spec"]
    assert spec["persistentVolumeClaimRetentionPolicy"] == {
        "whenDeleted": "Retain",
        "whenScaled": "Retain",
    }
    # Stacks destroyed at will opt out, in their stack file.
    assert recorded("e2e", "apps/v1:StatefulSet", "postgres").options["protect"] is False
    assert "Resizing Postgres" in DOCS.read_text()


# --- 8: wired by outputs, await explicit -------------------------------------------------------


def test_ingress_waits_for_the_service_and_the_service_for_the_pods() -> None:
    ingress = recorded("dev", "networking.k8s.io/v1:Ingress", "api")
    assert depends_on(ingress, "core/v1:Service", "api")
    assert depends_on(ingress, "apps/v1:Deployment", "api")
    service = recorded("dev", "core/v1:Service", "api")
    assert depends_on(service, "apps/v1:Deployment", "api")


def test_exposure_await_is_per_stack() -> None:
    ingress = find(objects("dev"), "Ingress")
    assert "pulumi.com/skipAwait" not in ingress["metadata"].get("annotations", {})
    assert recorded("dev", "networking.k8s.io/v1:Ingress", "api").options["customTimeouts"] == {
        "create": "10m",
        "update": "10m",
    }
    skipped = find(objects("dev", awaitExposure="false"), "Ingress")
    assert skipped["metadata"]["annotations"]["pulumi.com/skipAwait"] == "true"
    lb = objects("dev", exposure="loadbalancer", awaitExposure="false", awaitTimeoutMinutes="3")
    public = find(lb, "Service", "api-public")
    assert public["metadata"]["annotations"]["pulumi.com/skipAwait"] == "true"
    options = recorded(
        "dev",
        "core/v1:Service",
        "api-public",
        exposure="loadbalancer",
        awaitExposure="false",
        awaitTimeoutMinutes="3",
    ).options
    assert options["customTimeouts"] == {"create": "3m", "update": "3m"}


# --- 9: peers that are not pods ----------------------------------------------------------------


def test_ingress_peers_take_cidrs() -> None:
    objs = objects("dev", ingressPeerCidrs="10.128.0.0/20,35.191.0.0/16")
    peers = find(objs, "NetworkPolicy", "api-ingress")["spec"]["ingress"][0]["from"]
    assert {"ipBlock": {"cidr": "10.128.0.0/20"}} in peers
    assert {"ipBlock": {"cidr": "35.191.0.0/16"}} in peers


# --- 10: tuning does not rerun migrations; old ReplicaSets keep their settings objects --------


def test_tuning_leaves_the_job_alone_and_rolls_the_pods() -> None:
    before, after = objects("dev"), objects("dev", memoryPerWorkerMi="150", logLevel="INFO")
    assert find(before, "Job", "api-migrate")["spec"] == find(after, "Job", "api-migrate")["spec"]
    old_api, new_api = find(before, "Deployment", "api"), find(after, "Deployment", "api")
    assert container(old_api)["envFrom"] == container(new_api)["envFrom"]  # fixed names
    assert container(old_api)["envFrom"] == [{"configMapRef": {"name": "api-settings"}}]
    annotations: list[dict[str, Any]] = [
        d["spec"]["template"]["metadata"]["annotations"] for d in (old_api, new_api)
    ]
    assert annotations[0]["blueprint/settings"] != annotations[1]["blueprint/settings"]
    assert annotations[0]["blueprint/secrets"] == annotations[1]["blueprint/secrets"]


def test_a_new_database_or_image_reruns_the_job() -> None:
    base = find(objects("staging"), "Job", "api-migrate")
    moved = find(
        harness.kubernetes_objects(
            harness.run(
                "staging",
                secrets={
                    **harness.PLACEHOLDER_SECRETS,
                    "databaseUrl": "postgresql://blueprint:x@other.example.internal:5432/b",
                },
            ),
            secret=None,
        ),
        "Job",
        "api-migrate",
    )
    assert base["spec"] != moved["spec"]
    new_image = find(
        objects("prod", image="ghcr.io/example/blueprint@sha256:" + "1" * 64), "Job", "api-migrate"
    )
    assert new_image["spec"] != find(objects("prod"), "Job", "api-migrate")["spec"]


# --- 11: no memory-based autoscaling ------------------------------------------------------------


def test_no_stack_scales_on_memory() -> None:
    for stack in ("local", "dev", "e2e", "staging", "prod"):
        assert parse_with(stack).app.hpa_memory_target is None, stack


# --- 12: the probe outlasts the check ------------------------------------------------------------


@pytest.mark.parametrize("stack", ["dev", "staging", "prod"])
def test_readiness_probe_timeout_exceeds_the_checks_own(stack: str) -> None:
    objs = objects(stack)
    probe = container(find(objs, "Deployment", "api"))["readinessProbe"]
    check = float(find(objs, "ConfigMap", "api-settings")["data"]["READY_CHECK_TIMEOUT"])
    assert probe["timeoutSeconds"] > check
    assert app_component.READY_PROBE_TIMEOUT > app_component.READY_CHECK_TIMEOUT


# --- hardening -----------------------------------------------------------------------------------


def test_ingress_routes_only_the_public_paths() -> None:
    def paths(objs: list[Obj]) -> set[str]:
        rule = find(objs, "Ingress")["spec"]["rules"][0]
        return {p["path"] for p in rule["http"]["paths"]}

    prod = paths(objects("prod"))
    assert {"/api/", "/.well-known/", "/health/live"} <= prod
    assert not {"/", "/metrics", "/health/ready", "/docs", "/openapi.json"} & prod
    assert {"/docs", "/openapi.json"} <= paths(objects("dev"))  # docsPublic: true


def test_prometheus_scrapes_in_cluster() -> None:
    template = find(objects("prod"), "Deployment", "api")["spec"]["template"]
    assert template["metadata"]["annotations"]["prometheus.io/scrape"] == "true"
    assert template["metadata"]["annotations"]["prometheus.io/path"] == "/metrics"


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_app_egress_is_dns_stores_and_cidrs_without_cloud_metadata(stack: str) -> None:
    policy = find(objects(stack), "NetworkPolicy", "api-egress")["spec"]
    assert policy["policyTypes"] == ["Egress"]
    assert policy["podSelector"] == {"matchLabels": {"app.kubernetes.io/name": "blueprint"}}
    dns, *rest = policy["egress"]
    assert {"port": 53, "protocol": "UDP"} in dns["ports"]
    blocks = [peer["ipBlock"] for rule in rest for peer in rule["to"] if "ipBlock" in peer]
    metadata = ipaddress.ip_network("169.254.169.254/32")
    for block in blocks:
        if metadata.subnet_of(ipaddress.ip_network(block["cidr"])):  # type: ignore[arg-type]
            assert "169.254.169.254/32" in block["except"]
    selectors = [
        peer["podSelector"] for rule in rest for peer in rule["to"] if "podSelector" in peer
    ]
    if stack == "dev":  # in-cluster stores, by selector
        components = {s["matchLabels"]["app.kubernetes.io/component"] for s in selectors}
        assert components == {"database", "cache"}
    else:
        assert selectors == []


def test_redis_evicts_counters_nearest_expiry_below_its_memory_limit() -> None:
    conf = find(objects("dev"), "Secret", "redis-config")["stringData"]["redis.conf"]
    assert "maxmemory-policy volatile-ttl" in conf
    assert "maxmemory 96mb" in conf  # three quarters of the default 128Mi limit
    assert parse_with("dev", redisMaxmemoryMi="64").redis.maxmemory_mi == 64
    with pytest.raises(ConfigError, match="below the container's memory limit"):
        parse_with("dev", redisMaxmemoryMi="128")


def test_redis_image_is_a_patched_release() -> None:
    image = parse_with("dev").redis.image
    # 7.4.6 carries the fix for CVE-2025-49844 (Lua use-after-free, remote code execution).
    major, minor, patch = map(int, re.match(r"redis:(\d+)\.(\d+)\.(\d+)", image).groups())  # type: ignore[union-attr]
    assert (major, minor, patch) >= (7, 4, 6)


def test_postgres_has_shared_memory_and_cheap_volume_ownership() -> None:
    statefulset = find(objects("dev"), "StatefulSet", "postgres")
    spec = pod_spec(statefulset)
    assert {"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": "256Mi"}} in spec[
        "volumes"
    ]
    assert {"name": "shm", "mountPath": "/dev/shm"} in container(statefulset)["volumeMounts"]
    assert spec["securityContext"]["fsGroupChangePolicy"] == "OnRootMismatch"


def test_a_kubeconfig_given_as_content_is_a_secret() -> None:
    content = "apiVersion: v1\nkind: Config\n"
    (provider,) = [
        r for r in run("dev", kubeconfig=content) if r.type == "pulumi:providers:kubernetes"
    ]
    wire = provider.inputs["kubeconfig"]
    assert isinstance(wire, dict)
    assert harness.SECRET_SIG in wire  # encrypted in the state, masked in every diff
    assert wire["value"] == content


def test_one_run_can_adopt_existing_objects_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The guide's adoption step: the SDK reads PULUMI_K8S_UPSERT_EXISTING_OBJECTS when the
    # program builds its provider; without it, creates of existing objects fail (the default).
    def provider_inputs() -> dict[str, Any]:
        (provider,) = [r for r in harness.run("local") if r.type == "pulumi:providers:kubernetes"]
        return provider.inputs

    monkeypatch.delenv("PULUMI_K8S_UPSERT_EXISTING_OBJECTS", raising=False)
    assert provider_inputs().get("upsertExistingObjects") in (None, "false")
    monkeypatch.setenv("PULUMI_K8S_UPSERT_EXISTING_OBJECTS", "true")
    assert provider_inputs()["upsertExistingObjects"] == "true"


def test_every_stack_states_its_await_behaviour() -> None:
    for stack in ("local", "dev", "e2e", "staging", "prod"):
        config = harness.stack_config(stack)
        assert "blueprint:awaitExposure" in config, stack
        assert "blueprint:awaitTimeoutMinutes" in config, stack
