"""The contract between service/ and infra/: the variable names, health paths, port and command.

infra/ never imports service/ (the Pulumi runtime needs no FastAPI); this test imports both and
fails when a stack's ConfigMap or Secret sets a variable the service's Settings do not read, or
misses one the deployment needs.
"""

from __future__ import annotations

import importlib
import inspect
import sys
from pathlib import Path
from typing import Any

import pytest
from limits import parse_many

from infra import config
from infra.components import app, loadtest
from service import health
from service.api_keys import schemas as key_schemas
from service.api_keys import secrets as key_secrets
from service.settings import AppEnv, Settings, load_settings

from .conftest import STACKS, Obj, container, find, objects

# What the deployment cannot do without, whatever the stack.
REQUIRED = {
    "APP_ENV",
    "HOST",
    "PORT",
    "WEB_CONCURRENCY",
    "GRACEFUL_TIMEOUT",
    "DB_POOL_SIZE",
    "DB_MAX_OVERFLOW",
    "TRUSTED_PROXIES",
    "DATABASE_URL",
    "REDIS_URL",
    "JWT_SECRET",
}
KNOWN = {name.upper() for name in Settings.model_fields}


def settings_of(objs: list[Obj]) -> dict[str, str]:
    config = find(objs, "ConfigMap", "api-settings")["data"]
    secret = find(objs, "Secret", "api-secrets")["stringData"]
    return {**config, **secret}


@pytest.mark.parametrize("stack", STACKS)
def test_configmap_and_secret_set_only_known_settings(stack: str) -> None:
    names = set(settings_of(objects(stack)))
    assert names - KNOWN == set(), "infra sets variables service/settings.py does not read"
    assert REQUIRED - names == set(), "infra misses variables the deployment needs"


@pytest.mark.parametrize("stack", STACKS)
def test_the_service_accepts_the_values(stack: str, monkeypatch: pytest.MonkeyPatch) -> None:
    values = settings_of(objects(stack))
    for name in KNOWN:
        monkeypatch.delenv(name, raising=False)
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    settings = Settings()
    assert settings.port == app.PORT
    assert settings.host == "0.0.0.0"
    assert settings.web_concurrency == int(values["WEB_CONCURRENCY"])
    assert settings.database_url.get_secret_value().startswith("postgresql+asyncpg://")
    if settings.app_env is not AppEnv.development:
        assert settings.insecure_settings() == []


def test_container_env_outside_the_configmap_is_known_to_the_service() -> None:
    api = container(find(objects("dev"), "Deployment", "api"))
    extra = {item["name"] for item in api["env"]}
    # SECRETS_DIR is read by load_settings (where the Secret's files are), not a Settings field.
    assert extra == {"SECRETS_DIR"}
    assert 'os.environ.get("SECRETS_DIR")' in inspect.getsource(load_settings)


def test_probe_paths_are_the_services_routes() -> None:
    routes = {route.path for route in health.router.routes}  # type: ignore[attr-defined]
    assert {app.LIVE, app.READY} <= routes


def test_migrate_command_is_the_services(monkeypatch: pytest.MonkeyPatch) -> None:
    cli = importlib.import_module("service.__main__")
    calls: list[object] = []
    monkeypatch.setattr(cli, "get_settings", lambda: "settings")
    monkeypatch.setattr(cli, "migrate", calls.append)
    assert app.MIGRATE_COMMAND[:3] == ["python", "-m", "service"]
    cli.main(app.MIGRATE_COMMAND[3:])
    assert calls == ["settings"]


def test_infra_does_not_import_the_service() -> None:
    import infra.program  # noqa: F401 - loads every infra module

    infra_modules = [m for name, m in sys.modules.items() if name.startswith("infra")]
    for module in infra_modules:
        source = inspect.getsource(module)
        assert "import service" not in source, module.__name__
        assert "from service" not in source, module.__name__


def test_the_service_reads_the_secret_files_the_pods_mount(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = find(objects("prod"), "Secret", "api-secrets")["stringData"]
    for name, value in secret.items():  # the volume holds one file per key, named after it
        (tmp_path / name).write_text(value)
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SECRETS_DIR", str(tmp_path))
    settings = load_settings()
    assert settings.jwt_secret.get_secret_value() == secret["JWT_SECRET"]
    assert settings.redis_url is not None
    assert settings.redis_url.get_secret_value() == secret["REDIS_URL"]
    assert settings.database_url.get_secret_value().endswith("@db.example.internal:5432/blueprint")


def test_infra_checks_rate_limits_with_the_services_pattern() -> None:
    assert config.LIMIT_PATTERN == key_schemas.LIMIT_PATTERN


# The stack keys of the budgets a load test spends, and the service's variables they set.
LIMIT_VARIABLES = {
    "rateLimitClient": "RATE_LIMIT_CLIENT",
    "rateLimitUser": "RATE_LIMIT_USER",
    "rateLimitApiKeyDefault": "RATE_LIMIT_API_KEY_DEFAULT",
    "rateLimitLoginIp": "RATE_LIMIT_LOGIN_IP",
}


def test_infra_knows_the_services_default_limits() -> None:
    assert set(config.SERVICE_RATE_LIMITS) == set(LIMIT_VARIABLES)
    for name, variable in LIMIT_VARIABLES.items():
        assert config.SERVICE_RATE_LIMITS[name] == Settings.model_fields[variable.lower()].default


@pytest.mark.parametrize(
    "limit",
    ["2400/minute", "5 per second", "90/3 minutes", "600/minute;3600/hour", "1/day|30/month"],
)
def test_infra_reads_a_limits_rate_as_the_service_does(limit: str) -> None:
    # The service's windows (service/ratelimit/gcra.py) are `limits` items: amount per expiry.
    tightest = min(item.amount / item.get_expiry() for item in parse_many(limit))
    assert config.per_second(limit) == pytest.approx(tightest)
    assert config.burst(limit) == min(item.amount for item in parse_many(limit))


def test_the_rate_limits_from_the_stack_reach_the_service(monkeypatch: pytest.MonkeyPatch) -> None:
    given = {
        "rateLimitLogin": "600/minute;10000/hour",
        "rateLimitClient": "9000/minute",
        "rateLimitUser": "1800/minute;100000/hour",
        "rateLimitApiKeyDefault": "50 per second",
        "rateLimitLoginIp": "90/minute",
    }
    values = settings_of(objects("dev", **given))
    assert set(values) - KNOWN == set()
    for name in KNOWN:
        monkeypatch.delenv(name, raising=False)
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    settings = Settings()
    assert settings.rate_limit_login == "600/minute;10000/hour"
    assert len(parse_many(settings.rate_limit_login)) == 2
    assert settings.rate_limit_client == "9000/minute"
    assert settings.rate_limit_user == "1800/minute;100000/hour"
    assert settings.rate_limit_api_key_default == "50 per second"
    assert settings.rate_limit_login_ip == "90/minute"
    # Unset: the service's defaults.
    unset = {"RATE_LIMIT_LOGIN", *LIMIT_VARIABLES.values()}
    assert not unset & set(settings_of(objects("dev")))


def test_the_generated_api_key_has_the_services_format() -> None:
    assert loadtest.KEY_SCHEME == key_secrets.SCHEME
    assert 1 <= loadtest.KEY_PREFIX_LENGTH <= key_secrets.PREFIX_MAX
    assert loadtest.KEY_SECRET_LENGTH >= key_secrets.SECRET_MIN
    prefix, secret = "a1b2c3d4e5f6"[: loadtest.KEY_PREFIX_LENGTH], "x" * loadtest.KEY_SECRET_LENGTH
    key = f"{loadtest.KEY_SCHEME}_{prefix}_{secret}"
    assert key_secrets.from_key(key)[1] == prefix


def test_seed_command_is_the_services(monkeypatch: pytest.MonkeyPatch) -> None:
    """The seed Job's argv and env (the loadtest Secret's keys) as the service's CLI reads them."""
    cli = importlib.import_module("service.__main__")
    key = f"bpk_{'a' * loadtest.KEY_PREFIX_LENGTH}_{'s' * loadtest.KEY_SECRET_LENGTH}"
    monkeypatch.setenv(loadtest.PASSWORD_ENV, "seeded-password")
    monkeypatch.setenv(loadtest.API_KEY_ENV, key)
    calls: list[tuple[object, ...]] = []

    async def seed(*args: object) -> str:
        calls.append(args[2:])
        return key

    async def in_transaction(settings: object, work: Any) -> object:
        return await work("session")

    monkeypatch.setattr(cli, "get_settings", lambda: "settings")
    monkeypatch.setattr(cli, "seed_loadtest", seed)
    monkeypatch.setattr(cli, "_in_transaction", in_transaction)
    command = loadtest.seed_command(7)
    assert command[:3] == ["python", "-m", "service"]
    cli.main(command[3:])
    assert calls == [(7, "seeded-password", key)]


def test_unseed_command_is_the_services(monkeypatch: pytest.MonkeyPatch) -> None:
    """The revocation Job's argv as the service's CLI reads it: no arguments, no credentials."""
    cli = importlib.import_module("service.__main__")
    calls: list[object] = []

    async def unseed(session: object) -> dict[str, int]:
        calls.append(session)
        return {"deactivated": 0, "revoked": 0}

    async def in_transaction(settings: object, work: Any) -> object:
        return await work("session")

    monkeypatch.setattr(cli, "get_settings", lambda: "settings")
    monkeypatch.setattr(cli, "unseed_loadtest", unseed)
    monkeypatch.setattr(cli, "_in_transaction", in_transaction)
    assert loadtest.UNSEED_COMMAND[:3] == ["python", "-m", "service"]
    cli.main(loadtest.UNSEED_COMMAND[3:])
    assert calls == ["session"]
