"""Postgres: a StatefulSet with storage in the cluster, or a managed server's URL (external)."""

from __future__ import annotations

from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from infra.components.k8s import (
    container,
    secret_volume,
    service,
)
from infra.components.store import Store
from infra.config import PostgresConfig

DATABASE = USER = "blueprint"
DATA = "/var/lib/postgresql/data"
SHM_SIZE = "256Mi"
SHM = "/dev/shm"  # noqa: S108 - a memory-backed emptyDir of this pod's, not the host's


class Postgres(Store[PostgresConfig]):
    """``url`` (secret) is the DATABASE_URL the service gets: postgresql://user:pass@host:5432/db."""

    TYPE, NAME, PORT, COMPONENT = "blueprint:index:Postgres", "postgres", 5432, "database"

    def deploy(
        self, namespace: pulumi.Input[str], cfg: PostgresConfig, secret_pw: pulumi.Output[str]
    ) -> pulumi.Output[str]:
        credentials = self.secret(namespace, "credentials", {"password": secret_pw})
        db = container(
            self.NAME,
            cfg.image,
            cfg.resources,
            [
                {"name": "data", "mountPath": DATA},
                {"name": "run", "mountPath": "/var/run/postgresql"},
                # Parallel queries share memory through /dev/shm, 64 MiB on a container runtime's
                # default: an emptyDir in memory (counted against the memory limit) lifts that.
                {"name": "shm", "mountPath": SHM},
                {"name": "credentials", "mountPath": "/etc/postgres", "readOnly": True},
            ],
            args=["-c", f"max_connections={cfg.max_connections}"],
            env=[
                {"name": "POSTGRES_USER", "value": USER},
                {"name": "POSTGRES_DB", "value": DATABASE},
                {"name": "POSTGRES_PASSWORD_FILE", "value": "/etc/postgres/password"},
                {"name": "PGDATA", "value": f"{DATA}/pgdata"},
            ],
            ports=[{"name": self.NAME, "containerPort": self.PORT}],
            **_pg_isready_probes(),
        )
        volumes = [
            {"name": "run", "emptyDir": {}},
            {"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": SHM_SIZE}},
            secret_volume("credentials", credentials.metadata.name),
        ]
        claim = {
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": cfg.storage}},
            **({"storageClassName": cfg.storage_class} if cfg.storage_class else {}),
        }
        headless = service(self, namespace, self.labels, {self.NAME: self.PORT}, headless=True)
        # volumeClaimTemplates are immutable: a new size or class would replace the StatefulSet
        # (Postgres down) and the new one re-binds the old claim at the old size. `protect`
        # makes the engine refuse that replacement (and a delete) instead of reporting success;
        # docs/deployment.md, "Resizing Postgres", expands the volume in place instead.
        self.statefulset = self.workload(
            k8s.apps.v1.StatefulSet,
            namespace,
            db,
            volumes,
            opts=pulumi.ResourceOptions(depends_on=[headless], protect=cfg.protect),
            serviceName=self.NAME,
            volumeClaimTemplates=[{"metadata": {"name": "data"}, "spec": claim}],
            # The data outlives the StatefulSet (Kubernetes' default, stated).
            persistentVolumeClaimRetentionPolicy={"whenDeleted": "Retain", "whenScaled": "Retain"},
        )
        return pulumi.Output.concat(
            f"postgresql://{USER}:", secret_pw, "@", self.address(namespace), f"/{DATABASE}"
        )


def _pg_isready_probes() -> dict[str, Any]:
    check = {"exec": {"command": ["pg_isready", "-h", "127.0.0.1", "-U", USER, "-d", DATABASE]}}
    return {
        "startupProbe": {**check, "periodSeconds": 2, "failureThreshold": 60},
        "livenessProbe": {**check, "periodSeconds": 10, "timeoutSeconds": 5},
        "readinessProbe": {**check, "periodSeconds": 5, "timeoutSeconds": 3},
    }
