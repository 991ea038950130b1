"""The whole program: load the stack's config, build one component per concern, export outputs."""

from __future__ import annotations

import pulumi

from infra import config
from infra.components import app, ingress, loadtest
from infra.components.cluster import Cluster, ClusterArgs
from infra.components.image import Image
from infra.components.k8s import namespace_peer, pods_peer, registry_secret, selector
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

    pull_secret = None
    if cfg.image.pull_secret and cfg.image.pull_username and cfg.image.pull_password:
        # Managed here, not created by hand: Pulumi >= 4.29 refuses to create an object that
        # already exists (no upsert), so every object the guide needs is the program's own.
        pull_secret = registry_secret(
            cluster,
            ns,
            cfg.image.pull_secret,
            cfg.image.pull_server or "docker.io",
            cfg.image.pull_username,
            cfg.image.pull_password,
            on_cluster,
        ).metadata.name
    # The app pods reach the in-cluster stores by selector; external ones via egressCidrs.
    egress = [
        {"to": [pods_peer(selector(store.labels))], "ports": [{"port": store.PORT}]}
        for store in (postgres, redis)
        if store.in_cluster
    ]

    peers = ingress.peers(cfg.exposure)
    if cfg.app.monitoring_namespace:
        peers.append(namespace_peer(cfg.app.monitoring_namespace))
    # Per pod: Locust sends to the app's Service, so its workers are peers of the app pods, and
    # the pod count is fixed (config requires one) with no HPA. Through the Ingress: the
    # controller is the peer already, and the app scales as in production.
    per_pod = cfg.loadtest.enabled and cfg.loadtest.target == "pod"
    if per_pod:
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
            pull_secret=pull_secret,
            egress=egress,
            wait_for=[postgres, redis],
            autoscale=not per_pod,
        ),
        on_cluster,
    )
    edge = ingress.Ingress(
        "ingress",
        ingress.IngressArgs(
            ns,
            cfg.exposure,
            api.service_name,
            app.SERVICE_PORT,
            app.POD_LABELS,
            wait_for=[api.deployment],
        ),
        on_cluster,
    )
    target = pulumi.Output.concat("http://", api.service_name, ".", ns, f".svc:{app.SERVICE_PORT}")
    if cfg.loadtest.enabled:
        # The run starts once what it aims at serves: the Service (Pulumi awaits its ready
        # endpoints) or the Ingress (its address, where awaitExposure is on).
        aim, ready = (target, api.service) if per_pod else (edge.url, edge)
        loadtest.Loadtest(
            "loadtest",
            loadtest.LoadtestArgs(
                ns, cfg.loadtest, aim, api.job_runtime, api.migration, wait_for=[ready]
            ),
            on_cluster,
        )
    else:  # off: the seeded accounts and keys, if any, stop working
        loadtest.Revocation(
            "loadtest-revocation",
            loadtest.RevocationArgs(ns, api.job_runtime, api.migration),
            on_cluster,
        )

    pulumi.export("namespace", ns)
    pulumi.export("image", image.ref)
    pulumi.export("url", edge.url)
    pulumi.export("inClusterUrl", target)
    pulumi.export("workers", cfg.app.workers)
    pulumi.export("replicas", {"min": cfg.app.min_replicas, "max": cfg.app.max_replicas})
    pulumi.export("service", api.service_name)
