"""Redis: one in-cluster instance (rate-limit counters, no persistence) or an external one."""

from __future__ import annotations

import pulumi
import pulumi_kubernetes as k8s

from infra.components.k8s import container, secret_volume, service, tcp_probes
from infra.components.store import Store
from infra.config import RedisConfig

EVICTION_POLICY = "volatile-ttl"


class Redis(Store[RedisConfig]):
    """``url`` (secret) is the REDIS_URL the service gets: redis://:pass@host:6379/0."""

    TYPE, NAME, PORT, COMPONENT = "blueprint:index:Redis", "redis", 6379, "cache"

    def deploy(
        self, namespace: pulumi.Input[str], cfg: RedisConfig, secret_pw: pulumi.Output[str]
    ) -> pulumi.Output[str]:
        # The password reaches Redis in a config file from a Secret, never as env var or argument.
        # Every key is a rate-limit counter with a TTL: at maxmemory, evict the keys nearest
        # expiry (counters about to reset anyway) rather than refuse writes, which the limiter
        # would turn into errors (docs/deployment.md, "Redis memory").
        settings = (
            f'save ""\nappendonly no\ndir /data\nmaxmemory {cfg.maxmemory_mi}mb\n'
            f"maxmemory-policy {EVICTION_POLICY}\n"
        )
        conf = pulumi.Output.concat("requirepass ", secret_pw, "\n", settings)
        config = self.secret(namespace, "config", {"redis.conf": conf})
        server = container(
            self.NAME,
            cfg.image,
            cfg.resources,
            [
                {"name": "data", "mountPath": "/data"},
                {"name": "config", "mountPath": "/etc/redis", "readOnly": True},
            ],
            command=["redis-server", "/etc/redis/redis.conf"],
            ports=[{"name": self.NAME, "containerPort": self.PORT}],
            **tcp_probes(self.NAME),
        )
        volumes = [{"name": "data", "emptyDir": {}}, secret_volume("config", config.metadata.name)]
        self.workload(
            k8s.apps.v1.Deployment, namespace, server, volumes, strategy={"type": "Recreate"}
        )
        service(self, namespace, self.labels, {self.NAME: self.PORT})
        return pulumi.Output.concat("redis://:", secret_pw, "@", self.address(namespace), "/0")
