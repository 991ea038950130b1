"""What Postgres and Redis share: two modes, a generated password, a secret URL for the app."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, TypeVar

import pulumi
import pulumi_kubernetes as k8s

from infra.components.k8s import (
    CLIENT_LABELS,
    allow_ingress,
    checkov_skips,
    create,
    labels,
    password,
    pod,
    pods_peer,
    selector,
)
from infra.config import PostgresConfig, RedisConfig

C = TypeVar("C", PostgresConfig, RedisConfig)


@dataclass(frozen=True)
class StoreArgs(Generic[C]):
    namespace: pulumi.Input[str]
    config: C


class Store(pulumi.ComponentResource, Generic[C]):
    """``in-cluster``: ``deploy`` builds the server and returns its URL; ``external``: the URL
    from config (a managed service). Either way ``url`` is a secret Output."""

    TYPE: ClassVar[str]
    NAME: ClassVar[str]
    PORT: ClassVar[int]
    COMPONENT: ClassVar[str]
    url: pulumi.Output[str]

    def __init__(self, name: str, args: StoreArgs[C], opts: pulumi.ResourceOptions | None = None):
        super().__init__(self.TYPE, name, None, opts)
        cfg = args.config
        self.in_cluster = cfg.mode == "in-cluster"
        if cfg.mode == "external":
            url: pulumi.Input[str] = cfg.url or ""
        else:
            self.labels = labels(self.NAME, self.COMPONENT)
            url = self.deploy(args.namespace, cfg, password(f"{self.NAME}-password", self))
            # Only the API and its Jobs (migrations, the load-test seed) may connect.
            allow_ingress(self, args.namespace, self.labels, self.PORT, [pods_peer(CLIENT_LABELS)])
        self.url = pulumi.Output.secret(url)
        self.register_outputs({"mode": cfg.mode})

    def deploy(
        self, namespace: pulumi.Input[str], cfg: C, secret_pw: pulumi.Output[str]
    ) -> pulumi.Output[str]:
        raise NotImplementedError

    def secret(
        self, namespace: pulumi.Input[str], suffix: str, data: dict[str, pulumi.Input[str]]
    ) -> k8s.core.v1.Secret:
        return create(
            k8s.core.v1.Secret,
            f"{self.NAME}-{suffix}",
            self,
            namespace,
            self.labels,
            named=False,
            type="Opaque",
            string_data=data,
        )

    def address(self, namespace: pulumi.Input[str]) -> pulumi.Output[str]:
        """host:port of the in-cluster Service."""
        return pulumi.Output.concat(self.NAME, ".", namespace, f".svc:{self.PORT}")

    def workload(
        self,
        cls: Callable[..., pulumi.CustomResource],
        namespace: pulumi.Input[str],
        server: dict[str, Any],
        volumes: list[dict[str, Any]],
        opts: pulumi.ResourceOptions | None = None,
        **spec: Any,
    ) -> pulumi.CustomResource:
        """The single server pod, as a StatefulSet or Deployment of one replica."""
        return create(
            cls,
            self.NAME,
            self,
            namespace,
            self.labels,
            # Official images are pinned by version tag in config (a digest there satisfies this).
            annotations=checkov_skips(CKV_K8S_43="third-party image pinned by version tag"),
            spec={
                "replicas": 1,
                "selector": {"matchLabels": selector(self.labels)},
                "template": pod(self.labels, [server], volumes),
                **spec,
            },
            opts=opts,
        )
