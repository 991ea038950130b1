"""Optional in-cluster load (off by default): distributed, open-loop Locust aimed at the app.

The master is a Job: one headless run (``--headless``, ``--run-time``), a deadline, no retries
(``backoffLimit: 0``: a failed load test is a result, not something to repeat) and a TTL. Its
results survive the pod in the log: the summary and ``--json`` statistics go to stdout, which
``kubectl logs job/<name>`` reads until the TTL removes the Job. The locustfile's thresholds
(LOADTEST_MAX_FAIL_RATIO, late or dropped starts, LOADTEST_MAX_P95_MS) set its exit code, so the
Job fails, and ``pulumi up`` with it, when they do. Workers are a Deployment of N replicas with
one whole CPU each (request = limit: Guaranteed, never throttled mid-schedule), kept off the
nodes of the app's pods where the cluster has room.

The schedule is open loop (see loadtests/locustfile.py): one scheduler per worker pod, so
``--users`` is the worker count and ``loadtestArrivalRate`` (LOADTEST_RATE) the total arrival rate
in requests per second they share. The target is the program's choice from ``loadtestTarget``:
the app's Service with one pod and no HPA (per-pod capacity) or the public host through the
Ingress (end-to-end capacity); infra/config.py validates the stack for either, and refuses a
production stack without ``loadtestAllowProduction``.

Before Locust starts, a Job in the service's own image (``app.job``: the migration Job's settings,
secret files and hardening) runs ``python -m service seed-loadtest`` after the migrations: it
creates ``loadtestSeedUsers`` accounts with a generated password and mints the generated API key
(on the default, limited, API-key tier). Both credentials live in this component's Secret only;
the seed Job and the Locust containers read them from it (secretKeyRef), and Locust logs in as
the seeded accounts.

With the load test off, ``Revocation`` runs ``python -m service unseed-loadtest`` instead: the
seeded accounts are deactivated and their keys revoked, so switching the load test off leaves no
credential that works (a no-op when there are none).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi
import pulumi_kubernetes as k8s
import pulumi_random as random

from infra.components.app import POD_LABELS, Runtime, job
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
SIZE = Resources("250m", "1", "256Mi")  # the master: it aggregates, it does not send
WORKER_SIZE = Resources("1", "1", "512Mi")  # a whole CPU: a throttled scheduler starts late
DEADLINE_MARGIN_S = 300  # past the run time: workers connecting, the stop, the report
RESULTS_TTL_S = 86_400  # the finished Job (and its log, the results) is kept a day
MAX_FAIL_RATIO = "0.001"
SEED = "seed-loadtest"  # the seed Job's container and component label
UNSEED = "unseed-loadtest"  # the revocation Job's
UNSEED_COMMAND = ["python", "-m", "service", UNSEED]
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
    """The seeded users' password and the API key, generated once (kept, encrypted, in the
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
    # The app's Service (http://api.<namespace>.svc:80) or its public URL, per loadtestTarget.
    target: pulumi.Input[str]
    app: Runtime  # the service's image and settings, for the seed Job
    migration: pulumi.Resource  # the app's migration Job: the seed runs once it succeeded
    # What the target needs before the run starts (the app's Service, or the Ingress).
    wait_for: list[pulumi.Resource] = field(default_factory=list)


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
            {"name": "LOADTEST_RATE", "value": rate(cfg.arrival_rate)},
            {"name": "LOADTEST_SCHEDULERS", "value": str(cfg.workers)},
            {"name": "LOADTEST_MAX_FAIL_RATIO", "value": MAX_FAIL_RATIO},
            *from_secret,
        ]
        skips = checkov_skips(
            CKV_K8S_43="upstream Locust image pinned by version tag",
            CKV_K8S_8="a batch process: its exit code is the health that matters",
            CKV_K8S_9="a batch process: its exit code is the health that matters",
            **ENV_SECRETS_SKIP,
        )

        def locust(size: Resources, args_: list[Any], **fields: Any) -> dict[str, Any]:
            return container(
                "locust",
                cfg.image,
                size,
                mounts,
                args=["-f", LOCUSTFILE, *args_],
                env=env,
                **fields,
            )

        keep_away = {
            "podAntiAffinity": {
                # Preferred, not required: a one-node laptop cluster must still schedule them.
                "preferredDuringSchedulingIgnoredDuringExecution": [
                    {
                        "weight": 100,
                        "podAffinityTerm": {
                            "labelSelector": {"matchLabels": selector(POD_LABELS)},
                            "topologyKey": "kubernetes.io/hostname",
                        },
                    }
                ]
            }
        }
        workers = create(
            k8s.apps.v1.Deployment,
            WORKER,
            self,
            ns,
            WORKER_LABELS,
            annotations=skips,
            spec={
                "replicas": cfg.workers,
                "selector": {"matchLabels": selector(WORKER_LABELS)},
                "template": pod(
                    WORKER_LABELS,
                    [locust(WORKER_SIZE, ["--worker", "--master-host", MASTER])],
                    volumes,
                    affinity=keep_away,
                ),
            },
            opts=pulumi.ResourceOptions(depends_on=[seed]),
        )
        service(self, ns, MASTER_LABELS, {"master": MASTER_PORT}, name=MASTER)
        allow_ingress(self, ns, MASTER_LABELS, MASTER_PORT, [peer()], name=MASTER)
        master_args = [
            "--master",
            "--headless",
            "--expect-workers",
            str(cfg.workers),
            "--users",
            str(cfg.workers),
            "--spawn-rate",
            str(cfg.workers),
            "--run-time",
            cfg.run_time,
            "--host",
            args.target,
            "--only-summary",
            "--json",
        ]
        create(
            k8s.batch.v1.Job,
            MASTER,
            self,
            ns,
            MASTER_LABELS,
            named=False,
            annotations=skips,
            spec={
                "backoffLimit": 0,
                "activeDeadlineSeconds": run_seconds(cfg.run_time) + DEADLINE_MARGIN_S,
                "ttlSecondsAfterFinished": RESULTS_TTL_S,
                "template": pod(
                    MASTER_LABELS,
                    [
                        locust(
                            SIZE,
                            master_args,
                            ports=[{"name": "master", "containerPort": MASTER_PORT}],
                        )
                    ],
                    volumes,
                    restartPolicy="Never",
                ),
            },
            opts=pulumi.ResourceOptions(depends_on=[workers, *args.wait_for]),
        )
        self.register_outputs({"target": args.target})


@dataclass(frozen=True)
class RevocationArgs:
    namespace: pulumi.Input[str]
    app: Runtime  # the service's image and settings (the migration Job's), as for the seed
    migration: pulumi.Resource  # the accounts' table exists once it succeeded


class Revocation(pulumi.ComponentResource):
    """The load test switched off: a Job that deactivates the seeded accounts and revokes their
    API keys (``python -m service unseed-loadtest``, idempotent).

    Present whenever the load test is off, so it runs once when it is switched off (and once on
    a stack that never had one: a no-op). ``app.job`` names the Job by its template, and the
    template holds only the image and the fixed command: the same inputs leave the finished Job
    as it is on every later ``up``, and only a new image reruns it (a no-op again).
    """

    def __init__(
        self, name: str, args: RevocationArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("blueprint:index:LoadtestRevocation", name, None, opts)
        self.job = job(
            self,
            "loadtest-unseed",
            args.namespace,
            args.app,
            UNSEED,
            UNSEED_COMMAND,
            opts=pulumi.ResourceOptions(depends_on=[args.migration]),
        )
        self.register_outputs({})


def rate(requests_per_second: float) -> str:
    """LOADTEST_RATE as the locustfile parses it: 40 -> "40", 12.5 -> "12.5"."""
    return (
        str(int(requests_per_second))
        if requests_per_second.is_integer()
        else str(requests_per_second)
    )


def run_seconds(run_time: str) -> int:
    """Locust's --run-time ("90s", "5m", "1h"; LoadtestConfig checks the form) in seconds."""
    return int(run_time[:-1]) * {"s": 1, "m": 60, "h": 3600}[run_time[-1]]
