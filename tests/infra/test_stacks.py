"""Each committed stack, run under mocks: the properties the issue asks for, not mere existence."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from infra import harness
from infra.config import SECRET_KEYS

from .conftest import Obj, container, find, objects, pod_spec, run

Get = Callable[..., Obj]


def test_every_object_lives_in_the_stacks_namespace(stack: str, objs: list[Obj]) -> None:
    namespace = find(objs, "Namespace")["metadata"]["name"]
    assert namespace == {"dev": "blueprint-dev", "staging": "blueprint-staging"}.get(
        stack, "blueprint"
    )
    assert find(objs, "Namespace")["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == (
        "restricted"
    )
    assert {o["metadata"].get("namespace") for o in objs if o["kind"] != "Namespace"} == {namespace}


def test_kubernetes_resources_use_one_server_side_apply_provider(stack: str) -> None:
    resources = run(stack)
    (provider,) = [r for r in resources if r.type == "pulumi:providers:kubernetes"]
    assert provider.inputs["enableServerSideApply"] == "true"
    k8s = [r for r in resources if r.type.startswith("kubernetes:")]
    assert k8s
    assert all(r.provider and "pulumi:providers:kubernetes::k8s" in r.provider for r in k8s)


def test_deployment_leaves_replicas_to_the_autoscaler(stack: str, get: Get) -> None:
    deployment, hpa = get("Deployment", "api"), get("HorizontalPodAutoscaler", "api")
    assert "replicas" not in deployment["spec"]
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "api",
    }
    bounds = {"dev": (1, 2), "staging": (2, 4), "prod": (3, 10)}[stack]
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == bounds
    metrics = {m["resource"]["name"]: m["resource"]["target"] for m in hpa["spec"]["metrics"]}
    assert metrics["cpu"] == {
        "type": "Utilization",
        "averageUtilization": 65 if stack == "prod" else 70,
    }
    # No memory target anywhere: Python workers do not return memory, so a memory-scaled HPA
    # near a hard limit scales up and never back down (docs/deployment.md, "Autoscaling").
    assert "memory" not in metrics
    window = {"dev": 60, "staging": 300, "prod": 600}[stack]
    assert hpa["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"] == window


def test_probes_hit_the_services_health_paths(get: Get) -> None:
    api = container(get("Deployment", "api"))
    paths = {p: api[p]["httpGet"] for p in ("startupProbe", "livenessProbe", "readinessProbe")}
    assert paths == {
        "startupProbe": {"path": "/health/live", "port": "http"},
        "livenessProbe": {"path": "/health/live", "port": "http"},
        "readinessProbe": {"path": "/health/ready", "port": "http"},
    }
    assert api["ports"] == [{"name": "http", "containerPort": 8000, "protocol": "TCP"}]


def test_pods_are_hardened(stack: str, objs: list[Obj]) -> None:
    workloads = [o for o in objs if o["kind"] in ("Deployment", "StatefulSet", "Job")]
    assert workloads
    for workload in workloads:
        spec = pod_spec(workload)
        assert spec["automountServiceAccountToken"] is False
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert {"name": "tmp", "emptyDir": {"sizeLimit": "256Mi"}} in spec["volumes"]
        for c in spec["containers"]:
            context = c["securityContext"]
            assert context["runAsUser"] == 10001
            assert context["readOnlyRootFilesystem"] is True
            assert context["allowPrivilegeEscalation"] is False
            assert context["capabilities"] == {"drop": ["ALL"]}
            assert {"name": "tmp", "mountPath": "/tmp"} in c["volumeMounts"]
            limits, requests = c["resources"]["limits"], c["resources"]["requests"]
            assert set(limits) == set(requests) == {"cpu", "memory"}


def test_memory_is_base_plus_per_worker(stack: str, get: Get) -> None:
    workers = {"dev": 2, "staging": 2, "prod": 4}[stack]
    resources = container(get("Deployment", "api"))["resources"]
    expected = f"{64 + workers * 120}Mi"
    assert resources["requests"]["memory"] == resources["limits"]["memory"] == expected
    assert get("ConfigMap", "api-settings")["data"]["WEB_CONCURRENCY"] == str(workers)


def test_shutdown_outlasts_the_pause_and_gunicorns_drain(stack: str, get: Get) -> None:
    deployment = get("Deployment", "api")
    pause = container(deployment)["lifecycle"]["preStop"]["sleep"]["seconds"]
    graceful = int(get("ConfigMap", "api-settings")["data"]["GRACEFUL_TIMEOUT"])
    grace = pod_spec(deployment)["terminationGracePeriodSeconds"]
    assert (pause, graceful) == ((10, 20) if stack == "prod" else (5, 20))
    assert grace > pause + graceful


def test_rolling_update_never_drops_below_capacity(get: Get) -> None:
    deployment = get("Deployment", "api")
    assert deployment["spec"]["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
    }
    spread = pod_spec(deployment)["topologySpreadConstraints"]
    assert {s["topologyKey"] for s in spread} == {
        "topology.kubernetes.io/zone",
        "kubernetes.io/hostname",
    }
    assert all(
        s["labelSelector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]
        for s in spread
    )
    pdb = get("PodDisruptionBudget", "api")
    assert pdb["spec"] == {"maxUnavailable": 1, "selector": deployment["spec"]["selector"]}


def test_deployment_runs_the_pushed_digest(stack: str, get: Get) -> None:
    image = container(get("Deployment", "api"))["image"]
    resources = run(stack)
    built = [r for r in resources if r.type == "docker:index/image:Image"]
    if stack in ("dev", "prod"):  # CI-built, from config
        assert not built
        assert image == "ghcr.io/example/blueprint@sha256:" + "0" * 64
    else:
        (docker,) = built
        assert image == docker.outputs["repoDigest"]
        assert "@sha256:" in image
        assert docker.inputs["build"]["dockerfile"].endswith("Dockerfile")
    assert container(get("Job", "api-migrate"))["image"] == image
    assert container(get("Deployment", "api"))["imagePullPolicy"] == "IfNotPresent"


def test_migration_job_runs_first_with_the_same_settings(stack: str, get: Get) -> None:
    job, deployment = get("Job", "api-migrate"), get("Deployment", "api")
    migrate = container(job)
    assert migrate["command"] == ["python", "-m", "service", "migrate"]
    assert pod_spec(job)["restartPolicy"] == "Never"
    api = container(deployment)
    assert migrate["envFrom"] == api["envFrom"]
    assert migrate["env"] == api["env"]
    assert pod_spec(job)["volumes"] == pod_spec(deployment)["volumes"]
    (recorded,) = [
        r for r in run(stack) if r.type == "kubernetes:apps/v1:Deployment" and r.name == "api"
    ]
    assert any(
        urn.endswith("kubernetes:batch/v1:Job::api-migrate") for urn in recorded.dependencies
    )


def test_settings_split_between_configmap_and_secret(stack: str, get: Get) -> None:
    data = get("ConfigMap", "api-settings")["data"]
    secret = get("Secret", "api-secrets")
    assert set(secret["stringData"]) == {
        "DATABASE_URL",
        "REDIS_URL",
        "JWT_SECRET",
        "FIRST_ADMIN_PASSWORD",
    }
    assert not set(data) & set(secret["stringData"])
    values = " ".join(data.values())
    for value in secret["stringData"].values():
        assert value not in values
    assert (data["HOST"], data["PORT"]) == ("0.0.0.0", "8000")
    app_env = {"dev": "development", "staging": "staging", "prod": "production"}[stack]
    assert data["APP_ENV"] == app_env
    api = container(get("Deployment", "api"))
    assert api["envFrom"] == [{"configMapRef": {"name": "api-settings"}}]
    # Secrets as files (SECRETS_DIR), not environment variables.
    assert api["env"] == [{"name": "SECRETS_DIR", "value": "/run/secrets/app"}]
    assert {"name": "secrets", "mountPath": "/run/secrets/app", "readOnly": True} in api[
        "volumeMounts"
    ]


def test_in_cluster_postgres_and_redis_in_dev() -> None:
    objs = objects("dev")

    def get(kind: str, name: str | None = None) -> Obj:
        return find(objs, kind, name)

    postgres = get("StatefulSet", "postgres")
    db = container(postgres)
    assert db["args"] == ["-c", "max_connections=100"]
    assert {"name": "POSTGRES_PASSWORD_FILE", "value": "/etc/postgres/password"} in db["env"]
    claim = postgres["spec"]["volumeClaimTemplates"][0]
    assert claim["spec"]["resources"]["requests"]["storage"] == "1Gi"
    assert db["readinessProbe"]["exec"]["command"][0] == "pg_isready"
    assert get("Service", "postgres")["spec"]["clusterIP"] == "None"
    assert get("Deployment", "redis")["spec"]["replicas"] == 1
    urls = get("Secret", "api-secrets")["stringData"]
    assert urls["DATABASE_URL"] == (
        "postgresql://blueprint:generated-postgres-password@postgres.blueprint-dev.svc:5432/blueprint"
    )
    assert urls["REDIS_URL"] == "redis://:generated-redis-password@redis.blueprint-dev.svc:6379/0"
    assert urls["JWT_SECRET"] == "generated-jwt-secret"


def test_external_stores_in_prod_use_the_configured_secrets() -> None:
    objs = objects("prod")
    assert not [
        o
        for o in objs
        if o["kind"] == "StatefulSet" or o["metadata"]["name"] in ("postgres", "redis")
    ]
    urls = find(objs, "Secret", "api-secrets")["stringData"]
    assert urls["DATABASE_URL"] == harness.PLACEHOLDER_SECRETS["databaseUrl"]
    assert urls["REDIS_URL"] == harness.PLACEHOLDER_SECRETS["redisUrl"]
    assert urls["JWT_SECRET"] == harness.PLACEHOLDER_SECRETS["jwtSecret"]


def test_secret_values_reach_the_engine_as_secrets(stack: str) -> None:
    (secret,) = [
        r for r in run(stack) if r.type == "kubernetes:core/v1:Secret" and r.name == "api-secrets"
    ]
    assert harness.SECRET_SIG in secret.inputs["stringData"]


def _ingress_rule(policy: Obj) -> tuple[list[Any], list[Any]]:
    (rule,) = policy["spec"]["ingress"]
    return rule["from"], rule["ports"]


def test_network_policies_admit_only_the_expected_peers(
    stack: str, get: Get, objs: list[Obj]
) -> None:
    assert get("NetworkPolicy", "default-deny-ingress")["spec"] == {
        "podSelector": {},
        "policyTypes": ["Ingress"],
    }
    peers, ports = _ingress_rule(get("NetworkPolicy", "api-ingress"))
    controller = {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}
    }
    monitoring = {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}
    }
    assert peers == ([controller] if stack == "dev" else [controller, monitoring])
    assert ports == [{"port": 8000, "protocol": "TCP"}]
    stores = [
        o
        for o in objs
        if o["kind"] == "NetworkPolicy"
        and o["metadata"]["name"] in ("postgres-ingress", "redis-ingress")
    ]
    assert len(stores) == {"dev": 2, "staging": 1, "prod": 0}[stack]
    for policy in stores:
        peers, _ = _ingress_rule(policy)
        assert peers == [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "blueprint"}}}]
    # ...and the only pods with that label are the API and its Jobs (migrate, load-test unseed).
    clients = {
        o["kind"]
        for o in objs
        if o["kind"] in ("Deployment", "StatefulSet", "Job")
        and o["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/name"] == "blueprint"
    }
    assert clients == {"Deployment", "Job"}


def test_ingress_host_and_tls_per_stack(stack: str, get: Get) -> None:
    ingress = get("Ingress", "api")
    rule = ingress["spec"]["rules"][0]
    assert ingress["spec"]["ingressClassName"] == "nginx"
    assert rule["http"]["paths"][0]["backend"] == {
        "service": {"name": "api", "port": {"number": 80}}
    }
    assert get("Service", "api")["spec"]["ports"] == [
        {"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}
    ]
    if stack == "dev":
        assert "tls" not in ingress["spec"]
        assert "annotations" not in ingress["metadata"]
    else:
        assert ingress["spec"]["tls"] == [{"hosts": [rule["host"]], "secretName": "api-tls"}]
        issuer = "letsencrypt-prod" if stack == "prod" else "letsencrypt-staging"
        assert ingress["metadata"]["annotations"] == {"cert-manager.io/cluster-issuer": issuer}


def test_loadbalancer_mode_replaces_the_ingress() -> None:
    objs = objects("dev", exposure="loadbalancer", loadBalancerSourceRanges="203.0.113.0/24")
    assert not [o for o in objs if o["kind"] == "Ingress"]
    public = find(objs, "Service", "api-public")["spec"]
    assert public["type"] == "LoadBalancer"
    assert public["loadBalancerSourceRanges"] == ["203.0.113.0/24"]
    peers, _ = _ingress_rule(find(objs, "NetworkPolicy", "api-ingress"))
    assert peers == [{"ipBlock": {"cidr": "203.0.113.0/24"}}]


def test_secrets_not_in_plain_text_where_they_could_leak(stack: str) -> None:
    rendered = harness.kubernetes_objects(run(stack))
    text = repr(rendered)
    for value in (*harness.PLACEHOLDER_SECRETS.values(), "generated-"):
        assert value not in text
    assert set(find(rendered, "Secret", "api-secrets")["stringData"].values()) == {harness.REDACTED}
    assert not {f"blueprint:{k}" for k in SECRET_KEYS} & set(harness.stack_config(stack))
