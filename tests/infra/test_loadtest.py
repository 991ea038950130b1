"""The optional in-cluster Locust: off by default; on, a distributed run aimed at the app."""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from infra import harness, render
from infra.config import ConfigError
from infra.harness import Recorded

from .conftest import STACKS, Obj, container, find, objects, pod_spec, run
from .test_policy import stack_violations, violations

LOCUSTFILE = """from locust import HttpUser, task


class Reader(HttpUser):
    @task
    def live(self):
        self.client.get("/health/live")
"""
K8S_VERSIONS = ("1.30.0", "1.31.0", "1.32.0")
SEED_USERS = 30
CREDENTIALS = ("LOADTEST_PASSWORD", "LOADTEST_API_KEY")
# The per-pod target (the default) measures one pod: config requires one replica.
ONE_POD = {"minReplicas": "1", "maxReplicas": "1"}
OVERRIDES = {
    "loadtestEnabled": "true",
    "loadtestWorkers": "3",
    "loadtestArrivalRate": "40",
    "loadtestRunTime": "2m",
    "loadtestSeedUsers": str(SEED_USERS),
    **ONE_POD,
}
# End to end, every worker may reach the app from one address (infra.config.loadtest_rates): the
# client budget must carry the whole rate (40 or 50 req/s) with the headroom.
ONE_ADDRESS = {"rateLimitClient": "4800/minute"}


@pytest.fixture(scope="module")
def locustfile(tmp_path_factory: pytest.TempPathFactory) -> str:
    # A stand-in, so this test does not depend on loadtests/locustfile.py's current content.
    path = tmp_path_factory.mktemp("loadtests") / "locustfile.py"
    path.write_text(LOCUSTFILE)
    return str(path)


@pytest.fixture(scope="module")
def enabled(locustfile: str) -> list[Obj]:
    return objects("dev", loadtestLocustfile=locustfile, **OVERRIDES)


@pytest.fixture(scope="module")
def recorded(locustfile: str) -> list[Recorded]:
    return run("dev", loadtestLocustfile=locustfile, **OVERRIDES)


def _recorded(resources: list[Recorded], type_: str, name: str) -> Recorded:
    (found,) = [r for r in resources if r.type == type_ and r.name == name]
    return found


def _depends_on(resource: Recorded, type_: str, name: str) -> bool:
    return any(urn.endswith(f"{type_}::{name}") for urn in resource.dependencies)


@pytest.mark.parametrize("stack", STACKS)
def test_off_by_default(stack: str) -> None:
    assert not [o for o in objects(stack) if "locust" in o["metadata"]["name"]]


def test_the_master_is_a_headless_job_with_a_deadline_and_no_retries(enabled: list[Obj]) -> None:
    master, worker = (
        find(enabled, "Job", "locust-master"),
        find(enabled, "Deployment", "locust-worker"),
    )
    assert worker["spec"]["replicas"] == 3
    spec = master["spec"]
    # 2m run time + the margin; a failed run is a result, not something to retry.
    assert (spec["backoffLimit"], spec["activeDeadlineSeconds"]) == (0, 120 + 300)
    assert spec["ttlSecondsAfterFinished"] == 86_400
    assert pod_spec(master)["restartPolicy"] == "Never"
    args = container(master)["args"]
    assert args[:2] == ["-f", "/mnt/locust/locustfile.py"]
    assert {"--master", "--headless", "--json", "--only-summary"} <= set(args)
    assert "--autostart" not in args
    flags = {k: v for k, v in itertools.pairwise(args) if k.startswith("--")}
    assert flags["--host"] == "http://api.blueprint-dev.svc:80"
    # One open-loop scheduler per worker pod.
    assert (flags["--users"], flags["--run-time"], flags["--expect-workers"]) == ("3", "2m", "3")
    assert container(worker)["args"][2:] == ["--worker", "--master-host", "locust-master"]
    assert find(enabled, "Service", "locust-master")["spec"]["ports"][0]["port"] == 5557


def test_workers_get_whole_cpus_and_keep_away_from_the_app(enabled: list[Obj]) -> None:
    worker = find(enabled, "Deployment", "locust-worker")
    resources = container(worker)["resources"]
    assert resources["requests"]["cpu"] == resources["limits"]["cpu"] == "1"
    (term,) = pod_spec(worker)["affinity"]["podAntiAffinity"][
        "preferredDuringSchedulingIgnoredDuringExecution"
    ]
    api_selector = find(enabled, "Service", "api")["spec"]["selector"]
    assert term["podAffinityTerm"]["labelSelector"]["matchLabels"] == api_selector
    assert term["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"


def test_the_run_rate_and_thresholds_reach_the_locustfile(enabled: list[Obj]) -> None:
    env = {
        e["name"]: e.get("value") for e in container(find(enabled, "Job", "locust-master"))["env"]
    }
    assert (env["LOADTEST_RATE"], env["LOADTEST_SCHEDULERS"]) == ("40", "3")
    assert env["LOADTEST_MAX_FAIL_RATIO"] == "0.001"


def test_locustfile_comes_from_a_configmap(enabled: list[Obj]) -> None:
    script = find(enabled, "ConfigMap", "locustfile")
    assert script["data"] == {"locustfile.py": LOCUSTFILE}
    volumes = container(find(enabled, "Deployment", "locust-worker"))["volumeMounts"]
    assert {"name": "locustfile", "mountPath": "/mnt/locust", "readOnly": True} in volumes


def test_app_admits_the_locust_workers(enabled: list[Obj]) -> None:
    (rule,) = find(enabled, "NetworkPolicy", "api-ingress")["spec"]["ingress"]
    worker = {"app.kubernetes.io/name": "locust", "app.kubernetes.io/component": "worker"}
    assert {"podSelector": {"matchLabels": worker}} in rule["from"]


def test_rendered_loadtest_objects_validate(locustfile: str, tmp_path: Path) -> None:
    out = tmp_path / "dev-loadtest"
    assert (
        render.main(
            [
                "dev",
                "--set",
                "loadtestEnabled=true",
                "--set",
                f"loadtestLocustfile={locustfile}",
                *(arg for k, v in ONE_POD.items() for arg in ("--set", f"{k}={v}")),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    paths = sorted({*out.glob("*locust*.yaml"), *out.glob("*loadtest*.yaml")})
    assert sorted(p.name.split("-", 1)[1] for p in paths) == [
        "configmap-locustfile.yaml",
        "deployment-locust-worker.yaml",
        "job-loadtest-seed.yaml",
        "job-locust-master.yaml",
        "networkpolicy-locust-master.yaml",
        "secret-loadtest-credentials.yaml",
        "service-locust-master.yaml",
    ]
    text = "".join(path.read_text() for path in out.iterdir())
    assert "generated-" not in text
    assert "bpk_" not in text
    for path in paths:
        for version in K8S_VERSIONS:
            kubernetes_validate.validate(yaml.safe_load(path.read_text()), version, strict=True)


def test_a_missing_locustfile_names_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="blueprint:loadtestLocustfile: cannot read"):
        harness.run(
            "dev",
            {
                "loadtestEnabled": "true",
                "loadtestLocustfile": str(tmp_path / "nope.py"),
                **ONE_POD,
            },
        )


def test_credentials_are_generated_and_kept_in_the_loadtest_secret(
    enabled: list[Obj], recorded: list[Recorded]
) -> None:
    secret = find(enabled, "Secret", "loadtest-credentials")
    values = secret["stringData"]
    assert set(values) == set(CREDENTIALS)
    assert values["LOADTEST_PASSWORD"] == "generated-loadtest-password"
    # bpk_<prefix>_<secret>: RandomString (12, lower-case alnum) and RandomPassword (40, alnum).
    assert re.fullmatch(
        r"bpk_[a-z0-9]{12}_generated-loadtest-api-key-secret", values["LOADTEST_API_KEY"]
    )
    prefix = _recorded(
        recorded, "random:index/randomString:RandomString", "loadtest-api-key-prefix"
    )
    assert {k: prefix.inputs[k] for k in ("length", "lower", "upper", "numeric", "special")} == {
        "length": 12,
        "lower": True,
        "upper": False,
        "numeric": True,
        "special": False,
    }
    for name in ("loadtest-api-key-secret", "loadtest-password"):
        generated = _recorded(recorded, "random:index/randomPassword:RandomPassword", name)
        assert (generated.inputs["length"], generated.inputs["special"]) == (40, False)
    # The engine gets them as secrets, and no ConfigMap holds them.
    raw = _recorded(recorded, "kubernetes:core/v1:Secret", "loadtest-credentials")
    assert harness.SECRET_SIG in raw.inputs["stringData"]
    for config_map in (o for o in enabled if o["kind"] == "ConfigMap"):
        assert not set(config_map["data"]) & set(CREDENTIALS)
        for value in values.values():
            assert value not in repr(config_map["data"])


def test_credentials_never_appear_in_plain_text(recorded: list[Recorded]) -> None:
    rendered = harness.kubernetes_objects(recorded)
    text = repr(rendered)
    assert "generated-" not in text
    assert "bpk_" not in text
    assert set(find(rendered, "Secret", "loadtest-credentials")["stringData"].values()) == {
        harness.REDACTED
    }


def _from_secret(name: str) -> list[Obj]:
    return [
        {"name": k, "valueFrom": {"secretKeyRef": {"name": name, "key": k}}} for k in CREDENTIALS
    ]


def test_seed_job_runs_the_seed_command_like_the_migration_job(enabled: list[Obj]) -> None:
    seed, migrate = find(enabled, "Job", "loadtest-seed"), find(enabled, "Job", "api-migrate")
    seeder, migrator = container(seed), container(migrate)
    assert seeder["command"] == [
        "python",
        "-m",
        "service",
        "seed-loadtest",
        "--users",
        str(SEED_USERS),
    ]
    assert (
        seeder["image"]
        == migrator["image"]
        == container(find(enabled, "Deployment", "api"))["image"]
    )
    # The app's settings: the ConfigMap as env, the Secret as files under SECRETS_DIR...
    assert seeder["envFrom"] == migrator["envFrom"]
    assert seeder["volumeMounts"] == migrator["volumeMounts"]
    assert {"name": "secrets", "mountPath": "/run/secrets/app", "readOnly": True} in seeder[
        "volumeMounts"
    ]
    assert pod_spec(seed)["volumes"] == pod_spec(migrate)["volumes"]
    # ...plus the generated credentials, by reference to the loadtest Secret.
    assert seeder["env"] == [
        {"name": "SECRETS_DIR", "value": "/run/secrets/app"},
        *_from_secret("loadtest-credentials"),
    ]
    # Hardened as the migration Job is.
    for field in ("securityContext", "resources", "imagePullPolicy"):
        assert seeder[field] == migrator[field], field
    assert seeder["securityContext"]["runAsNonRoot"] is True
    assert seeder["securityContext"]["readOnlyRootFilesystem"] is True
    spec, migrate_spec = pod_spec(seed), pod_spec(migrate)
    for field in ("securityContext", "automountServiceAccountToken", "restartPolicy"):
        assert spec[field] == migrate_spec[field], field
    assert spec["automountServiceAccountToken"] is False
    assert {"name": "tmp", "emptyDir": {"sizeLimit": "256Mi"}} in spec["volumes"]
    assert seed["spec"]["backoffLimit"] == migrate["spec"]["backoffLimit"]
    assert seed["spec"]["activeDeadlineSeconds"] == migrate["spec"]["activeDeadlineSeconds"]


def test_seed_job_may_reach_postgres(enabled: list[Obj]) -> None:
    (rule,) = find(enabled, "NetworkPolicy", "postgres-ingress")["spec"]["ingress"]
    (peer,) = rule["from"]
    pod_labels = find(enabled, "Job", "loadtest-seed")["spec"]["template"]["metadata"]["labels"]
    assert peer["podSelector"]["matchLabels"].items() <= pod_labels.items()
    # ...without being taken for an API pod by its Service, PDB or autoscaler.
    api_selector = find(enabled, "Service", "api")["spec"]["selector"]
    assert not api_selector.items() <= pod_labels.items()


def test_seed_runs_after_the_migrations_and_before_locust(recorded: list[Recorded]) -> None:
    seed = _recorded(recorded, "kubernetes:batch/v1:Job", "loadtest-seed")
    assert _depends_on(seed, "kubernetes:batch/v1:Job", "api-migrate")
    worker = _recorded(recorded, "kubernetes:apps/v1:Deployment", "locust-worker")
    assert _depends_on(worker, "kubernetes:batch/v1:Job", "loadtest-seed")
    master = _recorded(recorded, "kubernetes:batch/v1:Job", "locust-master")
    assert _depends_on(master, "kubernetes:apps/v1:Deployment", "locust-worker")


def test_locust_logs_in_as_the_seeded_users(enabled: list[Obj]) -> None:
    for kind, name in (("Job", "locust-master"), ("Deployment", "locust-worker")):
        env = container(find(enabled, kind, name))["env"]
        assert env[:2] == [
            {"name": "HOME", "value": "/tmp"},
            {"name": "LOADTEST_USERS", "value": str(SEED_USERS)},
        ], name
        assert env[-2:] == _from_secret("loadtest-credentials"), name


def test_env_secrets_are_skipped_in_checkov_with_a_reason(enabled: list[Obj]) -> None:
    for kind, name in (
        ("Job", "loadtest-seed"),
        ("Job", "locust-master"),
        ("Deployment", "locust-worker"),
    ):
        annotations = find(enabled, kind, name)["metadata"]["annotations"]
        (skip,) = [v for v in annotations.values() if v.startswith("CKV_K8S_35=")]
        assert "credentials" in skip


def test_the_loadtest_objects_pass_every_policy(recorded: list[Recorded]) -> None:
    resources = [(r.type, harness.unwrap(r.inputs, "secret")) for r in recorded]
    for resource_type, props in resources:
        assert violations(resource_type, props) == {}, (resource_type, props.get("metadata"))
    assert stack_violations(resources) == []


def test_the_component_leaves_the_production_check_to_config() -> None:
    # Validated once, in infra/config.py (tests/infra/test_config.py); the component trusts it.
    from dataclasses import fields

    from infra.components.loadtest import LoadtestArgs

    assert not {"production", "allow_production"} & {f.name for f in fields(LoadtestArgs)}


def test_a_production_stack_needs_the_flag_in_a_mocked_run_too(locustfile: str) -> None:
    on_prod = {"loadtestEnabled": "true", "loadtestTarget": "ingress", **ONE_ADDRESS}
    with pytest.raises(ConfigError, match="blueprint:loadtestAllowProduction: true"):
        harness.run("prod", {**on_prod, "loadtestLocustfile": locustfile})
    objs = objects("prod", loadtestLocustfile=locustfile, loadtestAllowProduction="true", **on_prod)
    flags = dict(itertools.pairwise(container(find(objs, "Job", "locust-master"))["args"]))
    assert flags["--host"] == "https://api.blueprint.example.com"  # prod has TLS
    assert not [o for o in objs if o["metadata"]["name"] == "loadtest-unseed"]
    assert find(objs, "HorizontalPodAutoscaler", "api")["spec"]["minReplicas"] == 3


@pytest.mark.parametrize(("value", "text"), [(40.0, "40"), (12.5, "12.5"), (0.25, "0.25")])
def test_the_arrival_rate_reaches_the_locustfile_as_it_parses_it(value: float, text: str) -> None:
    from infra.components.loadtest import rate

    assert rate(value) == text
    assert float(rate(value)) == value


# --- per pod or end to end ------------------------------------------------------------------


def test_per_pod_aims_at_the_service_of_one_pod_with_the_hpa_off(enabled: list[Obj]) -> None:
    master = find(enabled, "Job", "locust-master")
    flags = dict(itertools.pairwise(container(master)["args"]))
    assert flags["--host"] == "http://api.blueprint-dev.svc:80"
    assert not [o for o in enabled if o["kind"] == "HorizontalPodAutoscaler"]
    assert find(enabled, "Deployment", "api")["spec"]["replicas"] == 1


def test_per_pod_starts_once_the_service_has_ready_endpoints(recorded: list[Recorded]) -> None:
    master = _recorded(recorded, "kubernetes:batch/v1:Job", "locust-master")
    assert _depends_on(master, "kubernetes:core/v1:Service", "api")


@pytest.fixture(scope="module")
def end_to_end(locustfile: str) -> list[Recorded]:
    # dev as it is (1 to 2 replicas, autoscaled), aimed at its public host.
    overrides = {k: v for k, v in OVERRIDES.items() if k not in ONE_POD} | ONE_ADDRESS
    return run("dev", loadtestLocustfile=locustfile, loadtestTarget="ingress", **overrides)


def test_end_to_end_aims_at_the_public_host_through_the_ingress(
    end_to_end: list[Recorded],
) -> None:
    objs = harness.kubernetes_objects(end_to_end, secret=None)
    master = find(objs, "Job", "locust-master")
    flags = dict(itertools.pairwise(container(master)["args"]))
    assert flags["--host"] == "http://dev.blueprint.example.com"
    (rule,) = find(objs, "Ingress")["spec"]["rules"]
    assert rule["host"] == "dev.blueprint.example.com"
    # The app scales as it does without a load test: the HPA owns the count.
    hpa = find(objs, "HorizontalPodAutoscaler", "api")
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (1, 2)
    assert "replicas" not in find(objs, "Deployment", "api")["spec"]
    # Locust reaches the app through the controller, not as a peer of the app pods.
    (allowed,) = find(objs, "NetworkPolicy", "api-ingress")["spec"]["ingress"]
    assert not [p for p in allowed["from"] if "locust" in repr(p)]
    run_ = _recorded(end_to_end, "kubernetes:batch/v1:Job", "locust-master")
    assert _depends_on(run_, "kubernetes:networking.k8s.io/v1:Ingress", "api")


def test_end_to_end_over_tls_uses_https(locustfile: str) -> None:
    overrides = {k: v for k, v in OVERRIDES.items() if k not in ONE_POD} | ONE_ADDRESS
    objs = objects(
        "dev", loadtestLocustfile=locustfile, loadtestTarget="ingress", tls="true", **overrides
    )
    flags = dict(itertools.pairwise(container(find(objs, "Job", "locust-master"))["args"]))
    assert flags["--host"] == "https://dev.blueprint.example.com"


# --- the service's own limits -----------------------------------------------------------------


def test_a_run_above_the_default_limits_is_refused_in_a_mocked_run(locustfile: str) -> None:
    # 240 req/s over 3 pods: 80/s per worker address (40/s allowed), 7.6/s per account (10/s).
    fast = {**OVERRIDES, "loadtestArrivalRate": "240", "loadtestLocustfile": locustfile}
    with pytest.raises(ConfigError, match=r"blueprint:rateLimitClient is '2400/minute'"):
        harness.run("dev", fast)


def test_raised_limits_reach_the_app_deployment(locustfile: str) -> None:
    raised = {"rateLimitClient": "7200/minute", "rateLimitUser": "1200/minute"}
    fast = {**OVERRIDES, "loadtestArrivalRate": "240", "loadtestLocustfile": locustfile}
    objs = objects("dev", **fast, **raised)
    settings = find(objs, "ConfigMap", "api-settings")
    assert settings["data"]["RATE_LIMIT_CLIENT"] == "7200/minute"
    assert settings["data"]["RATE_LIMIT_USER"] == "1200/minute"
    assert "RATE_LIMIT_API_KEY_DEFAULT" not in settings["data"]  # 12/s fits the default 20/s
    api = container(find(objs, "Deployment", "api"))
    assert {"configMapRef": {"name": settings["metadata"]["name"]}} in api["envFrom"]
    flags = dict(itertools.pairwise(container(find(objs, "Job", "locust-master"))["args"]))
    assert flags["--users"] == "3"


# --- switched off: the seeded credentials are revoked ----------------------------------------


@pytest.mark.parametrize("stack", STACKS)
def test_off_runs_the_revocation_job_after_the_migrations(stack: str) -> None:
    objs = objects(stack)
    unseed, migrate = find(objs, "Job", "loadtest-unseed"), find(objs, "Job", "api-migrate")
    unseeder, migrator = container(unseed), container(migrate)
    assert unseeder["command"] == ["python", "-m", "service", "unseed-loadtest"]
    # The app's image and settings, hardened as the migration Job is (app.job).
    for field in ("image", "envFrom", "env", "volumeMounts", "securityContext", "resources"):
        assert unseeder[field] == migrator[field], field
    assert pod_spec(unseed)["volumes"] == pod_spec(migrate)["volumes"]
    # Nothing of the load test's: no credentials, no Locust.
    assert "loadtest-credentials" not in repr(unseed)
    assert not [o for o in objs if "locust" in o["metadata"]["name"]]
    (recorded,) = [
        r for r in run(stack) if r.type == "kubernetes:batch/v1:Job" and r.name == "loadtest-unseed"
    ]
    assert _depends_on(recorded, "kubernetes:batch/v1:Job", "api-migrate")


def test_on_there_is_no_revocation_job(enabled: list[Obj], end_to_end: list[Recorded]) -> None:
    for objs in (enabled, harness.kubernetes_objects(end_to_end)):
        assert not [o for o in objs if o["metadata"]["name"] == "loadtest-unseed"]
        assert find(objs, "Job", "loadtest-seed")


def test_the_revocation_job_is_stable_across_runs(locustfile: str) -> None:
    # Named by its template: the same inputs give the same Job, so a later `up` leaves it be;
    # load-test settings that do not reach it (they only matter when it is on) change nothing.
    def unseed(**overrides: str) -> Obj:
        return find(
            harness.kubernetes_objects(harness.run("dev", overrides)), "Job", "loadtest-unseed"
        )

    first, again = unseed(), unseed()
    assert first == again
    assert unseed(loadtestWorkers="5", loadtestArrivalRate="99") == first
    assert (
        first["metadata"]["name"]
        == find(objects("dev"), "Job", "loadtest-unseed")["metadata"]["name"]
    )
