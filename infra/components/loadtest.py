"""Optional in-cluster load (off by default): distributed Locust aimed at the app's Service.

The master runs one bounded headless-style run as soon as its workers connect (``--autostart``
with users, spawn rate and run time from config), then keeps serving the results on its web UI
(``kubectl port-forward svc/locust-master 8089``). Workers are a Deployment of N replicas.

Before Locust starts, a Job in the service's own image (``app.job``: the migration Job's settings,
secret files and hardening) runs ``python -m service seed-loadtest`` after the migrations: it
creates ``loadtestSeedUsers`` accounts with a generated password and registers a generated
exempt-tier API key. Both credentials live in this component's Secret only; the seed Job and the
Locust containers read them from it (secretKeyRef), and Locust logs in as the seeded accounts.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pulumi
import pulumi_kubernetes as k8s
import pulumi_random as random

from infra.components.app import Runtime, job
from infra.components.k8s import (
    PASSWORD_LENGTH,
    allow_ingress,
    checkov_skips,
    container,
    create,
    labels,
    password,
    pod,
    pods_peer,
    secret_env,
    selector,
    service,
)
from infra.config import ConfigError, LoadtestConfig, Resources, key

REPO_ROOT = Path(__file__).resolve().parents[2]
MASTER, WORKER = "locust-master", "locust-worker"
MASTER_PORT, WEB_PORT = 5557, 8089
LOCUSTFILE = "/mnt/locust/locustfile.py"
WORKER_LABELS = labels("locust", "worker")
MASTER_LABELS = labels("locust", "master")
SIZE = Resources("250m", "1", "256Mi")
SEED = "seed-loadtest"  # the seed Job's container and component label
# The variables the seed command and the locustfile read; the Secret's keys carry these names.
PASSWORD_ENV, API_KEY_ENV = "LOADTEST_PASSWORD", "LOADTEST_API_KEY"
# bpk_<prefix>_<secret>, the service's key format: the prefix finds the row (at most 16
# characters), the secret (a generated password) is at least 32.
KEY_SCHEME, KEY_PREFIX_LENGTH, KEY_SECRET_LENGTH = "bpk", 12, PASSWORD_LENGTH
ENV_SECRETS_SKIP = {
    "CKV_K8S_35": "the seed command and the locustfile read the generated load-test credentials "
    "from the environment"
}


def seed_command(users: int) -> list[str]:
    return ["python", "-m", "service", SEED, "--users", str(users)]


def peer() -> dict[str, Any]:
    """The app's NetworkPolicy admits the Locust workers with this peer."""
    return pods_peer(selector(WORKER_LABELS))


def read_locustfile(cfg: LoadtestConfig) -> str:
    path = Path(cfg.locustfile)
    path = path if path.is_absolute() else REPO_ROOT / path
    try:
        return path.read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError(f"{key('loadtestLocustfile')}: cannot read {path}: {error}") from None


def credentials(parent: pulumi.Resource) -> dict[str, pulumi.Output[str]]:
    """The seeded users' password and the exempt API key, generated once (kept, encrypted, in the
    stack's state) and secret throughout."""
    prefix = random.RandomString(
        "loadtest-api-key-prefix",
        length=KEY_PREFIX_LENGTH,
        lower=True,
        upper=False,
        numeric=True,
        special=False,
        opts=pulumi.ResourceOptions(parent=parent),
    )
    api_key = pulumi.Output.concat(
        f"{KEY_SCHEME}_", prefix.result, "_", password("loadtest-api-key-secret", parent)
    )
    return {
        PASSWORD_ENV: password("loadtest-password", parent),
        API_KEY_ENV: pulumi.Output.secret(api_key),
    }


@dataclass(frozen=True)
class LoadtestArgs:
    namespace: pulumi.Input[str]
    config: LoadtestConfig
    target: pulumi.Input[str]  # e.g. http://api.<namespace>.svc:80
    app: Runtime  # the service's image and settings, for the seed Job
    migration: pulumi.Resource  # the app's migration Job: the seed runs once it succeeded


class Loadtest(pulumi.ComponentResource):
    def __init__(self, name: str, args: LoadtestArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("blueprint:index:Loadtest", name, None, opts)
        cfg, ns = args.config, args.namespace
        script = create(
            k8s.core.v1.ConfigMap,
            "locustfile",
            self,
            ns,
            MASTER_LABELS,
            named=False,
            data={"locustfile.py": read_locustfile(cfg)},
        )
        volumes = [{"name": "locustfile", "configMap": {"name": script.metadata.name}}]
        mounts = [{"name": "locustfile", "mountPath": "/mnt/locust", "readOnly": True}]
        secret = create(
            k8s.core.v1.Secret,
            "loadtest-credentials",
            self,
            ns,
            labels("locust", "credentials"),
            named=False,
            type="Opaque",
            string_data=credentials(self),
        )
        from_secret = secret_env(secret.metadata.name, PASSWORD_ENV, API_KEY_ENV)
        # Pulumi waits for the Job to complete before it creates the Locust Deployments.
        seed = job(
            self,
            "loadtest-seed",
            ns,
            args.app,
            SEED,
            seed_command(cfg.seed_users),
            env=from_secret,
            annotations=checkov_skips(**ENV_SECRETS_SKIP),
            opts=pulumi.ResourceOptions(depends_on=[args.migration]),
        )
        env = [
            {"name": "HOME", "value": "/tmp"},  # noqa: S108 - the emptyDir
            {"name": "LOADTEST_USERS", "value": str(cfg.seed_users)},
            *from_secret,
        ]

        def deployment(
            name: str, own: dict[str, str], replicas: int, args_: list[Any], **fields: Any
        ) -> None:
            locust = container(
                "locust",
                cfg.image,
                SIZE,
                mounts,
                args=["-f", LOCUSTFILE, *args_],
                env=env,
                **fields,
            )
            create(
                k8s.apps.v1.Deployment,
                name,
                self,
                ns,
                own,
                annotations=checkov_skips(
                    CKV_K8S_43="upstream Locust image pinned by version tag",
                    **ENV_SECRETS_SKIP,
                    **(
                        {}
                        if "livenessProbe" in fields
                        else {
                            "CKV_K8S_8": "workers serve no port; the master tracks heartbeats",
                            "CKV_K8S_9": "workers serve no port; the master tracks heartbeats",
                        }
                    ),
                ),
                spec={
                    "replicas": replicas,
                    "selector": {"matchLabels": selector(own)},
                    "template": pod(own, [locust], volumes),
                },
                opts=pulumi.ResourceOptions(depends_on=[seed]),
            )

        web_probe = {"httpGet": {"path": "/", "port": "web"}, "periodSeconds": 10}
        master_args = [
            "--master",
            "--autostart",
            "--expect-workers",
            str(cfg.workers),
            "--users",
            str(cfg.users),
            "--spawn-rate",
            str(cfg.spawn_rate),
            "--run-time",
            cfg.run_time,
            "--host",
            args.target,
        ]
        deployment(
            MASTER,
            MASTER_LABELS,
            1,
            master_args,
            ports=[
                {"name": "master", "containerPort": MASTER_PORT},
                {"name": "web", "containerPort": WEB_PORT},
            ],
            livenessProbe=web_probe,
            readinessProbe=web_probe,
        )
        service(self, ns, MASTER_LABELS, {"master": MASTER_PORT, "web": WEB_PORT}, name=MASTER)
        allow_ingress(self, ns, MASTER_LABELS, MASTER_PORT, [peer()], name=MASTER)
        deployment(WORKER, WORKER_LABELS, cfg.workers, ["--worker", "--master-host", MASTER])
        self.register_outputs({"target": args.target})
