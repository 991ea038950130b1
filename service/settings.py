"""Every knob of the service, read once from the environment (and from secret files).

The field names, upper-cased, are the environment variables: they are the contract with
``infra/`` (the ConfigMap and Secret set exactly these names) and are listed in ``.env.example``.
Secrets can also come from files named after the variable in ``SECRETS_DIR`` (the directory
Kubernetes mounts a Secret into); the environment wins over a file.
"""

from __future__ import annotations

import ipaddress
import os
from enum import StrEnum
from functools import lru_cache
from typing import Annotated, Literal, Self

from limits import parse_many
from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

# Development-only defaults. Outside development the service refuses to start with any of them.
DEV_JWT_SECRET = "dev-only-jwt-secret-change-me-0123456789abcdef"  # noqa: S105
EMBEDDED_DATABASE_URL = "sqlite+aiosqlite:///./var/app.db"

# Names of the rate-limit tiers with a fixed meaning; others come from RATE_LIMIT_TIERS.
EXEMPT_TIER = "exempt"


class AppEnv(StrEnum):
    development = "development"
    staging = "staging"
    production = "production"


class ConfigurationError(RuntimeError):
    """Raised for a configuration the service must refuse; the message names the variable."""


def _cpu_count() -> int:
    # The CPUs this process may run on (a cgroup/taskset pin shows here), not the host's total.
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _split_csv(value: object) -> object:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        case_sensitive=False,
        extra="ignore",
        env_ignore_empty=True,
        hide_input_in_errors=True,
    )

    # --- the application -----------------------------------------------------------------
    app_env: AppEnv = AppEnv.development
    app_name: str = "blueprint"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # Largest request body accepted, in bytes (413 beyond it).
    max_body_bytes: int = Field(default=1_048_576, ge=1024)
    page_size_default: int = Field(default=50, ge=1)
    page_size_max: int = Field(default=100, ge=1)
    cors_origins: Annotated[list[str], NoDecode] = []
    metrics_enabled: bool = True
    # Request metrics are written to Prometheus' shared files in batches: at most this many
    # seconds after a request (at once when scraped and at shutdown), instead of per request.
    # A scrape served by another worker sees a request at most this late.
    metrics_flush_seconds: float = Field(default=1.0, gt=0, le=60)
    # FastAPI's own OpenTelemetry traces, metrics and logs. They act only once an OpenTelemetry
    # SDK provider is set up in the process (opentelemetry-instrument, say); the service reports
    # through Prometheus and sets none up. Off, FastAPI also skips its check for a provider,
    # which every request pays otherwise (docs/benchmarks.md).
    fastapi_telemetry: bool = False
    # Swagger UI at /docs and ReDoc at /redoc (assets served by the service, no CDN). Per
    # deployment: a public production API may keep its interactive docs off.
    docs_enabled: bool = True

    # --- serving (Gunicorn reads these through service/gunicorn_conf.py) -------------------
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    # Default: 2 x CPUs + 1 (Gunicorn's rule of thumb); `make size` measures the real answer.
    web_concurrency: int = Field(default_factory=lambda: 2 * _cpu_count() + 1, ge=1)
    # Seconds a worker may be silent before Gunicorn kills and replaces it.
    worker_timeout: int = Field(default=30, ge=1)
    # Seconds in-flight requests get to finish after SIGTERM.
    graceful_timeout: int = Field(default=20, ge=1)
    # Longer than a cloud load balancer's idle timeout (60 s), so the LB closes idle connections
    # first and never sends a request down a connection the server is closing.
    keepalive: int = Field(default=75, ge=1)
    # Seconds a client gets to send a request's headers (slowloris, silent connections).
    request_header_timeout: float = Field(default=10.0, gt=0)
    max_requests: int = Field(default=10_000, ge=0)
    max_requests_jitter: int = Field(default=1_000, ge=0)
    access_log: Literal["json", "off"] = "json"
    # Access lines are written in batches: at most this many seconds after a request (and at
    # shutdown), instead of one write per request.
    access_log_flush_seconds: float = Field(default=1.0, gt=0, le=60)
    # Networks whose X-Forwarded-For is believed (the ingress controller's); nobody else's is.
    trusted_proxies: Annotated[list[str], NoDecode] = []

    # --- database ---------------------------------------------------------------------------
    database_url: SecretStr = SecretStr(EMBEDDED_DATABASE_URL)
    db_pool_size: int = Field(default=5, ge=1)
    db_max_overflow: int = Field(default=5, ge=0)
    # Seconds to wait for a pooled connection before answering 503.
    db_pool_timeout: float = Field(default=5.0, gt=0)
    db_pool_recycle: int = Field(default=1800, ge=-1)
    # Off by default: with asyncpg a pre-ping is three round trips on every checkout. A dead
    # connection is found by the statement that uses it instead, and SQLAlchemy then discards
    # the whole pool, so an outage costs each worker at most one failed (503) request.
    db_pool_pre_ping: bool = False
    # Seconds to open a connection / to run one statement (asyncpg), so nothing hangs.
    db_connect_timeout: float = Field(default=3.0, gt=0)
    db_command_timeout: float = Field(default=10.0, gt=0)
    db_echo: bool = False
    # Readiness (service/health.py): seconds the check may take (the probe's timeout is longer),
    # and seconds a dependency may stay unreachable before this process reports not ready.
    ready_check_timeout: float = Field(default=1.0, gt=0)
    ready_failure_grace: float = Field(default=30.0, ge=0)

    # --- redis ------------------------------------------------------------------------------
    redis_url: SecretStr | None = None
    # Seconds for one Redis call; short, so a sick Redis costs little per request.
    redis_timeout: float = Field(default=0.25, gt=0)

    # --- tokens (our own issuer) ------------------------------------------------------------
    jwt_secret: SecretStr = SecretStr(DEV_JWT_SECRET)
    jwt_algorithm: Literal["HS256", "RS256", "EdDSA"] = "HS256"
    # PEM private key for RS256 / EdDSA; its public half is published at /.well-known/jwks.json.
    jwt_private_key: SecretStr | None = None
    jwt_key_id: str = "blueprint-1"
    jwt_issuer: str = "http://127.0.0.1:8000"
    jwt_audience: str = "blueprint-api"
    access_token_ttl_seconds: int = Field(default=900, ge=60)
    jwt_leeway_seconds: int = Field(default=30, ge=0)

    # --- verified principals, cached per worker -------------------------------------------
    # Seconds a verified token or key is trusted without looking again: the longest a
    # demotion, deactivation or key revocation can go unseen by a worker (so at most 1 s);
    # 0 turns the cache off.
    auth_cache_ttl_seconds: float = Field(default=0.5, ge=0, le=1.0)
    # Entries per worker (each a few hundred bytes); the oldest goes first beyond it.
    auth_cache_max_entries: int = Field(default=10_000, ge=1)

    # --- external identity provider (OIDC) ------------------------------------------------
    oidc_jwks_url: str | None = None
    oidc_issuer: str | None = None
    oidc_audience: str | None = None
    oidc_algorithms: Annotated[list[str], NoDecode] = ["RS256", "ES256", "PS256", "EdDSA"]
    # Dotted path to the roles in the IdP's token: "roles", "realm_access.roles", "scope", ...
    oidc_roles_claim: str = "roles"
    # A user whose roles (from the claim above) include this value is an admin.
    oidc_admin_role: str = "admin"
    oidc_jwks_cache_ttl_seconds: int = Field(default=600, ge=1)
    # An unknown `kid` triggers a re-fetch at most this often (seconds).
    oidc_jwks_min_refresh_seconds: int = Field(default=30, ge=0)
    oidc_http_timeout: float = Field(default=5.0, gt=0)
    # JOSE `typ` header values accepted as access tokens ("application/" prefix optional,
    # case-insensitive). RFC 9068 access tokens are "at+jwt". "jwt" admits plain JWTs (typ JWT
    # or none), for providers that issue no typed access tokens (see README, "Identity
    # providers"); such a token is still refused when it carries an ID-token claim (nonce,
    # at_hash, c_hash) or a logout token's `events`.
    oidc_token_types: Annotated[list[str], NoDecode] = ["at+jwt"]

    # --- passwords --------------------------------------------------------------------------
    password_min_length: int = Field(default=8, ge=1)
    # Bounds hashing cost per request (Argon2 over a megabyte "password" is a DoS).
    password_max_length: int = Field(default=128, ge=8)
    argon2_time_cost: int = Field(default=2, ge=1)
    argon2_memory_cost: int = Field(default=19_456, ge=1024)  # KiB; OWASP's minimum
    argon2_parallelism: int = Field(default=1, ge=1)
    # Hashes computed at once per worker: each Argon2 hash holds ARGON2_MEMORY_COST KiB, so a
    # login flood queues here instead of exhausting memory or every thread.
    password_hash_concurrency: int = Field(default=2, ge=1)
    first_admin_email: str | None = None
    first_admin_password: SecretStr | None = None

    # --- rate limits (the `limits` library's notation, e.g. "10/minute;100/hour") ----------
    # GCRA on Redis (service/ratelimit/gcra.py); docs/reliability.md states the policy.
    rate_limit_enabled: bool = True
    # Where the counters live: "redis" (REDIS_URL; shared by every worker and pod) or "memory"
    # (per process). Unset: redis when REDIS_URL is set, else memory. Production refuses to
    # start on memory unless it is asked for here.
    rate_limit_storage: Literal["redis", "memory"] | None = None
    # Per client address (IPv6: per /64), charged on every API request before any credential
    # is looked at, so bad tokens, bad keys, 401s and 403s all spend it. RATE_LIMIT_ANONYMOUS
    # is its former name.
    rate_limit_client: str = Field(
        default="2400/minute",
        validation_alias=AliasChoices("rate_limit_client", "rate_limit_anonymous"),
    )
    # Password checks (the token endpoint, and PATCH /users/me with current_password), each
    # charged against all three: per address and username (tight), per address (any username),
    # and per username from anywhere (loose, so a botnet needs many addresses and time before
    # the owner notices; it also caps guesses per account per hour).
    rate_limit_login: str = "5/minute"
    rate_limit_login_ip: str = "30/minute"
    rate_limit_login_username: str = "100/hour"
    rate_limit_user: str = "600/minute"
    # The tier of an API key created without one.
    rate_limit_api_key_default: str = "1200/minute"
    rate_limit_headers: bool = True
    # Credentials whose budget (which keys to charge) each worker remembers, so that a known
    # caller's limits ride in the same Redis call as its client budget (0: always two calls).
    rate_limit_known_credentials: int = Field(default=10_000, ge=0)
    # Leases (service/ratelimit/limiter.py): the most requests a worker asks Redis for at once
    # for a busy caller's front-door budgets (1: every request asks, exactly), and how long it
    # may hold them. A request can be admitted up to twice that long after Redis counted it.
    # Password budgets are never leased.
    rate_limit_lease_max: int = Field(default=256, ge=1)
    rate_limit_lease_seconds: float = Field(default=0.5, gt=0, le=60)
    # What to do when Redis cannot be reached: serve anyway (open) or answer 503 (closed).
    rate_limit_fail_mode: Literal["open", "closed"] = "open"
    # Consecutive Redis failures that open the breaker, and seconds before trying again.
    rate_limit_breaker_threshold: int = Field(default=3, ge=1)
    rate_limit_breaker_cooldown: float = Field(default=5.0, gt=0)

    @field_validator(
        "cors_origins", "trusted_proxies", "oidc_algorithms", "oidc_token_types", mode="before"
    )
    @classmethod
    def _csv(cls, value: object) -> object:
        return _split_csv(value)

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for network in value:
            ipaddress.ip_network(network, strict=False)  # raises ValueError naming the input
        return value

    @field_validator(
        "rate_limit_client",
        "rate_limit_login",
        "rate_limit_login_ip",
        "rate_limit_login_username",
        "rate_limit_user",
        "rate_limit_api_key_default",
    )
    @classmethod
    def _limit(cls, value: str) -> str:
        parse_many(value)  # raises ValueError naming the input
        return value

    @field_validator("oidc_algorithms")
    @classmethod
    def _asymmetric_only(cls, value: list[str]) -> list[str]:
        # The IdP path accepts asymmetric algorithms only; HMAC there invites key confusion.
        if bad := [alg for alg in value if alg.upper().startswith("HS") or alg == "none"]:
            raise ValueError(f"only asymmetric algorithms are allowed, not {bad}")
        return value

    @field_validator("oidc_token_types")
    @classmethod
    def _token_types(cls, value: list[str]) -> list[str]:
        types = [t.lower().removeprefix("application/") for t in value]
        if not types:
            raise ValueError("at least one token type, e.g. at+jwt")
        if bad := [t for t in types if t not in ("at+jwt", "jwt")]:
            raise ValueError(f"only at+jwt and jwt can be access tokens, not {bad}")
        return types

    @field_validator("database_url", mode="before")
    @classmethod
    def _async_driver(cls, value: object) -> object:
        raw = value.get_secret_value() if isinstance(value, SecretStr) else value
        if isinstance(raw, str):
            for prefix in ("postgres://", "postgresql://"):
                if raw.startswith(prefix):
                    return "postgresql+asyncpg://" + raw[len(prefix) :]
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.page_size_default > self.page_size_max:
            raise ValueError("PAGE_SIZE_DEFAULT must not exceed PAGE_SIZE_MAX")
        if self.jwt_algorithm != "HS256" and self.jwt_private_key is None:
            raise ValueError(f"JWT_PRIVATE_KEY is required when JWT_ALGORITHM={self.jwt_algorithm}")
        if self.oidc_jwks_url and not (self.oidc_issuer and self.oidc_audience):
            raise ValueError("OIDC_ISSUER and OIDC_AUDIENCE are required with OIDC_JWKS_URL")
        if self.rate_limit_storage == "redis" and self.redis_url is None:
            raise ValueError("REDIS_URL is required with RATE_LIMIT_STORAGE=redis")
        return self

    # --- derived ----------------------------------------------------------------------------
    @property
    def is_development(self) -> bool:
        return self.app_env is AppEnv.development

    @property
    def limiter_storage(self) -> Literal["redis", "memory"]:
        if self.rate_limit_storage is not None:
            return self.rate_limit_storage
        return "redis" if self.redis_url is not None else "memory"

    @property
    def uses_sqlite(self) -> bool:
        return self.database_url.get_secret_value().startswith("sqlite")

    def insecure_settings(self) -> list[str]:
        """Why this configuration must not serve outside development (empty when it may)."""
        problems = []
        if self.jwt_algorithm == "HS256":
            secret = self.jwt_secret.get_secret_value()
            if secret == DEV_JWT_SECRET:
                problems.append("JWT_SECRET is the development default; set a random secret")
            elif len(secret) < 32:
                problems.append("JWT_SECRET must be at least 32 characters")
        if self.database_url.get_secret_value() == EMBEDDED_DATABASE_URL:
            problems.append("DATABASE_URL is not set (the embedded SQLite file is for development)")
        if self.first_admin_email and not self.first_admin_password:
            problems.append("FIRST_ADMIN_PASSWORD is required with FIRST_ADMIN_EMAIL")
        if (
            self.app_env is AppEnv.production
            and self.rate_limit_enabled
            and self.redis_url is None
            and self.rate_limit_storage != "memory"
        ):
            problems.append(
                "REDIS_URL is not set: every process would keep its own rate limits; set "
                "REDIS_URL, or RATE_LIMIT_STORAGE=memory to accept per-process limits"
            )
        return problems

    def require_secure(self) -> None:
        """Refuse to serve outside development with a default or missing secret."""
        if self.is_development:
            return
        if problems := self.insecure_settings():
            raise ConfigurationError(
                f"refusing to start with APP_ENV={self.app_env}: {problems[0]}"
            )


def load_settings(**overrides: object) -> Settings:
    """Build Settings from the environment, plus secret files when SECRETS_DIR names a folder."""
    secrets_dir = os.environ.get("SECRETS_DIR")
    if secrets_dir and os.path.isdir(secrets_dir):
        overrides.setdefault("_secrets_dir", secrets_dir)
    return Settings(**overrides)  # type: ignore[arg-type]


@lru_cache
def get_settings() -> Settings:
    """The process's settings, read once."""
    return load_settings()
