"""How traffic reaches the app: an Ingress (class, host, TLS) or a Service of type LoadBalancer."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from infra.components.k8s import allow_ingress, create, ip_peer, labels, namespace_peer, service
from infra.config import PROJECT, ExposureConfig

# What the public may reach through the Ingress; /metrics and /health/ready stay in-cluster.
PUBLIC_PATHS = ("/api/", "/.well-known/", "/health/live")
DOCS_PATHS = ("/docs", "/redoc", "/openapi.json")  # FastAPI's defaults, with docsPublic only
# cert-manager's HTTP-01 solver: the pod it starts in the Ingress's namespace carries this label
# and serves the challenge on this port (cert-manager's pkg/issuer/acme/http/pod.go,
# `acme.cert-manager.io/http01-solver: "true"`, acmesolver listening on 8089).
SOLVER_LABELS = {"acme.cert-manager.io/http01-solver": "true"}
SOLVER_PORT = 8089


def peers(cfg: ExposureConfig) -> list[dict[str, Any]]:
    """Who may reach the app pods: the ingress controller's namespace (plus the CIDRs it sends
    from when it is not a pod on the pod network), or the LoadBalancer's source ranges."""
    if cfg.kind == "ingress":
        return [namespace_peer(cfg.controller_namespace), *map(ip_peer, cfg.peer_cidrs)]
    return [ip_peer(cidr) for cidr in cfg.source_ranges]


def await_options(cfg: ExposureConfig) -> tuple[dict[str, str], pulumi.ResourceOptions]:
    """The stack's await behaviour for the exposure objects, stated rather than defaulted.

    pulumi-kubernetes waits for an Ingress's `.status.loadBalancer.ingress` and a LoadBalancer
    Service's address, 10 minutes unless `customTimeouts` says otherwise; the annotation
    `pulumi.com/skipAwait: "true"` turns that off (provider README, "Await logic"; added in
    pulumi/pulumi-kubernetes#417). Without it, a controller that never publishes status, or a
    cluster with nothing that provisions load balancers, fails every first `up` after the timeout.
    """
    minutes = f"{cfg.await_minutes}m"
    timeouts = pulumi.CustomTimeouts(create=minutes, update=minutes)
    annotations = {} if cfg.await_ready else {"pulumi.com/skipAwait": "true"}
    return annotations, pulumi.ResourceOptions(custom_timeouts=timeouts)


@dataclass(frozen=True)
class IngressArgs:
    namespace: pulumi.Input[str]
    config: ExposureConfig
    service_name: pulumi.Input[str]  # the app Service's name, as its Output: wired, not assumed
    service_port: int
    pod_labels: dict[str, str]
    wait_for: list[pulumi.Resource] = field(default_factory=list)


class Ingress(pulumi.ComponentResource):
    def __init__(self, name: str, args: IngressArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("blueprint:index:Ingress", name, None, opts)
        cfg = args.config
        annotations, options = await_options(cfg)
        options = pulumi.ResourceOptions.merge(
            options, pulumi.ResourceOptions(depends_on=args.wait_for)
        )
        if cfg.kind == "loadbalancer":
            service(
                self,
                args.namespace,
                args.pod_labels,
                {"http": args.service_port},
                name="api-public",
                annotations=annotations or None,
                opts=options,
                type="LoadBalancer",
                externalTrafficPolicy="Local",  # keeps the client's address visible to the app
                loadBalancerSourceRanges=list(cfg.source_ranges),
            )
            self.url = f"http://{cfg.host or '<load-balancer-address>'}"
        else:
            self._ingress(args, annotations, options)
            self.url = f"{'https' if cfg.tls else 'http'}://{cfg.host}"
        self.register_outputs({"url": self.url})

    def _ingress(
        self, args: IngressArgs, annotations: dict[str, str], options: pulumi.ResourceOptions
    ) -> None:
        cfg = args.config
        backend = {"service": {"name": args.service_name, "port": {"number": args.service_port}}}
        paths = [*PUBLIC_PATHS, *(DOCS_PATHS if cfg.docs_public else ())]
        spec: dict[str, Any] = {
            "ingressClassName": cfg.ingress_class,
            "rules": [
                {
                    "host": cfg.host,
                    "http": {
                        "paths": [
                            {"path": path, "pathType": _path_type(path), "backend": backend}
                            for path in paths
                        ]
                    },
                }
            ],
        }
        if cfg.tls:
            spec["tls"] = [{"hosts": [cfg.host], "secretName": "api-tls"}]
        issuer = cfg.cert_manager_issuer
        if issuer:
            annotations = {**annotations, "cert-manager.io/cluster-issuer": issuer}
            # The default-deny ingress policy would drop the controller's requests to the solver.
            allow_ingress(
                self,
                args.namespace,
                labels(PROJECT, "acme-solver"),
                SOLVER_PORT,
                peers(cfg),
                name="acme-http01-solver-ingress",
                match=SOLVER_LABELS,
            )
        create(
            k8s.networking.v1.Ingress,
            "api",
            self,
            args.namespace,
            args.pod_labels,
            annotations=annotations or None,
            spec=spec,
            opts=options,
        )


def _path_type(path: str) -> str:
    """Prefix for a directory (``/api/``), Exact for one route (``/health/live``)."""
    return "Prefix" if path.endswith("/") or path == "/docs" else "Exact"
