"""StackConfig: every per-environment difference, read once from Pulumi config and validated.

This is the only module that reads ``pulumi.Config``. ``parse`` is pure (plain mappings in, a frozen
dataclass or one ``ConfigError`` naming the key out) so the rules are tested without a runtime.
Keys live in the ``blueprint:`` namespace of ``Pulumi.<stack>.yaml``.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import pulumi

from loadtests.sizing.mix import API_KEY_OPERATIONS, DEFAULT_FRACTIONS

PROJECT = "blueprint"
APP_ENVS = ("development", "staging", "production")
LOADTEST_TARGETS = ("pod", "ingress")
DB_MODES = ("in-cluster", "external")
EXPOSURES = ("ingress", "loadbalancer")
T = TypeVar("T")


class ConfigError(pulumi.RunError):
    """A stack configuration the program refuses; the message names the key."""


@dataclass(frozen=True)
class Resources:
    cpu: str
    cpu_limit: str
    memory: str


@dataclass(frozen=True)
class ImageConfig:
    ref: str | None  # an existing image (CI-built); None builds from the repo's Dockerfile
    registry: str | None
    repository: str
    tag: str
    platform: str
    username: str | None
    password: pulumi.Input[str] | None
    pull_secret: str | None  # the docker-registry Secret the program creates for the pods
    pull_server: str | None = None  # the registry that Secret logs in to (the image's host)
    pull_username: str | None = None
    pull_password: pulumi.Input[str] | None = None  # read-only credentials: the pods only pull


@dataclass(frozen=True)
class PostgresConfig:
    mode: str
    max_connections: int
    image: str
    storage: str
    storage_class: str | None
    resources: Resources
    url: pulumi.Input[str] | None  # external mode: the managed database's URL (a secret)
    # Pulumi refuses to delete or replace a protected StatefulSet (a storage change would
    # replace it and re-bind the old volume): see docs/deployment.md, "Resizing Postgres".
    protect: bool = True


@dataclass(frozen=True)
class RedisConfig:
    mode: str
    image: str
    resources: Resources
    url: pulumi.Input[str] | None
    maxmemory_mi: int = 96  # below the container's memory limit (checked in parse)


@dataclass(frozen=True)
class ExposureConfig:
    kind: str
    host: str | None
    ingress_class: str
    tls: bool
    cert_manager_issuer: str | None
    controller_namespace: str
    source_ranges: tuple[str, ...]
    # Extra peers of the app pods in ingress mode, as CIDRs: controllers that send from node or
    # load-balancer addresses (GKE NEGs, AWS ALB IP targets, hostNetwork controllers).
    peer_cidrs: tuple[str, ...] = ()
    # False: Pulumi does not wait for the Ingress / LoadBalancer to report an address (a
    # controller that never publishes status, or nothing that provisions load balancers).
    await_ready: bool = True
    await_minutes: int = 10  # Pulumi's create/update timeout for the exposure objects
    docs_public: bool = False  # route /docs and /openapi.json through the Ingress


@dataclass(frozen=True)
class LoadtestConfig:
    enabled: bool
    image: str
    workers: int  # Locust worker pods, one open-loop scheduler each
    arrival_rate: float  # total requests per second over all schedulers (LOADTEST_RATE)
    run_time: str
    locustfile: str
    seed_users: int  # accounts `seed-loadtest` creates; the Locust users log in as these only
    # pod: one pod through the app's Service, the HPA off (per-pod capacity); ingress: the public
    # host through the Ingress (end-to-end capacity).
    target: str = "pod"
    allow_production: bool = False  # a production stack refuses loadtestEnabled without it


@dataclass(frozen=True)
class AppConfig:
    app_env: str
    workers: int
    min_replicas: int
    max_replicas: int
    max_surge: int
    hpa_cpu_target: int
    hpa_memory_target: int | None
    scale_down_stabilization: int
    cpu: str
    cpu_limit: str
    memory_base_mi: int
    memory_per_worker_mi: int
    db_pool_size: int
    db_max_overflow: int
    graceful_timeout: int
    pre_stop_seconds: int
    connection_reserve: int
    log_level: str
    trusted_proxies: tuple[str, ...]
    cors_origins: tuple[str, ...]
    rate_limit_login: str | None  # None: the service's default (RATE_LIMIT_LOGIN)
    first_admin_email: str | None
    first_admin_password: pulumi.Input[str] | None
    jwt_secret: pulumi.Input[str] | None  # None in development: a RandomPassword is generated
    monitoring_namespace: str | None
    # Where the app pods may open connections besides DNS and the in-cluster stores: the
    # managed databases, the IdP's JWKS host. Cloud metadata addresses are always excluded.
    egress_cidrs: tuple[str, ...] = ("0.0.0.0/0",)
    # The service's other budgets (RATE_LIMIT_CLIENT, RATE_LIMIT_USER, RATE_LIMIT_API_KEY_DEFAULT,
    # RATE_LIMIT_LOGIN_IP); None: the service's default (SERVICE_RATE_LIMITS).
    rate_limit_client: str | None = None
    rate_limit_user: str | None = None
    rate_limit_api_key_default: str | None = None
    rate_limit_login_ip: str | None = None

    def rate_limit(self, name: str) -> str:
        """The limit the service applies for stack key `name`: the stack's or its default."""
        value: str | None = getattr(self, _RATE_LIMIT_FIELDS[name])
        return value or SERVICE_RATE_LIMITS[name]

    @property
    def memory_mi(self) -> int:
        """Pod memory, request = limit: a base for the Gunicorn master plus a budget per worker."""
        return self.memory_base_mi + self.workers * self.memory_per_worker_mi

    @property
    def connections_per_pod(self) -> int:
        return self.workers * (self.db_pool_size + self.db_max_overflow)


@dataclass(frozen=True)
class StackConfig:
    stack: str
    namespace: str
    kubeconfig: str | None  # a path or the file's content (the provider gets it as a secret)
    kube_context: str | None
    image: ImageConfig
    app: AppConfig
    postgres: PostgresConfig
    redis: RedisConfig
    exposure: ExposureConfig
    loadtest: LoadtestConfig


# Keys that must come from `pulumi config set --secret`; everything else is plain.
SECRET_KEYS = (
    "registryPassword",
    "databaseUrl",
    "redisUrl",
    "jwtSecret",
    "firstAdminPassword",
    "pullPassword",
)
PLAIN_KEYS = (
    "namespace",
    "appEnv",
    "kubeconfig",
    "kubeContext",
    "image",
    "registry",
    "imageRepository",
    "imageTag",
    "imagePlatform",
    "registryUsername",
    "imagePullSecret",
    "pullRegistry",
    "pullUsername",
    "workers",
    "minReplicas",
    "maxReplicas",
    "maxSurge",
    "hpaCpuTarget",
    "hpaMemoryTarget",
    "scaleDownStabilizationSeconds",
    "cpuRequest",
    "cpuLimit",
    "memoryBaseMi",
    "memoryPerWorkerMi",
    "dbPoolSize",
    "dbMaxOverflow",
    "gracefulTimeout",
    "preStopSeconds",
    "connectionReserve",
    "logLevel",
    "trustedProxies",
    "corsOrigins",
    "rateLimitLogin",
    "rateLimitClient",
    "rateLimitUser",
    "rateLimitApiKeyDefault",
    "rateLimitLoginIp",
    "firstAdminEmail",
    "monitoringNamespace",
    "egressCidrs",
    "postgresMode",
    "postgresMaxConnections",
    "postgresImage",
    "postgresStorage",
    "postgresStorageClass",
    "postgresResources",
    "postgresProtect",
    "redisMode",
    "redisImage",
    "redisResources",
    "redisMaxmemoryMi",
    "exposure",
    "host",
    "ingressClass",
    "tls",
    "certManagerIssuer",
    "ingressControllerNamespace",
    "loadBalancerSourceRanges",
    "ingressPeerCidrs",
    "awaitExposure",
    "awaitTimeoutMinutes",
    "docsPublic",
    "loadtestEnabled",
    "loadtestImage",
    "loadtestWorkers",
    "loadtestArrivalRate",
    "loadtestRunTime",
    "loadtestLocustfile",
    "loadtestSeedUsers",
    "loadtestTarget",
    "loadtestAllowProduction",
)
KEYS = PLAIN_KEYS + SECRET_KEYS
# Keys that meant something once: a stack that still sets one is refused with what replaced it,
# rather than silently ignored.
RETIRED_KEYS = {
    "loadtestUsers": "the load test is open loop (one scheduler per worker pod); set the total "
    f"rate in requests per second with {PROJECT}:loadtestArrivalRate instead",
    "loadtestSpawnRate": "the open-loop schedulers start at once (one per worker pod); remove it "
    f"and set the rate with {PROJECT}:loadtestArrivalRate",
}

_IMAGE_REF = re.compile(r"^[a-z0-9][a-z0-9._:/-]*(:[\w][\w.-]{0,127})?(@sha256:[0-9a-f]{64})?$")
_QUANTITY = re.compile(r"^\d+(\.\d+)?(m|Ki|Mi|Gi|Ti)?$")
# The `limits` library's notation ("10/minute", "5 per second;100/hour"): the service's
# LIMIT_PATTERN (service/api_keys/schemas.py), copied since infra never imports the service;
# tests/infra/test_contract.py keeps the two equal.
_LIMIT_UNIT = r"(second|minute|hour|day|month|year)s?"
_ONE_LIMIT = rf"\s*[1-9][0-9]{{0,8}}\s*(/|per)\s*([1-9][0-9]{{0,5}}\s*)?{_LIMIT_UNIT}\s*"
LIMIT_PATTERN = rf"^{_ONE_LIMIT}([;,|]{_ONE_LIMIT})*$"
# The `limits` library's granularities in seconds (a month is 30 days, a year 12 months).
_UNIT_SECONDS = {
    "second": 1,
    "minute": 60,
    "hour": 3600,
    "day": 86_400,
    "month": 30 * 86_400,
    "year": 12 * 30 * 86_400,
}
# The service's defaults for the budgets a load test spends (service/settings.py), copied since
# infra never imports the service; tests/infra/test_contract.py keeps them equal.
SERVICE_RATE_LIMITS = {
    "rateLimitClient": "2400/minute",  # RATE_LIMIT_CLIENT: per client address (IPv6: per /64)
    "rateLimitUser": "600/minute",  # RATE_LIMIT_USER: per user (each seeded account)
    "rateLimitApiKeyDefault": "1200/minute",  # RATE_LIMIT_API_KEY_DEFAULT: the seeded key's tier
    "rateLimitLoginIp": "30/minute",  # RATE_LIMIT_LOGIN_IP: password checks per client address
}
_RATE_LIMIT_FIELDS = {
    "rateLimitClient": "rate_limit_client",
    "rateLimitUser": "rate_limit_user",
    "rateLimitApiKeyDefault": "rate_limit_api_key_default",
    "rateLimitLoginIp": "rate_limit_login_ip",
}
# A load test is refused unless each budget it spends allows this multiple of the sustained rate
# it sends that budget: room for the Poisson schedule's bursts, a scheduler catching up after a
# pause, the logins and probes the mix leaves out, and a realised mix a little off the intended.
LOADTEST_HEADROOM = 1.5


def key(name: str) -> str:
    return f"{PROJECT}:{name}"


def required_secrets(values: Mapping[str, str]) -> list[str]:
    """Secret keys this configuration cannot run without (nothing can be generated for them)."""
    needed = []
    if values.get("appEnv") != "development":
        needed.append("jwtSecret")
    if values.get("postgresMode") == "external":
        needed.append("databaseUrl")
    if values.get("redisMode") == "external":
        needed.append("redisUrl")
    if values.get("imagePullSecret"):
        needed.append("pullPassword")
    return needed


class _Reader:
    """Typed access to the raw strings, raising ConfigError that names the key."""

    def __init__(self, values: Mapping[str, str]) -> None:
        self.values = values

    def fail(self, name: str, problem: str) -> ConfigError:
        return ConfigError(f"{key(name)}: {problem}")

    def _get(self, name: str, default: T | None, convert: Callable[[str], T], kind: str) -> T:
        raw = self.values.get(name)
        if raw is None or raw == "":
            if default is None:
                raise self.fail(name, "is required")
            return default
        try:
            return convert(raw)
        except (ValueError, TypeError, json.JSONDecodeError):
            raise self.fail(name, f"{raw!r} is not {kind}") from None

    def text(self, name: str, default: str | None = None) -> str:
        return self._get(name, default, str, "a string")

    def opt(self, name: str) -> str | None:
        return self.values.get(name) or None

    def integer(self, name: str, default: int | None = None, minimum: int = 0) -> int:
        value = self._get(name, default, int, "an integer")
        if value < minimum:
            raise self.fail(name, f"must be at least {minimum}, got {value}")
        return value

    def positive(self, name: str, default: float) -> float:
        """A finite number above zero (an integer or a decimal)."""
        value = self._get(name, default, float, "a number")
        if not math.isfinite(value) or value <= 0:
            raise self.fail(name, f"must be a positive number, got {self.values.get(name)!r}")
        return value

    def flag(self, name: str, default: bool) -> bool:
        value = self.values.get(name, str(default)).lower()
        if value not in ("true", "false"):
            raise self.fail(name, f"{value!r} is not true or false")
        return value == "true"

    def choice(self, name: str, choices: tuple[str, ...], default: str | None = None) -> str:
        value = self.text(name, default)
        if value not in choices:
            raise self.fail(name, f"unknown value {value!r}; expected one of {', '.join(choices)}")
        return value

    def items(self, name: str) -> tuple[str, ...]:
        raw = self.values.get(name)
        if not raw:
            return ()
        if raw.lstrip().startswith("["):
            value = self._get(name, None, json.loads, "a list")
            if not isinstance(value, list):
                raise self.fail(name, "must be a list")
            return tuple(str(item) for item in value)
        return tuple(part.strip() for part in raw.split(",") if part.strip())

    def quantity(self, name: str, default: str) -> str:
        value = self.text(name, default)
        if not _QUANTITY.match(value):
            raise self.fail(name, f"{value!r} is not a Kubernetes quantity")
        return value

    def limit(self, name: str) -> str | None:
        """An optional rate limit in the `limits` notation; None leaves the service's default."""
        value = self.opt(name)
        if value is not None and (len(value) > 200 or not re.fullmatch(LIMIT_PATTERN, value)):
            raise self.fail(name, f"{value!r} is not a rate limit such as '100/minute'")
        return value

    def resources(self, name: str, default: Resources) -> Resources:
        raw = self.values.get(name)
        if not raw:
            return default
        data: Any = self._get(name, None, json.loads, "an object")
        if not isinstance(data, dict) or set(data) - {"cpu", "cpuLimit", "memory"}:
            raise self.fail(name, "must be an object with cpu, cpuLimit and memory")
        nested = _Reader({k: str(v) for k, v in data.items()})
        try:
            return Resources(
                cpu=nested.quantity("cpu", default.cpu),
                cpu_limit=nested.quantity("cpuLimit", default.cpu_limit),
                memory=nested.quantity("memory", default.memory),
            )
        except ConfigError as error:
            raise self.fail(name, str(error).removeprefix(f"{PROJECT}:")) from None


def _image_ref(reader: _Reader, name: str, default: str | None = None) -> str:
    value = reader.text(name, default)
    if not _IMAGE_REF.match(value):
        raise reader.fail(name, f"{value!r} is not an image reference")
    if "@" not in value and ":" not in value.rsplit("/", 1)[-1]:
        raise reader.fail(name, f"{value!r} has no tag or digest; pin a version")
    if value.rsplit("/", 1)[-1].split("@")[0].endswith(":latest"):
        raise reader.fail(name, f"{value!r} uses the 'latest' tag; pin a version or digest")
    return value


def _registry_host(ref: str) -> str:
    """The registry part of an image reference (Docker Hub when it has none)."""
    first = ref.split("/", 1)[0]
    return first if "/" in ref and ("." in first or ":" in first) else "docker.io"


_MEBIBYTES = {"Ki": 1 / 1024, "Mi": 1, "Gi": 1024, "Ti": 1024 * 1024}


def _mebibytes(quantity: str) -> int:
    """A memory quantity (``128Mi``, ``1Gi``, bytes) in whole MiB."""
    for suffix, factor in _MEBIBYTES.items():
        if quantity.endswith(suffix):
            return int(float(quantity.removesuffix(suffix)) * factor)
    return int(float(quantity.rstrip("m")) / (1024 * 1024))


def per_second(limit: str) -> float:
    """The sustained rate a limit in the `limits` notation allows, in requests per second.

    The service runs every window of a limit as its own GCRA (service/ratelimit/gcra.py): each
    allows a burst of its amount, then amount / window seconds. Held long enough, the tightest of
    those rates is what passes, so it decides ("600/minute;10000/hour" sustains 2.78/s, not 10/s).
    A run shorter than a long window may get more through on that window's burst; a capacity
    measurement must not count on it.
    """
    if not re.fullmatch(LIMIT_PATTERN, limit):
        raise ValueError(f"{limit!r} is not a rate limit such as '100/minute'")
    rates = []
    for part in re.split(r"[;,|]", limit):
        found = re.fullmatch(rf"\s*(\d+)\s*(?:/|per)\s*(?:(\d+)\s*)?{_LIMIT_UNIT}\s*", part)
        assert found is not None  # the pattern above matched
        amount, multiple, unit = found.groups()
        rates.append(int(amount) / (int(multiple or 1) * _UNIT_SECONDS[unit]))
    return min(rates)


def burst(limit: str) -> int:
    """The most requests a limit lets through at once: its smallest window's amount (each window
    is a GCRA that allows a burst of its amount)."""
    if not re.fullmatch(LIMIT_PATTERN, limit):
        raise ValueError(f"{limit!r} is not a rate limit such as '100/minute'")
    return min(int(re.split(r"/|per", part)[0]) for part in re.split(r"[;,|]", limit))


def loadtest_rates(loadtest: LoadtestConfig) -> dict[str, tuple[float, str]]:
    """Per budget (its stack key): the sustained requests per second the load test sends it, and
    who that is.

    The mix is the locustfile's default (loadtests/sizing/mix.py; the program sets no
    LOADTEST_MIX). The API-key operations spend the one seeded key's budget; every other request
    an account's, and scheduler i of S uses only the accounts j with j % S == i, picked at random,
    so the smallest share (loadtestSeedUsers // loadtestWorkers accounts) is the busiest.

    Client addresses: the service counts the socket's peer, or, from a TRUSTED_PROXIES peer, the
    right-most X-Forwarded-For hop outside those networks (the left-most when all are inside).
    With `pod` the workers reach the app pod through its Service, which keeps their source
    addresses: one address per worker pod, each with its share of the rate. With `ingress`
    trustedProxies (required, the controller's network) makes the app believe the controller's
    X-Forwarded-For, which holds the address the controller saw the worker from: the worker pod's
    only when the traffic to the public host stays in the cluster; through a load balancer or a
    node port it is a node's or the balancer's, shared by every worker. So `ingress` counts the
    whole rate as one address (the worst case, and the case where trustedProxies misses the
    controller too).
    """
    total = sum(DEFAULT_FRACTIONS.values())
    key_share = sum(DEFAULT_FRACTIONS.get(op, 0.0) for op in API_KEY_OPERATIONS) / total
    rate, workers = loadtest.arrival_rate, loadtest.workers
    accounts = loadtest.seed_users // workers
    if loadtest.target == "pod":
        address = (
            rate / workers,
            f"each Locust worker pod's address ({rate:g} / {workers}; or more "
            f"{key('loadtestWorkers')})",
        )
    else:
        address = (
            rate,
            "the one address the ingress controller may see every worker from (all of it, "
            "whatever the worker count)",
        )
    return {
        "rateLimitClient": address,
        "rateLimitUser": (
            rate / workers * (1 - key_share) / accounts,
            f"each seeded account ({1 - key_share:.0%} of {rate:g} / {workers} workers over "
            f"{accounts} accounts; or more {key('loadtestSeedUsers')})",
        ),
        "rateLimitApiKeyDefault": (rate * key_share, f"the seeded API key ({key_share:.0%})"),
    }


def loadtest_login_burst(loadtest: LoadtestConfig) -> tuple[int, str]:
    """The password checks one client address sends at once, and who that is: each Locust process
    logs its accounts in when it starts (loadtests/locustfile.py, inside the warm-up), one after
    another, so its share of the seeded accounts arrives as one burst. Later logins (one per
    account per token lifetime) are far below any login limit. Addresses as in `loadtest_rates`."""
    if loadtest.target == "pod":
        share = math.ceil(loadtest.seed_users / loadtest.workers)
        return share, f"each Locust worker pod ({share} of {loadtest.seed_users} accounts)"
    return loadtest.seed_users, "the one address the ingress controller may see every worker from"


def _per_minute(rate: float) -> int:
    """A rate per second as whole requests a minute, rounded up (past float noise: 1800.0000001
    is 1800)."""
    return math.ceil(round(rate * 60, 6))


def check_loadtest_limits(app: AppConfig, loadtest: LoadtestConfig) -> None:
    """Refuse a load test the service's own rate limits would stop: each budget it spends must
    allow LOADTEST_HEADROOM x the sustained rate the run sends it (else 429s fail the run, and
    the capacity measured is the limit's)."""
    if loadtest.seed_users < loadtest.workers:
        raise ConfigError(
            f"{key('loadtestSeedUsers')}: {loadtest.seed_users} accounts for "
            f"{loadtest.workers} {key('loadtestWorkers')}: each worker needs one of its own"
        )
    short = []
    for name, (expected, who) in loadtest_rates(loadtest).items():
        limit = app.rate_limit(name)
        needed = LOADTEST_HEADROOM * expected
        if per_second(limit) < needed * (1 - 1e-9):  # float noise is no shortfall
            short.append(
                f"{key(name)} is {limit!r} ({per_second(limit):.3g}/s) and {who} gets "
                f"{expected:.3g}/s, so set at least '{_per_minute(needed)}/minute'"
            )
    logins, who = loadtest_login_burst(loadtest)
    login_limit = app.rate_limit("rateLimitLoginIp")
    if burst(login_limit) < logins:
        short.append(
            f"{key('rateLimitLoginIp')} is {login_limit!r} (a burst of {burst(login_limit)}) "
            f"and {who} logs in {logins} accounts at once when it starts, so set at least "
            f"'{logins}/minute' (or fewer {key('loadtestSeedUsers')})"
        )
    if short:
        raise ConfigError(
            f"the load test's {key('loadtestArrivalRate')} {loadtest.arrival_rate:g} req/s would "
            f"be stopped by the service's rate limits (each must allow {LOADTEST_HEADROOM:g}x "
            f"the sustained rate it gets): {'; '.join(short)}. Raise them for the run and unset "
            f"them after, or lower {key('loadtestArrivalRate')}."
        )


def check_connection_budget(app: AppConfig, max_connections: int) -> None:
    """Refuse a worst case that opens more Postgres connections than the server allows.

    Worst case: every pod the HPA may run, plus the rolling-update surge, with every worker's pool
    full and overflowing; plus the migration Job (one process, same pool settings) and a reserve
    for superuser/maintenance connections.
    """
    pods = app.max_replicas + app.max_surge
    pool = app.db_pool_size + app.db_max_overflow
    migration = pool
    worst = pods * app.connections_per_pod + migration + app.connection_reserve
    if worst > max_connections:
        raise ConfigError(
            f"connection budget exceeded: worst case {worst} connections = "
            f"(maxReplicas {app.max_replicas} + maxSurge {app.max_surge}) x workers {app.workers}"
            f" x (dbPoolSize {app.db_pool_size} + dbMaxOverflow {app.db_max_overflow})"
            f" + migration {migration} + reserve {app.connection_reserve},"
            f" but {key('postgresMaxConnections')} is {max_connections}."
            f" Lower {key('maxReplicas')}, {key('workers')} or the pool sizes,"
            " or raise max_connections."
        )


def _app(r: _Reader, secrets: Mapping[str, pulumi.Input[str]]) -> AppConfig:
    app_env = r.choice("appEnv", APP_ENVS)
    min_replicas = r.integer("minReplicas", 1, minimum=1)
    max_replicas = r.integer("maxReplicas", max(min_replicas, 2), minimum=1)
    if min_replicas > max_replicas:
        raise r.fail("minReplicas", f"{min_replicas} is above {key('maxReplicas')} {max_replicas}")
    hpa_cpu = r.integer("hpaCpuTarget", 70, minimum=1)
    if hpa_cpu > 100:
        raise r.fail("hpaCpuTarget", f"{hpa_cpu} is above 100 (percent of the CPU request)")
    memory_target = r.integer("hpaMemoryTarget", 0) or None
    app = AppConfig(
        app_env=app_env,
        workers=r.integer("workers", minimum=1),
        min_replicas=min_replicas,
        max_replicas=max_replicas,
        max_surge=r.integer("maxSurge", 1, minimum=1),
        hpa_cpu_target=hpa_cpu,
        hpa_memory_target=memory_target,
        scale_down_stabilization=r.integer("scaleDownStabilizationSeconds", 300),
        cpu=r.quantity("cpuRequest", "250m"),
        cpu_limit=r.quantity("cpuLimit", "1"),
        memory_base_mi=r.integer("memoryBaseMi", 64, minimum=32),
        memory_per_worker_mi=r.integer("memoryPerWorkerMi", 120, minimum=32),
        db_pool_size=r.integer("dbPoolSize", 5, minimum=1),
        db_max_overflow=r.integer("dbMaxOverflow", 5),
        graceful_timeout=r.integer("gracefulTimeout", 20, minimum=1),
        pre_stop_seconds=r.integer("preStopSeconds", 5, minimum=1),
        connection_reserve=r.integer("connectionReserve", 10),
        log_level=r.choice("logLevel", ("DEBUG", "INFO", "WARNING", "ERROR"), "INFO"),
        trusted_proxies=r.items("trustedProxies"),
        cors_origins=r.items("corsOrigins"),
        rate_limit_login=r.limit("rateLimitLogin"),
        rate_limit_client=r.limit("rateLimitClient"),
        rate_limit_user=r.limit("rateLimitUser"),
        rate_limit_api_key_default=r.limit("rateLimitApiKeyDefault"),
        rate_limit_login_ip=r.limit("rateLimitLoginIp"),
        first_admin_email=r.opt("firstAdminEmail"),
        first_admin_password=secrets.get("firstAdminPassword"),
        jwt_secret=secrets.get("jwtSecret"),
        monitoring_namespace=r.opt("monitoringNamespace"),
        egress_cidrs=r.items("egressCidrs") or ("0.0.0.0/0",),
    )
    if not app.trusted_proxies:
        raise r.fail("trustedProxies", "is required (the ingress controller's pod network)")
    return app


def _exposure(r: _Reader) -> ExposureConfig:
    kind = r.choice("exposure", EXPOSURES, "ingress")
    exposure = ExposureConfig(
        kind=kind,
        host=r.text("host") if kind == "ingress" else r.opt("host"),
        ingress_class=r.text("ingressClass", "nginx"),
        tls=r.flag("tls", False),
        cert_manager_issuer=r.opt("certManagerIssuer"),
        controller_namespace=r.text("ingressControllerNamespace", "ingress-nginx"),
        source_ranges=r.items("loadBalancerSourceRanges") or ("0.0.0.0/0",),
        peer_cidrs=r.items("ingressPeerCidrs"),
        await_ready=r.flag("awaitExposure", True),
        await_minutes=r.integer("awaitTimeoutMinutes", 10, minimum=1),
        docs_public=r.flag("docsPublic", False),
    )
    if exposure.cert_manager_issuer and not exposure.tls:
        raise r.fail("certManagerIssuer", f"needs {key('tls')}: true")
    return exposure


def _loadtest(r: _Reader, app: AppConfig, exposure: ExposureConfig) -> LoadtestConfig:
    for name, replacement in RETIRED_KEYS.items():
        if name in r.values:
            raise r.fail(name, f"is no longer read: {replacement}")
    loadtest = LoadtestConfig(
        enabled=r.flag("loadtestEnabled", False),
        image=_image_ref(r, "loadtestImage", "locustio/locust:2.47.0"),
        workers=r.integer("loadtestWorkers", 2, minimum=1),
        arrival_rate=r.positive("loadtestArrivalRate", 50.0),
        run_time=r.text("loadtestRunTime", "5m"),
        locustfile=r.text("loadtestLocustfile", "loadtests/locustfile.py"),
        seed_users=r.integer("loadtestSeedUsers", 20, minimum=1),
        target=r.choice("loadtestTarget", LOADTEST_TARGETS, "pod"),
        allow_production=r.flag("loadtestAllowProduction", False),
    )
    if not re.fullmatch(r"\d+[smh]", loadtest.run_time):
        raise r.fail("loadtestRunTime", f"{loadtest.run_time!r} is not like 90s, 5m or 1h")
    if not loadtest.enabled:
        return loadtest
    if app.app_env == "production" and not loadtest.allow_production:
        raise r.fail(
            "loadtestEnabled",
            "a load test on a production stack seeds accounts and an admin API key there and "
            f"spends its capacity; set {key('loadtestAllowProduction')}: true to allow it",
        )
    if loadtest.target == "pod" and (app.min_replicas, app.max_replicas) != (1, 1):
        raise r.fail(
            "loadtestTarget",
            "pod measures one pod directly with the HPA off: set "
            f"{key('minReplicas')} and {key('maxReplicas')} to 1 while the load test runs "
            f"(they are {app.min_replicas} and {app.max_replicas}), or use "
            f"{key('loadtestTarget')}: ingress for end-to-end capacity",
        )
    if loadtest.target == "ingress" and (exposure.kind != "ingress" or not exposure.host):
        raise r.fail(
            "loadtestTarget",
            f"ingress aims at the public host through the Ingress, and this stack has none "
            f"({key('exposure')} is {exposure.kind}); use {key('loadtestTarget')}: pod",
        )
    check_loadtest_limits(app, loadtest)
    return loadtest


def parse(
    stack: str, values: Mapping[str, str], secrets: Mapping[str, pulumi.Input[str]]
) -> StackConfig:
    """Validate raw config strings (JSON for objects and lists) into a StackConfig."""
    r = _Reader(values)
    for name in required_secrets(values):
        if secrets.get(name) is None:
            raise r.fail(name, f"is required: pulumi config set --secret {key(name)} ...")
    app = _app(r, secrets)
    image_ref = _image_ref(r, "image") if r.opt("image") else None
    if image_ref and app.app_env == "production" and "@sha256:" not in image_ref:
        raise r.fail(
            "image", f"{image_ref!r}: production runs an image pinned by digest (@sha256:)"
        )
    image = ImageConfig(
        ref=image_ref,
        registry=None if image_ref else r.text("registry"),
        repository=r.text("imageRepository", PROJECT),
        tag=r.text("imageTag", stack),
        platform=r.text("imagePlatform", "linux/amd64"),
        username=r.opt("registryUsername"),
        password=secrets.get("registryPassword"),
        pull_secret=r.opt("imagePullSecret"),
        pull_server=r.opt("pullRegistry") or _registry_host(image_ref or r.text("registry")),
        pull_username=r.opt("pullUsername"),
        pull_password=secrets.get("pullPassword"),
    )
    if image.pull_secret and not image.pull_username:
        raise r.fail("pullUsername", f"is required with {key('imagePullSecret')}")
    if image.tag == "latest":
        raise r.fail("imageTag", "'latest' is not allowed; the Deployment pins the digest anyway")
    pg_mode = r.choice("postgresMode", DB_MODES)
    postgres = PostgresConfig(
        mode=pg_mode,
        max_connections=r.integer(
            "postgresMaxConnections", 100 if pg_mode == "in-cluster" else None, minimum=10
        ),
        image=_image_ref(r, "postgresImage", "postgres:17.2"),
        storage=r.quantity("postgresStorage", "1Gi"),
        storage_class=r.opt("postgresStorageClass"),
        resources=r.resources("postgresResources", Resources("250m", "1", "512Mi")),
        url=secrets.get("databaseUrl"),
        protect=r.flag("postgresProtect", True),
    )
    redis_resources = r.resources("redisResources", Resources("100m", "500m", "128Mi"))
    redis_limit_mi = _mebibytes(redis_resources.memory)
    redis = RedisConfig(
        mode=r.choice("redisMode", DB_MODES),
        image=_image_ref(r, "redisImage", "redis:7.4.6-alpine"),
        resources=redis_resources,
        url=secrets.get("redisUrl"),
        # Room above the data for the server itself, its buffers and fragmentation.
        maxmemory_mi=r.integer("redisMaxmemoryMi", redis_limit_mi * 3 // 4, minimum=1),
    )
    if redis.mode == "in-cluster" and redis.maxmemory_mi >= redis_limit_mi:
        raise r.fail(
            "redisMaxmemoryMi",
            f"{redis.maxmemory_mi} must be below the container's memory limit"
            f" ({redis_resources.memory})",
        )
    exposure = _exposure(r)
    loadtest = _loadtest(r, app, exposure)
    check_connection_budget(app, postgres.max_connections)
    return StackConfig(
        stack=stack,
        namespace=r.text("namespace"),
        kubeconfig=r.opt("kubeconfig"),
        kube_context=r.opt("kubeContext"),
        image=image,
        app=app,
        postgres=postgres,
        redis=redis,
        exposure=exposure,
        loadtest=loadtest,
    )


def load() -> StackConfig:
    """Read the stack's `blueprint:` config once (secrets stay Outputs) and validate it."""
    config = pulumi.Config(PROJECT)
    names = (*PLAIN_KEYS, *RETIRED_KEYS)  # the retired ones are read to be refused
    values = {name: value for name in names if (value := config.get(name)) is not None}
    secrets = {
        name: secret for name in SECRET_KEYS if (secret := config.get_secret(name)) is not None
    }
    return parse(pulumi.get_stack(), values, secrets)
