"""The whole program: load the stack's config, build one component per concern, export outputs."""

from __future__ import annotations

import pulumi

from infra import config
from infra.components import app, ingress, loadtest
from infra.components.cluster import Cluster, ClusterArgs
from infra.components.image import Image
from infra.components.k8s import namespace_peer
from infra.components.postgres import Postgres
from infra.components.redis import Redis
from infra.components.store import StoreArgs


def main() -> None:
    cfg = config.load()
    cluster = Cluster("cluster", ClusterArgs(cfg.namespace, cfg.kubeconfig, cfg.kube_context))
    on_cluster = pulumi.ResourceOptions(provider=cluster.provider)
    ns = cluster.name
    image = Image("image", cfg.image)
    postgres = Postgres("postgres", StoreArgs(ns, cfg.postgres), on_cluster)
    redis = Redis("redis", StoreArgs(ns, cfg.redis), on_cluster)

    peers = ingress.peers(cfg.exposure)
    if cfg.app.monitoring_namespace:
        peers.append(namespace_peer(cfg.app.monitoring_namespace))
    if cfg.loadtest.enabled:
        peers.append(loadtest.peer())
    api = app.App(
        "app",
        app.AppArgs(
            namespace=ns,
            config=cfg.app,
            exposure=cfg.exposure,
            image=image.ref,
            database_url=postgres.url,
            redis_url=redis.url,
            peers=peers,
            pull_secret=cfg.image.pull_secret,
            wait_for=[postgres, redis],
        ),
        on_cluster,
    )
    edge = ingress.Ingress(
        "ingress",
        ingress.IngressArgs(ns, cfg.exposure, app.NAME, app.SERVICE_PORT, app.POD_LABELS),
        on_cluster,
    )
    target = pulumi.Output.concat("http://", app.NAME, ".", ns, f".svc:{app.SERVICE_PORT}")
    if cfg.loadtest.enabled:
        loadtest.Loadtest(
            "loadtest",
            loadtest.LoadtestArgs(ns, cfg.loadtest, target, api.runtime, api.migration),
            on_cluster,
        )

    pulumi.export("namespace", ns)
    pulumi.export("image", image.ref)
    pulumi.export("url", edge.url)
    pulumi.export("inClusterUrl", target)
    pulumi.export("workers", cfg.app.workers)
    pulumi.export("replicas", {"min": cfg.app.min_replicas, "max": cfg.app.max_replicas})
    pulumi.export("service", api.service_name)
