"""StackConfig: pure parsing and validation, and the connection budget (through the program too)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import pytest
import yaml

from infra import harness
from infra.config import (
    KEYS,
    SECRET_KEYS,
    SERVICE_RATE_LIMITS,
    ConfigError,
    StackConfig,
    check_connection_budget,
    loadtest_rates,
    parse,
    per_second,
)

from .conftest import STACKS


def plain(stack: str, **changes: str) -> dict[str, str]:
    values = {k.removeprefix("blueprint:"): v for k, v in harness.stack_config(stack).items()}
    values.update(changes)
    return values


def parse_with(stack: str, secrets: Mapping[str, str] | None = None, **changes: str) -> StackConfig:
    given = dict(harness.PLACEHOLDER_SECRETS) if secrets is None else secrets
    return parse(stack, plain(stack, **changes), given)


def parse_changed(stack: str, *changes: Mapping[str, str]) -> StackConfig:
    """`parse_with` for changes gathered in mappings (the later win)."""
    merged = {name: value for change in changes for name, value in change.items()}
    return parse(stack, plain(stack, **merged), harness.PLACEHOLDER_SECRETS)


@pytest.mark.parametrize("stack", STACKS)
def test_stack_files_use_known_keys_and_hold_no_secret(stack: str) -> None:
    config = yaml.safe_load((harness.REPO_ROOT / f"Pulumi.{stack}.yaml").read_text())["config"]
    namespaces = {k.split(":", 1)[0] for k in config}
    assert namespaces == {"blueprint"}
    assert {k.split(":", 1)[1] for k in config} <= set(KEYS)
    for name in SECRET_KEYS:  # secrets only ever as `secure:` ciphertext (never plain text)
        value = config.get(f"blueprint:{name}")
        assert value is None or (isinstance(value, dict) and set(value) == {"secure"}), name


def test_committed_ciphertext_is_never_read_as_a_plain_value(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stack = harness.REPO_ROOT / "Pulumi.staging.yaml"
    data = yaml.safe_load(stack.read_text())
    data["config"]["blueprint:jwtSecret"] = {"secure": "v1:abc:def"}
    copy = tmp_path / "Pulumi.staging.yaml"
    copy.write_text(yaml.safe_dump(data))
    monkeypatch.setattr(harness, "REPO_ROOT", tmp_path)
    assert "blueprint:jwtSecret" not in harness.stack_config("staging")


def test_project_file_runs_infra_with_the_project_venv() -> None:
    project = yaml.safe_load((harness.REPO_ROOT / "Pulumi.yaml").read_text())
    assert (project["name"], project["main"]) == ("blueprint", "infra/")
    assert project["runtime"] == {
        "name": "python",
        "options": {"toolchain": "uv", "virtualenv": ".venv"},
    }
    assert (harness.REPO_ROOT / "infra" / "__main__.py").exists()


def test_each_stack_parses_to_its_environment() -> None:
    dev, staging, prod = (parse_with(s) for s in STACKS)
    assert (dev.app.app_env, staging.app.app_env, prod.app.app_env) == (
        "development",
        "staging",
        "production",
    )
    assert (dev.postgres.mode, dev.redis.mode) == ("in-cluster", "in-cluster")
    assert (prod.postgres.mode, prod.redis.mode) == ("external", "external")
    # dev is CI's: the image it built, pulled with a Secret the program manages.
    assert dev.image.ref
    assert "@sha256:" in dev.image.ref
    assert (dev.image.pull_secret, dev.image.pull_server) == ("ghcr-pull", "ghcr.io")
    local = parse_with("local")
    assert local.image.ref is None
    assert local.image.registry == "localhost:5001"
    assert local.namespace != dev.namespace  # a laptop stack never manages CI's objects
    assert prod.image.ref
    assert "@sha256:" in prod.image.ref
    assert prod.app.min_replicas >= 2
    assert prod.exposure.tls
    assert prod.exposure.cert_manager_issuer
    assert not dev.exposure.tls
    assert dev.app.max_replicas <= 2


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"minReplicas": "5", "maxReplicas": "3"}, "blueprint:minReplicas: 5 is above"),
        ({"workers": "0"}, "blueprint:workers: must be at least 1, got 0"),
        ({"workers": "two"}, "blueprint:workers: 'two' is not an integer"),
        ({"postgresMode": "managed"}, "blueprint:postgresMode: unknown value 'managed'"),
        ({"exposure": "nodeport"}, "blueprint:exposure: unknown value 'nodeport'"),
        ({"appEnv": "qa"}, "blueprint:appEnv: unknown value 'qa'"),
        ({"hpaCpuTarget": "150"}, "blueprint:hpaCpuTarget: 150 is above 100"),
        ({"tls": "yes"}, "blueprint:tls: 'yes' is not true or false"),
        ({"cpuRequest": "lots"}, "blueprint:cpuRequest: 'lots' is not a Kubernetes quantity"),
        ({"namespace": ""}, "blueprint:namespace: is required"),
        ({"host": ""}, "blueprint:host: is required"),
        ({"imageTag": "latest"}, "blueprint:imageTag: 'latest' is not allowed"),
        ({"postgresImage": "postgres"}, "blueprint:postgresImage: 'postgres' has no tag"),
        ({"redisImage": "redis:latest"}, "blueprint:redisImage: 'redis:latest' uses the 'latest'"),
        ({"tls": "false"}, "blueprint:certManagerIssuer: needs blueprint:tls: true"),
        ({"postgresResources": '{"cpu": "1", "disk": "1Gi"}'}, "blueprint:postgresResources: must"),
        ({"loadtestRunTime": "forever"}, "blueprint:loadtestRunTime: 'forever' is not like"),
        ({"loadtestSeedUsers": "0"}, "blueprint:loadtestSeedUsers: must be at least 1, got 0"),
        ({"rateLimitLogin": "lots"}, "blueprint:rateLimitLogin: 'lots' is not a rate limit"),
        ({"rateLimitLogin": "5/fortnight"}, "blueprint:rateLimitLogin: '5/fortnight' is not"),
        ({"rateLimitLogin": "0/minute"}, "blueprint:rateLimitLogin: '0/minute' is not"),
        ({"rateLimitClient": "lots"}, "blueprint:rateLimitClient: 'lots' is not a rate limit"),
        ({"rateLimitUser": "5/fortnight"}, "blueprint:rateLimitUser: '5/fortnight' is not"),
        ({"rateLimitApiKeyDefault": "0/minute"}, "blueprint:rateLimitApiKeyDefault: '0/minute'"),
    ],
)
def test_a_bad_value_names_its_key(changes: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        parse("staging", plain("staging", **changes), harness.PLACEHOLDER_SECRETS)


def test_production_requires_a_digest_pinned_image() -> None:
    with pytest.raises(ConfigError, match="production runs an image pinned by digest"):
        parse_with("prod", image="ghcr.io/example/blueprint:0.1.0")


@pytest.mark.parametrize(
    ("stack", "missing"),
    [
        ("prod", "databaseUrl"),
        ("prod", "redisUrl"),
        ("prod", "jwtSecret"),
        ("staging", "jwtSecret"),
    ],
)
def test_a_missing_required_secret_says_how_to_set_it(stack: str, missing: str) -> None:
    secrets = {k: v for k, v in harness.PLACEHOLDER_SECRETS.items() if k != missing}
    with pytest.raises(ConfigError, match=f"pulumi config set --secret blueprint:{missing}"):
        parse_with(stack, secrets)


def test_local_needs_no_secret_at_all() -> None:
    assert parse_with("local", {}).app.jwt_secret is None  # generated by the program


def test_dev_needs_only_the_pull_token() -> None:
    with pytest.raises(ConfigError, match="blueprint:pullPassword"):
        parse_with("dev", {})
    assert parse_with("dev", {"pullPassword": "t"}).app.jwt_secret is None


def test_memory_follows_the_worker_count() -> None:
    app = parse_with("dev", workers="1", memoryBaseMi="80", memoryPerWorkerMi="110").app
    assert app.memory_mi == 80 + 1 * 110


def test_connection_budget_error_shows_the_arithmetic() -> None:
    app = parse_with("prod").app
    with pytest.raises(ConfigError) as error:
        check_connection_budget(app, max_connections=200)
    # (10 + 1) pods x 4 workers x (5 + 5) = 440, + migration 10 + reserve 10 = 460 > 200
    assert str(error.value).startswith(
        "connection budget exceeded: worst case 460 connections = (maxReplicas 10 + maxSurge 1)"
        " x workers 4 x (dbPoolSize 5 + dbMaxOverflow 5) + migration 10 + reserve 10,"
        " but blueprint:postgresMaxConnections is 200."
    )
    check_connection_budget(app, max_connections=460)  # exactly full fits


def test_program_refuses_a_stack_over_its_connection_budget() -> None:
    # dev's in-cluster Postgres allows 100: (2 + 1) x 4 workers x (10 + 5) = 180 + 15 + 10 = 205.
    with pytest.raises(ConfigError, match=r"worst case 205 connections .* is 100\."):
        harness.run("dev", {"workers": "4", "dbPoolSize": "10"})


def test_budget_counts_every_stack_as_it_is_committed() -> None:
    for stack in STACKS:
        cfg = parse_with(stack)
        check_connection_budget(cfg.app, cfg.postgres.max_connections)


def test_loadtest_seed_users_and_login_limit_defaults() -> None:
    dev = parse_with("dev")
    assert dev.loadtest.seed_users == 20
    assert dev.app.rate_limit_login is None  # the service's own default
    changed = parse_with("dev", loadtestSeedUsers="200", rateLimitLogin="600/minute;10000/hour")
    assert changed.loadtest.seed_users == 200
    assert changed.app.rate_limit_login == "600/minute;10000/hour"
    assert parse_with("dev", rateLimitLogin="100 per second").app.rate_limit_login == (
        "100 per second"
    )


def test_the_other_rate_limits_default_to_the_services() -> None:
    app = parse_with("dev").app
    assert (app.rate_limit_client, app.rate_limit_user, app.rate_limit_api_key_default) == (
        None,
        None,
        None,
    )
    assert app.rate_limit("rateLimitClient") == SERVICE_RATE_LIMITS["rateLimitClient"]
    changed = parse_with(
        "dev",
        rateLimitClient="6000/minute",
        rateLimitUser="1200/minute;50000/hour",
        rateLimitApiKeyDefault="100 per second",
    ).app
    assert changed.rate_limit_client == changed.rate_limit("rateLimitClient") == "6000/minute"
    assert changed.rate_limit_user == "1200/minute;50000/hour"
    assert changed.rate_limit("rateLimitApiKeyDefault") == "100 per second"


@pytest.mark.parametrize(
    ("limit", "rate"),
    [
        ("2400/minute", 40.0),
        ("5 per second", 5.0),
        ("90/3 minutes", 0.5),
        ("7200/hours", 2.0),
        # Every window is its own GCRA: held long enough, the tightest rate is what passes.
        ("600/minute;3600/hour", 1.0),
        (" 10 / second , 600000 per day | 1/second", 1.0),
    ],
)
def test_a_limit_is_its_tightest_windows_rate(limit: str, rate: float) -> None:
    assert per_second(limit) == pytest.approx(rate)


def test_per_second_refuses_what_is_not_a_limit() -> None:
    with pytest.raises(ValueError, match="not a rate limit"):
        per_second("5/fortnight")


# --- the in-cluster load test ------------------------------------------------------------------

ONE_POD = {"minReplicas": "1", "maxReplicas": "1"}
# End to end at a rate the service's default limits carry from one address (40/s over 1.5).
END_TO_END = {"loadtestEnabled": "true", "loadtestTarget": "ingress", "loadtestArrivalRate": "20"}


def per_pod(**changes: str) -> StackConfig:
    """dev with the load test on, per pod (one replica), and `changes`."""
    return parse_changed("dev", {"loadtestEnabled": "true"}, ONE_POD, changes)


def refusal(**changes: str) -> str:
    """What config validation says when it refuses `per_pod(**changes)`."""
    with pytest.raises(ConfigError) as refused:
        per_pod(**changes)
    return str(refused.value)


def test_the_default_load_test_fits_the_services_default_limits() -> None:
    # 50 req/s over 2 workers: 25/s per pod address (40/s allowed), 1.19/s per account of 20
    # (10/s), 2.5/s on the key (20/s).
    rates = {name: rate for name, (rate, _) in loadtest_rates(per_pod().loadtest).items()}
    assert rates == pytest.approx(
        {"rateLimitClient": 25.0, "rateLimitUser": 25 * 0.95 / 10, "rateLimitApiKeyDefault": 2.5}
    )


def test_a_load_test_over_the_client_budget_is_refused_naming_the_key() -> None:
    # 100 req/s over 2 pods: 50/s from each worker's address, over 40/s / 1.5.
    message = refusal(loadtestArrivalRate="100")
    assert "blueprint:rateLimitClient is '2400/minute' (40/s)" in message
    assert "pod's address (100 / 2; or more blueprint:loadtestWorkers) gets 50/s" in message
    assert "so set at least '4500/minute'" in message
    assert "blueprint:rateLimitUser" not in message  # 4.75/s per account fits 10/s
    assert "blueprint:rateLimitApiKeyDefault" not in message
    assert "unset them after" in message
    # Raised as it says, the same run passes; so does spreading it over more worker pods.
    assert per_pod(loadtestArrivalRate="100", rateLimitClient="4500/minute").loadtest.enabled
    assert per_pod(loadtestArrivalRate="100", loadtestWorkers="4").loadtest.enabled


def test_every_budget_the_run_would_exceed_is_named_and_raising_them_passes() -> None:
    high = {"loadtestArrivalRate": "400", "loadtestWorkers": "4"}  # 20 accounts: 5 per worker
    with pytest.raises(ConfigError) as refused:
        per_pod(**high)
    message = str(refused.value)
    assert message.startswith("the load test's blueprint:loadtestArrivalRate 400 req/s would be")
    # 100/s per pod address; 100 x 0.95 / 5 = 19/s per account; 5% of 400 = 20/s on the key.
    assert "blueprint:rateLimitClient is '2400/minute' (40/s)" in message
    assert "gets 100/s, so set at least '9000/minute'" in message
    assert "blueprint:rateLimitUser is '600/minute' (10/s)" in message
    assert "over 5 accounts; or more blueprint:loadtestSeedUsers) gets 19/s" in message
    assert "so set at least '1710/minute'" in message
    assert "blueprint:rateLimitApiKeyDefault is '1200/minute' (20/s)" in message
    assert "the seeded API key (5%) gets 20/s, so set at least '1800/minute'" in message
    raised = {
        "rateLimitClient": "9000/minute",
        "rateLimitUser": "1710/minute",
        "rateLimitApiKeyDefault": "1800/minute",
    }
    assert per_pod(**high, **raised).loadtest.arrival_rate == 400
    # One budget short again: only it is named.
    with pytest.raises(ConfigError) as short:
        per_pod(**high, **{**raised, "rateLimitUser": "1700/minute"})
    assert "blueprint:rateLimitUser" in str(short.value)
    assert "blueprint:rateLimitClient" not in str(short.value)


def test_accounts_logging_in_past_the_login_budget_of_one_address_are_refused() -> None:
    # Each Locust worker pod logs its share of the accounts in at start: 80 over 2 pods is 40 at
    # once from one address, over the service's 30/minute per address.
    message = refusal(loadtestSeedUsers="80")
    assert "blueprint:rateLimitLoginIp is '30/minute' (a burst of 30)" in message
    assert "each Locust worker pod (40 of 80 accounts) logs in 40 accounts at once" in message
    assert "so set at least '40/minute'" in message
    assert "blueprint:rateLimitClient" not in message
    assert per_pod(loadtestSeedUsers="80", rateLimitLoginIp="40/minute").loadtest.enabled
    assert per_pod(loadtestSeedUsers="80", loadtestWorkers="3").loadtest.enabled  # 27 each
    # End to end every account logs in from the one address; the default 20 fit.
    assert parse_changed("dev", END_TO_END).loadtest.enabled
    with pytest.raises(ConfigError, match="logs in 31 accounts at once"):
        parse_changed("dev", END_TO_END, {"loadtestSeedUsers": "31"})


def test_a_long_window_is_held_to_its_own_rate() -> None:
    # 600/minute allows 10/s for a minute, but 1000/hour only 0.28/s beyond it.
    with pytest.raises(ConfigError, match=r"blueprint:rateLimitUser is '600/minute;1000/hour'"):
        per_pod(rateLimitUser="600/minute;1000/hour")


def test_end_to_end_counts_the_whole_rate_as_one_address() -> None:
    # The app believes the controller's X-Forwarded-For (trustedProxies), and the controller may
    # see every worker from one node or load-balancer address: more workers do not spread it.
    assert per_pod(loadtestArrivalRate="30", loadtestWorkers="4").loadtest.enabled
    with pytest.raises(ConfigError, match="the one address the ingress controller may see"):
        parse_changed("dev", END_TO_END, {"loadtestArrivalRate": "30", "loadtestWorkers": "4"})
    raised = {"loadtestArrivalRate": "30", "rateLimitClient": "2700/minute"}
    assert parse_changed("dev", END_TO_END, raised).loadtest.enabled


def test_each_worker_needs_an_account_of_its_own() -> None:
    with pytest.raises(ConfigError, match="blueprint:loadtestSeedUsers: 3 accounts for 4 "):
        per_pod(loadtestSeedUsers="3", loadtestWorkers="4", loadtestArrivalRate="20")


def test_the_limits_are_not_checked_with_the_load_test_off() -> None:
    assert not parse_with("dev", loadtestArrivalRate="5000").loadtest.enabled


def test_the_program_refuses_a_load_test_the_limits_would_stop() -> None:
    with pytest.raises(ConfigError, match="blueprint:rateLimitClient is '2400/minute'"):
        harness.run("dev", {"loadtestEnabled": "true", "loadtestArrivalRate": "100", **ONE_POD})


def test_loadtest_defaults() -> None:
    loadtest = parse_with("dev").loadtest
    assert not loadtest.enabled
    assert (loadtest.arrival_rate, loadtest.workers, loadtest.target) == (50.0, 2, "pod")
    assert loadtest.allow_production is False


@pytest.mark.parametrize(("raw", "rate"), [("40", 40.0), ("12.5", 12.5), ("0.2", 0.2)])
def test_the_arrival_rate_is_a_positive_number(raw: str, rate: float) -> None:
    assert parse_with("dev", loadtestArrivalRate=raw).loadtest.arrival_rate == rate


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("0", "blueprint:loadtestArrivalRate: must be a positive number, got '0'"),
        ("-5", "blueprint:loadtestArrivalRate: must be a positive number, got '-5'"),
        ("inf", "blueprint:loadtestArrivalRate: must be a positive number, got 'inf'"),
        ("nan", "blueprint:loadtestArrivalRate: must be a positive number, got 'nan'"),
        ("lots", "blueprint:loadtestArrivalRate: 'lots' is not a number"),
    ],
)
def test_a_bad_arrival_rate_names_its_key(raw: str, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        parse_with("dev", loadtestArrivalRate=raw)


@pytest.mark.parametrize("retired", ["loadtestUsers", "loadtestSpawnRate"])
def test_a_retired_loadtest_key_is_refused_naming_its_replacement(retired: str) -> None:
    # Refused even with the load test off: a stack file still setting it is out of date.
    with pytest.raises(ConfigError, match=f"blueprint:{retired}: is no longer read") as error:
        parse("dev", plain("dev", **{retired: "50"}), harness.PLACEHOLDER_SECRETS)
    assert "blueprint:loadtestArrivalRate" in str(error.value)
    assert retired not in KEYS


def test_program_refuses_a_retired_key_too() -> None:
    with pytest.raises(ConfigError, match="blueprint:loadtestUsers: is no longer read"):
        harness.run("dev", {"loadtestUsers": "200"})


def test_a_production_stack_refuses_a_load_test_without_the_flag() -> None:
    with pytest.raises(ConfigError, match=re.escape("blueprint:loadtestEnabled: a load test on")):
        parse_with("prod", loadtestEnabled="true", loadtestTarget="ingress")
    with pytest.raises(ConfigError, match="set blueprint:loadtestAllowProduction: true"):
        parse_with("prod", loadtestEnabled="true", loadtestTarget="ingress")
    allowed = parse_changed("prod", END_TO_END, {"loadtestAllowProduction": "true"}).loadtest
    assert (allowed.enabled, allowed.allow_production) == (True, True)
    # Off, the flag changes nothing; on a stack that is not production, it is not needed.
    assert not parse_with("prod").loadtest.enabled
    for stack in ("dev", "staging"):
        assert parse_changed(stack, END_TO_END).loadtest.enabled


def test_the_production_flag_is_a_boolean() -> None:
    with pytest.raises(ConfigError, match="blueprint:loadtestAllowProduction: 'yes' is not true"):
        parse_with("dev", loadtestAllowProduction="yes")


def test_per_pod_requires_one_replica_and_so_no_hpa() -> None:
    with pytest.raises(ConfigError, match=re.escape("blueprint:loadtestTarget: pod measures one")):
        parse_with("dev", loadtestEnabled="true")  # dev: 1 to 2 replicas
    with pytest.raises(ConfigError, match=r"\(they are 2 and 4\)"):
        parse_with("staging", loadtestEnabled="true", loadtestTarget="pod")
    with pytest.raises(ConfigError, match="are 1 and 2"):
        parse_with("dev", loadtestEnabled="true", minReplicas="1", maxReplicas="2")
    one_pod = parse(
        "dev", plain("dev", loadtestEnabled="true", **ONE_POD), harness.PLACEHOLDER_SECRETS
    )
    assert (one_pod.loadtest.target, one_pod.app.max_replicas) == ("pod", 1)
    # Off, the stack keeps its replicas.
    assert parse_with("staging").app.max_replicas == 4


def test_end_to_end_requires_an_ingress_host() -> None:
    with pytest.raises(ConfigError, match="blueprint:loadtestTarget: ingress aims at the public"):
        parse_with(
            "dev",
            loadtestEnabled="true",
            loadtestTarget="ingress",
            exposure="loadbalancer",
            host="",
        )
    # A LoadBalancer with a host is still no Ingress.
    with pytest.raises(ConfigError, match="blueprint:exposure is loadbalancer"):
        parse_with("dev", loadtestEnabled="true", loadtestTarget="ingress", exposure="loadbalancer")
    ingress = parse_changed("dev", END_TO_END).loadtest
    assert ingress.target == "ingress"


def test_an_unknown_target_names_its_key() -> None:
    with pytest.raises(ConfigError, match="blueprint:loadtestTarget: unknown value 'node'"):
        parse_with("dev", loadtestTarget="node")
