"""The service: settings, migration Job, Deployment, Service, autoscaler, disruption budget, policy.

The ConfigMap and Secret carry exactly the service's Settings names (tests/infra/test_contract.py
checks them against service/settings.py without this package importing the service). ``Runtime``
is what every pod of the service's image shares, so a one-off command (``job``: the migrations
here, the load-test seed in loadtest.py) runs exactly like the server.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, replace
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from infra.components.k8s import (
    CLIENT_LABELS,
    CLOUD_METADATA,
    allow_egress,
    allow_ingress,
    container,
    create,
    ip_peer,
    labels,
    password,
    pod,
    secret_volume,
    selector,
    service,
)
from infra.config import PROJECT, AppConfig, ExposureConfig, Resources

NAME = "api"
PORT = 8000  # the container's PORT
SERVICE_PORT = 80
SECRETS_DIR = "/run/secrets/app"  # files named after the variables; read by service.settings
MIGRATE_COMMAND = ["python", "-m", "service", "migrate"]
GRACE_MARGIN = 5  # seconds past preStop + Gunicorn's graceful timeout before SIGKILL
LIVE, READY = "/health/live", "/health/ready"
POD_LABELS = labels(PROJECT, NAME)
# The readiness check's own bound (READY_CHECK_TIMEOUT) and the kubelet's, which must be longer
# or a slow-but-passing check counts as a failure (service/health.py says what readiness means).
READY_CHECK_TIMEOUT = 1
READY_PROBE_TIMEOUT = READY_CHECK_TIMEOUT + 2
# The migration Job: Kubernetes stops it after MIGRATION_DEADLINE; Pulumi's clock also counts
# scheduling and the image pull, so it waits longer before calling the update failed.
MIGRATION_DEADLINE = 600
MIGRATION_TIMEOUT = f"{MIGRATION_DEADLINE // 60 + 5}m"
# A size of its own: the pods' tuning (workers, memory per worker) must not rerun migrations.
MIGRATION_SIZE = Resources("250m", "1", "384Mi")
# Scraped in-cluster (the Ingress does not route /metrics): the annotations Prometheus's
# kubernetes-pods job and most agents read.
SCRAPE_ANNOTATIONS = {
    "prometheus.io/scrape": "true",
    "prometheus.io/port": str(PORT),
    "prometheus.io/path": "/metrics",
}


def termination_grace(app: AppConfig) -> int:
    """Kubernetes counts the preStop pause inside the grace period, then Gunicorn drains."""
    return app.pre_stop_seconds + app.graceful_timeout + GRACE_MARGIN


def settings_env(app: AppConfig, exposure: ExposureConfig) -> dict[str, str]:
    """The non-secret settings, keyed by the service's environment variable names."""
    env = {
        "APP_ENV": app.app_env,
        "HOST": "0.0.0.0",
        "PORT": str(PORT),
        "WEB_CONCURRENCY": str(app.workers),
        "GRACEFUL_TIMEOUT": str(app.graceful_timeout),
        "DB_POOL_SIZE": str(app.db_pool_size),
        "DB_MAX_OVERFLOW": str(app.db_max_overflow),
        "TRUSTED_PROXIES": ",".join(app.trusted_proxies),
        "LOG_LEVEL": app.log_level,
        "READY_CHECK_TIMEOUT": str(READY_CHECK_TIMEOUT),
    }
    if exposure.host:
        env["JWT_ISSUER"] = f"{'https' if exposure.tls else 'http'}://{exposure.host}"
    if app.cors_origins:
        env["CORS_ORIGINS"] = ",".join(app.cors_origins)
    limits = {
        "RATE_LIMIT_LOGIN": app.rate_limit_login,
        "RATE_LIMIT_CLIENT": app.rate_limit_client,
        "RATE_LIMIT_USER": app.rate_limit_user,
        "RATE_LIMIT_API_KEY_DEFAULT": app.rate_limit_api_key_default,
        "RATE_LIMIT_LOGIN_IP": app.rate_limit_login_ip,
    }
    env.update({name: value for name, value in limits.items() if value})  # unset: the default
    if app.first_admin_email:
        env["FIRST_ADMIN_EMAIL"] = app.first_admin_email
    return env


@dataclass(frozen=True)
class Runtime:
    """The service's image with its settings: the ConfigMap as environment variables, the Secret
    as files under SECRETS_DIR, the pod size and the pull secret."""

    image: pulumi.Input[str]
    size: Resources
    settings: pulumi.Input[str]  # the ConfigMap's name
    secrets: pulumi.Input[str]  # the Secret's name
    pull_secret: pulumi.Input[str] | None = None

    def container(
        self, name: str, env: list[dict[str, Any]] | None = None, **fields: Any
    ) -> dict[str, Any]:
        """A hardened container of the image; ``env`` adds to SECRETS_DIR."""
        return container(
            name,
            self.image,
            self.size,
            [{"name": "secrets", "mountPath": SECRETS_DIR, "readOnly": True}],
            envFrom=[{"configMapRef": {"name": self.settings}}],
            env=[{"name": "SECRETS_DIR", "value": SECRETS_DIR}, *(env or [])],
            **fields,
        )

    def pod(
        self, pod_labels: dict[str, str], containers: list[dict[str, Any]], **fields: Any
    ) -> dict[str, Any]:
        """A hardened pod template with the Secret's volume (and the pull secret, if any)."""
        if self.pull_secret:
            fields["imagePullSecrets"] = [{"name": self.pull_secret}]
        return pod(pod_labels, containers, [secret_volume("secrets", self.secrets)], **fields)


def job(
    parent: pulumi.Resource,
    name: str,
    namespace: pulumi.Input[str],
    runtime: Runtime,
    component: str,
    command: list[str],
    *,
    env: list[dict[str, Any]] | None = None,
    annotations: dict[str, str] | None = None,
    pod_annotations: dict[str, pulumi.Input[str]] | None = None,
    opts: pulumi.ResourceOptions | None = None,
) -> k8s.batch.v1.Job:
    """A one-off command of the service (container ``component``) with the server's settings.

    Auto-named: a change of its template (the image, the command, ``annotations``) replaces the
    Job, and Pulumi waits for it to succeed before anything that depends on it. The ConfigMap and
    Secret have fixed names, so a settings change alone does not rerun it. Its pods carry the
    project's name label (CLIENT_LABELS), so the stores' NetworkPolicies admit them like the API.

    ``pulumi.com/replaceUnready``: a Job that failed is replaced on the next update instead of
    being awaited again, so one failed run does not block every later deploy with the same
    inputs (pulumi-kubernetes, batch/v1 Job docs: "By default, if a resource failed to become
    ready in a previous update, Pulumi will continue to wait for readiness on the next update";
    the annotation was added in pulumi/pulumi-kubernetes#1575, reading the live Job since #1578).
    Pulumi's timeout (customTimeouts) outlasts activeDeadlineSeconds: its clock also runs while
    the pod is scheduled and the image pulled, and the Job's own deadline should decide.
    """
    job_labels = labels(PROJECT, component)
    main = runtime.container(component, env, command=command)
    timeouts = pulumi.ResourceOptions(
        custom_timeouts=pulumi.CustomTimeouts(create=MIGRATION_TIMEOUT, update=MIGRATION_TIMEOUT)
    )
    return create(
        k8s.batch.v1.Job,
        name,
        parent,
        namespace,
        job_labels,
        named=False,
        annotations={"pulumi.com/replaceUnready": "true", **(annotations or {})},
        spec={
            "backoffLimit": 2,
            "activeDeadlineSeconds": MIGRATION_DEADLINE,
            "template": annotate(
                runtime.pod(job_labels, [main], restartPolicy="Never"), pod_annotations or {}
            ),
        },
        opts=pulumi.ResourceOptions.merge(timeouts, opts),
    )


def checksum(*values: pulumi.Input[str]) -> pulumi.Output[str]:
    """A short digest of ``values`` for a pod-template annotation: a change rolls the pods.

    Not secret, though the values may be: a truncated SHA-256 of them reveals nothing usable.
    """
    digest = pulumi.Output.all(*values).apply(
        lambda items: hashlib.sha256(json.dumps(items).encode()).hexdigest()[:16]
    )
    return pulumi.Output.unsecret(digest)


@dataclass(frozen=True)
class AppArgs:
    namespace: pulumi.Input[str]
    config: AppConfig
    exposure: ExposureConfig
    image: pulumi.Input[str]
    database_url: pulumi.Input[str]
    redis_url: pulumi.Input[str]
    # Who may reach the pods (the ingress controller, a LoadBalancer's sources, Locust, monitoring).
    peers: list[dict[str, Any]]
    pull_secret: pulumi.Input[str] | None = None
    # Where the app pods may connect besides DNS (the in-cluster stores' selectors, CIDRs).
    egress: list[dict[str, Any]] = field(default_factory=list)
    # The migration Job starts once these are ready (the in-cluster Postgres and Redis).
    wait_for: list[pulumi.Resource] = field(default_factory=list)
    # False: no HorizontalPodAutoscaler, the Deployment runs minReplicas pods (the load test's
    # per-pod target, with config requiring minReplicas = maxReplicas = 1).
    autoscale: bool = True


class App(pulumi.ComponentResource):
    def __init__(self, name: str, args: AppArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("blueprint:index:App", name, None, opts)
        cfg, ns = args.config, args.namespace
        api = POD_LABELS
        settings = settings_env(cfg, args.exposure)
        secrets = self._secrets(args)
        # Fixed names: every ReplicaSet (old ones too, for `kubectl rollout undo`) and the Jobs
        # name the same two objects; the pod template's checksum rolls the pods on a change.
        config_map = create(k8s.core.v1.ConfigMap, f"{NAME}-settings", self, ns, api, data=settings)
        secret = create(
            k8s.core.v1.Secret,
            f"{NAME}-secrets",
            self,
            ns,
            api,
            type="Opaque",
            string_data=secrets,
        )
        self.runtime = Runtime(
            args.image,
            Resources(cfg.cpu, cfg.cpu_limit, f"{cfg.memory_mi}Mi"),
            config_map.metadata.name,
            secret.metadata.name,
            args.pull_secret,
        )
        # One-off commands get a size of their own, so tuning the pods never reruns them.
        self.job_runtime = replace(self.runtime, size=MIGRATION_SIZE)
        # Reruns on a new image, a new database or a new first admin; never on tuning. The
        # Deployment below rolls only once the migrations succeeded.
        self.migration = job(
            self,
            f"{NAME}-migrate",
            ns,
            self.job_runtime,
            "migrate",
            MIGRATE_COMMAND,
            pod_annotations={
                "blueprint/migration-inputs": checksum(
                    secrets["DATABASE_URL"], settings.get("FIRST_ADMIN_EMAIL", "")
                )
            },
            opts=pulumi.ResourceOptions(depends_on=args.wait_for),
        )

        server = self.runtime.container(
            NAME,
            ports=[{"name": "http", "containerPort": PORT, "protocol": "TCP"}],
            startupProbe=_http_probe(LIVE, period=2, failures=30),
            livenessProbe=_http_probe(LIVE, period=10, failures=3),
            readinessProbe=_http_probe(READY, period=5, failures=2, timeout=READY_PROBE_TIMEOUT),
            lifecycle={"preStop": {"sleep": {"seconds": cfg.pre_stop_seconds}}},
        )
        self.deployment = create(
            k8s.apps.v1.Deployment,
            NAME,
            self,
            ns,
            api,
            # No `replicas` while the HorizontalPodAutoscaler owns the count.
            spec={
                **({} if args.autoscale else {"replicas": cfg.min_replicas}),
                "selector": {"matchLabels": selector(api)},
                "revisionHistoryLimit": 5,
                "strategy": {
                    "type": "RollingUpdate",
                    "rollingUpdate": {"maxUnavailable": 0, "maxSurge": cfg.max_surge},
                },
                "template": annotate(
                    self.runtime.pod(
                        api,
                        [server],
                        terminationGracePeriodSeconds=termination_grace(cfg),
                        topologySpreadConstraints=[
                            _spread(api, "topology.kubernetes.io/zone"),
                            _spread(api, "kubernetes.io/hostname"),
                        ],
                    ),
                    {
                        **SCRAPE_ANNOTATIONS,
                        "blueprint/settings": checksum(json.dumps(settings, sort_keys=True)),
                        "blueprint/secrets": checksum(*secrets.values()),
                    },
                ),
            },
            opts=pulumi.ResourceOptions(depends_on=[self.migration]),
        )
        # After the Deployment: Pulumi's Service await waits for ready endpoints, which exist
        # only once the pods roll (after the migration Job), so created alongside the namespace it
        # would spend its own timeout waiting on theirs.
        self.service = service(
            self,
            ns,
            api,
            {"http": SERVICE_PORT},
            name=NAME,
            opts=pulumi.ResourceOptions(depends_on=[self.deployment]),
        )
        if args.autoscale:
            self._autoscaler(ns, api, cfg)
        create(
            k8s.policy.v1.PodDisruptionBudget,
            NAME,
            self,
            ns,
            api,
            spec={"maxUnavailable": 1, "selector": {"matchLabels": selector(api)}},
        )
        allow_ingress(self, ns, api, PORT, args.peers, name=f"{NAME}-ingress")
        # The API and its Jobs: DNS, the stores, the configured CIDRs minus cloud metadata.
        outside = [ip_peer(cidr, CLOUD_METADATA) for cidr in cfg.egress_cidrs]
        allow_egress(
            self,
            ns,
            CLIENT_LABELS,
            [*args.egress, {"to": outside}],
            name=f"{NAME}-egress",
        )
        self.service_name: pulumi.Output[str] = self.service.metadata.name  # type: ignore[attr-defined]
        self.register_outputs({"service": self.service_name})

    def _secrets(self, args: AppArgs) -> dict[str, pulumi.Input[str]]:
        cfg = args.config
        secrets: dict[str, pulumi.Input[str]] = {
            "DATABASE_URL": args.database_url,
            "REDIS_URL": args.redis_url,
            "JWT_SECRET": cfg.jwt_secret or password("jwt-secret", self),
        }
        if cfg.first_admin_email:
            secrets["FIRST_ADMIN_PASSWORD"] = cfg.first_admin_password or password(
                "first-admin-password", self
            )
        return secrets

    def _autoscaler(self, ns: pulumi.Input[str], api: dict[str, str], cfg: AppConfig) -> None:
        targets = {"cpu": cfg.hpa_cpu_target, "memory": cfg.hpa_memory_target}
        create(
            k8s.autoscaling.v2.HorizontalPodAutoscaler,
            NAME,
            self,
            ns,
            api,
            spec={
                "scaleTargetRef": {
                    "apiVersion": "apps/v1",
                    "kind": "Deployment",
                    "name": self.deployment.metadata.name,
                },
                "minReplicas": cfg.min_replicas,
                "maxReplicas": cfg.max_replicas,
                "metrics": [
                    {
                        "type": "Resource",
                        "resource": {
                            "name": resource,
                            "target": {"type": "Utilization", "averageUtilization": target},
                        },
                    }
                    for resource, target in targets.items()
                    if target
                ],
                "behavior": {
                    "scaleDown": {"stabilizationWindowSeconds": cfg.scale_down_stabilization}
                },
            },
        )


def _http_probe(path: str, *, period: int, failures: int, timeout: int = 2) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": "http"},
        "periodSeconds": period,
        "timeoutSeconds": timeout,
        "failureThreshold": failures,
    }


def annotate(template: dict[str, Any], annotations: dict[str, Any]) -> dict[str, Any]:
    """A pod template with ``annotations`` on its metadata."""
    if not annotations:
        return template
    return {**template, "metadata": {**template["metadata"], "annotations": annotations}}


def _spread(pod_labels: dict[str, str], topology_key: str) -> dict[str, Any]:
    return {
        "maxSkew": 1,
        "topologyKey": topology_key,
        "whenUnsatisfiable": "ScheduleAnyway",
        "labelSelector": {"matchLabels": selector(pod_labels)},
        "matchLabelKeys": ["pod-template-hash"],
    }
