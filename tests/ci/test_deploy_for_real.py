"""The CI half of issue 12: stack secrets, ordering, previews against deploys, the image's
supply chain and the end-to-end workflow. Read as data, plus the scripts the steps run."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from tests.ci.test_workflows import GITHUB, PULUMI_ACTION, ROOT, load, triggers, workflow

SCRIPTS = GITHUB / "scripts"
DIGEST = "ghcr.io/example/blueprint@sha256:" + "a" * 64


def script(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    assert spec
    assert spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --- 1: stack secrets reach Pulumi as secret config ----------------------------------------------


def test_every_stack_secret_has_a_variable_and_goes_in_as_a_secret() -> None:
    from infra.config import SECRET_KEYS

    stack_config = script("stack_config")
    # Each secret the program can require (infra.config.required_secrets) has a way in.
    assert {"jwtSecret", "databaseUrl", "redisUrl", "pullPassword"} <= set(
        stack_config.SECRET_ENV.values()
    )
    assert set(stack_config.SECRET_ENV.values()) <= set(SECRET_KEYS)
    env = {variable: f"value-of-{variable}" for variable in stack_config.SECRET_ENV}
    entries = stack_config.config_map({"IMAGE": DIGEST, **env})
    assert entries.pop("blueprint:image") == {"value": DIGEST, "secret": False}
    assert entries
    assert all(entry["secret"] is True for entry in entries.values())


def test_unset_secrets_are_left_out_and_a_tag_is_refused() -> None:
    stack_config = script("stack_config")
    assert stack_config.config_map({"STACK_JWT_SECRET": ""}) == {}
    with pytest.raises(ValueError, match="pinned by digest"):
        stack_config.config_map({"IMAGE": "ghcr.io/example/blueprint:latest"})


def test_the_script_masks_secrets_and_writes_the_config_map(tmp_path: Path) -> None:
    output = tmp_path / "out"
    output.write_text("")
    result = subprocess.run(
        [sys.executable, str(SCRIPTS / "stack_config.py")],
        env={"GITHUB_OUTPUT": str(output), "IMAGE": DIGEST, "STACK_JWT_SECRET": "s3cr3t"},
        capture_output=True,
        text=True,
        check=True,
    )
    assert "::add-mask::s3cr3t" in result.stdout
    assert result.stdout.count("s3cr3t") == 1  # only in the mask command itself
    (line,) = output.read_text().splitlines()
    config = json.loads(line.removeprefix("config-map="))
    assert config["blueprint:jwtSecret"] == {"value": "s3cr3t", "secret": True}


def test_every_pulumi_job_passes_the_environments_stack_secrets() -> None:
    action_inputs = set(load(PULUMI_ACTION)["inputs"])
    wanted = {
        "jwt-secret": "JWT_SECRET",
        "database-url": "DATABASE_URL",
        "redis-url": "REDIS_URL",
        "first-admin-password": "FIRST_ADMIN_PASSWORD",
        "pull-password": "PULL_PASSWORD",
    }
    assert set(wanted) <= action_inputs
    jobs = [*workflow("deploy.yml")["jobs"].values(), workflow("preview.yml")["jobs"]["preview"]]
    calls = [
        s
        for job in jobs
        for s in job.get("steps", [])
        if s.get("uses") == "./.github/actions/pulumi"
    ]
    assert len(calls) == 4
    for call in calls:
        for name, secret in wanted.items():
            assert call["with"][name] == f"${{{{ secrets.{secret} }}}}"


def test_committed_secret_values_are_ciphertext_only() -> None:
    # `pulumi config set --secret` commits {secure: <ciphertext>}; anything else is plaintext.
    from infra.config import SECRET_KEYS

    for path in ROOT.glob("Pulumi.*.yaml"):
        config = load(path).get("config", {})
        for name in SECRET_KEYS:
            value = config.get(f"blueprint:{name}")
            assert value is None or set(value) == {"secure"}, f"{path.name}: {name} in plain text"


def test_oidc_login_is_wired_in_the_action() -> None:
    steps = load(PULUMI_ACTION)["runs"]["steps"]
    (oidc,) = [s for s in steps if s.get("uses", "").startswith("pulumi/auth-actions@")]
    assert oidc["if"] == "inputs.pulumi-oidc-organization != ''"
    check = next(s for s in steps if s.get("name") == "Check the credentials")
    assert "env.PULUMI_ACCESS_TOKEN" in check["env"]["PULUMI_ACCESS_TOKEN"]


# --- 13: ordering --------------------------------------------------------------------------------


def test_pushes_to_main_deploy_in_order() -> None:
    deploy = workflow("deploy.yml")
    concurrency = deploy["concurrency"]
    assert concurrency["cancel-in-progress"] is False
    # Every push shares one group (build and deploy together); releases get their own.
    assert (
        concurrency["group"]
        == "deploy-${{ github.event_name == 'push' && 'main' || github.run_id }}"
    )


def test_previews_wait_for_a_deploy_of_their_stack() -> None:
    job = workflow("preview.yml")["jobs"]["preview"]
    names = [s.get("name", s.get("uses", "")) for s in job["steps"]]
    wait = names.index("Wait for a deploy of this stack in progress")
    assert wait < names.index("./.github/actions/pulumi")
    assert job["permissions"]["actions"] == "read"
    waiter = script("wait_for_deploy")
    jobs = [{"name": "pulumi up (prod)", "status": "in_progress"}]
    assert waiter.busy(jobs, "prod")
    assert not waiter.busy(jobs, "dev")
    assert not waiter.busy([{"name": "pulumi up (prod)", "status": "queued"}], "prod")
    # The names the waiter looks for are the Deploy jobs' names.
    deploy_names = {j["name"] for j in workflow("deploy.yml")["jobs"].values()}
    for stack in ("dev", "staging", "prod"):
        assert waiter.deploy_job_name(stack) in deploy_names


# --- supply chain --------------------------------------------------------------------------------


def test_the_pushed_image_is_multi_arch_with_an_sbom() -> None:
    build = workflow("deploy.yml")["jobs"]["build"]
    push = next(s for s in build["steps"] if s.get("id") == "push")
    assert set(push["with"]["platforms"].split(",")) == {"linux/amd64", "linux/arm64"}
    assert push["with"]["sbom"] is True
    assert any(s.get("uses", "").startswith("docker/setup-qemu-action@") for s in build["steps"])


def test_promotion_scans_the_image_before_staging_and_prod() -> None:
    jobs = workflow("deploy.yml")["jobs"]
    resolve = jobs["resolve"]
    (scan,) = [
        s for s in resolve["steps"] if s.get("uses", "").startswith("aquasecurity/trivy-action@")
    ]
    assert scan["with"]["image-ref"] == "${{ steps.resolve.outputs.image }}"
    assert scan["with"]["exit-code"] == "1"
    assert "CRITICAL" in scan["with"]["severity"]
    resolve_step = next(s for s in resolve["steps"] if s.get("id") == "resolve")
    assert ".SBOM" in resolve_step["run"]
    assert jobs["deploy-staging"]["needs"] == "resolve"


def test_the_base_image_is_pinned_by_digest() -> None:
    froms = re.findall(r"^FROM\s+(\S+)", (ROOT / "Dockerfile").read_text(), flags=re.M)
    assert len(froms) == 2
    for ref in froms:
        assert re.fullmatch(r"python:3\.11-slim-bookworm@sha256:[0-9a-f]{64}", ref), ref


# --- the end-to-end workflow ----------------------------------------------------------------------


def test_e2e_runs_on_infra_changes_and_nightly_through_make() -> None:
    e2e = workflow("e2e.yml")
    on = triggers(e2e)
    paths = set(on["pull_request"]["paths"])
    assert {"infra/**", "service/**", "Dockerfile", "Pulumi.e2e.yaml"} <= paths
    assert on["schedule"][0]["cron"]
    (job,) = e2e["jobs"].values()
    runs = [s.get("run", "") for s in job["steps"]]
    assert any(r.strip().endswith("make e2e") for r in runs)
    assert job["permissions"] == {"contents": "read"}  # no cloud credentials at all
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^e2e: venv .*\n\t\$\(PY\) -m e2e\.run$", makefile, flags=re.M)
