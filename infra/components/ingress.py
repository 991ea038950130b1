"""How traffic reaches the app: an Ingress (class, host, TLS) or a Service of type LoadBalancer."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from infra.components.k8s import create, namespace_peer, service
from infra.config import ExposureConfig


def peers(cfg: ExposureConfig) -> list[dict[str, Any]]:
    """Who may reach the app pods: the ingress controller's namespace, or the LB's source ranges."""
    if cfg.kind == "ingress":
        return [namespace_peer(cfg.controller_namespace)]
    return [{"ipBlock": {"cidr": cidr}} for cidr in cfg.source_ranges]


@dataclass(frozen=True)
class IngressArgs:
    namespace: pulumi.Input[str]
    config: ExposureConfig
    service_name: str
    service_port: int
    pod_labels: dict[str, str]


class Ingress(pulumi.ComponentResource):
    def __init__(self, name: str, args: IngressArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("blueprint:index:Ingress", name, None, opts)
        cfg, ns = args.config, args.namespace
        if cfg.kind == "loadbalancer":
            service(
                self,
                ns,
                args.pod_labels,
                {"http": args.service_port},
                name=f"{args.service_name}-public",
                type="LoadBalancer",
                externalTrafficPolicy="Local",  # keeps the client's address visible to the app
                loadBalancerSourceRanges=list(cfg.source_ranges),
            )
            self.url = f"http://{cfg.host or '<load-balancer-address>'}"
        else:
            self._ingress(args)
            self.url = f"{'https' if cfg.tls else 'http'}://{cfg.host}"
        self.register_outputs({"url": self.url})

    def _ingress(self, args: IngressArgs) -> None:
        cfg = args.config
        backend = {"service": {"name": args.service_name, "port": {"number": args.service_port}}}
        spec: dict[str, Any] = {
            "ingressClassName": cfg.ingress_class,
            "rules": [
                {
                    "host": cfg.host,
                    "http": {"paths": [{"path": "/", "pathType": "Prefix", "backend": backend}]},
                }
            ],
        }
        if cfg.tls:
            spec["tls"] = [{"hosts": [cfg.host], "secretName": f"{args.service_name}-tls"}]
        issuer = cfg.cert_manager_issuer
        create(
            k8s.networking.v1.Ingress,
            args.service_name,
            self,
            args.namespace,
            args.pod_labels,
            annotations={"cert-manager.io/cluster-issuer": issuer} if issuer else None,
            spec=spec,
        )
