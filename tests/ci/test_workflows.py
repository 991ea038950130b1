"""Properties of the GitHub Actions workflows that a reviewer would otherwise check by eye.

The workflows cannot run here; these tests read them as data (and run the one script the
Preview workflow runs) so that the guarantees in docs/ci-cd.md stay true as the files change:
every stack file is previewed, actions are pinned, permissions are least-privilege, deploys of
one stack never overlap, untrusted input never reaches a shell, and the image is built once.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
GITHUB = ROOT / ".github"
WORKFLOWS = GITHUB / "workflows"
ACTIONS = GITHUB / "actions"
LIST_STACKS = GITHUB / "scripts" / "list_stacks.py"
PULUMI_ACTION = ACTIONS / "pulumi" / "action.yml"

DEPLOY_STACKS = ("dev", "staging", "prod")
# The only write scopes any job may hold: (workflow file, job) -> {scope: "write"}.
# id-token: GitHub's OIDC token, for the Pulumi Cloud login without a stored token.
WRITE_SCOPES = {
    ("preview.yml", "preview"): {"pull-requests", "id-token"},
    ("deploy.yml", "build"): {"packages"},
    ("deploy.yml", "deploy-dev"): {"id-token"},
    ("deploy.yml", "deploy-staging"): {"id-token"},
    ("deploy.yml", "deploy-prod"): {"id-token"},
}
# Inputs of pulumi/actions v7.0.0 (action.yml at 8e5e406f), the ones this repository may use.
PULUMI_ACTION_INPUTS = {
    "command",
    "stack-name",
    "work-dir",
    "cloud-url",
    "comment-on-pr",
    "comment-on-pr-number",
    "comment-on-summary",
    "edit-pr-comment",
    "github-token",
    "config-map",
    "policyPacks",
    "policyPackConfigs",
    "pulumi-version",
    "pulumi-version-file",
    "refresh",
    "upsert",
    "diff",
    "parallel",
    "message",
    "expect-no-changes",
    "secrets-provider",
    "suppress-outputs",
    "suppress-progress",
    "always-include-summary",
    "color",
    "plan",
}
SHA_PIN = re.compile(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_./-]+@[0-9a-f]{40}$")
USES_LINE = re.compile(r"^\s*(?:-\s+)?uses:\s*(?P<ref>\S+)(?P<rest>.*)$")
EXPRESSION = re.compile(r"\$\{\{(.*?)\}\}", re.DOTALL)
EVENT_FIELD = re.compile(r"github\.event\.[A-Za-z0-9_.]+")
# The only event fields any expression reads: a number and a boolean, never text a pull-request
# author or a branch name controls.
EVENT_FIELDS_ALLOWED = {"github.event.pull_request.number", "github.event.release.prerelease"}


def load(path: Path) -> dict[Any, Any]:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(data, dict), f"{path} is not a YAML mapping"
    return data


def workflow(name: str) -> dict[Any, Any]:
    return load(WORKFLOWS / name)


def triggers(wf: dict[Any, Any]) -> dict[str, Any]:
    # PyYAML reads the bare key `on` as the boolean True (YAML 1.1).
    on = wf.get("on", wf.get(True))
    if isinstance(on, str):
        return {on: None}
    if isinstance(on, list):
        return dict.fromkeys(on)
    assert isinstance(on, dict)
    return on


def workflow_files() -> list[Path]:
    return sorted([*WORKFLOWS.glob("*.yml"), *WORKFLOWS.glob("*.yaml")])


def action_files() -> list[Path]:
    return sorted([*ACTIONS.glob("*/action.yml"), *ACTIONS.glob("*/action.yaml")])


def all_steps() -> Iterator[tuple[str, dict[str, Any]]]:
    """Every step of every workflow job and local composite action, with where it is."""
    for path in workflow_files():
        for job_id, job in workflow(path.name)["jobs"].items():
            for step in job.get("steps", []):
                yield f"{path.name}:{job_id}", step
    for path in action_files():
        for step in load(path)["runs"].get("steps", []):
            yield str(path.relative_to(ROOT)), step


def stack_files(root: Path) -> set[str]:
    """What the Makefile's STACKS is: the stem of every Pulumi.*.yaml in the root."""
    return {p.name[len("Pulumi.") : -len(".yaml")] for p in root.glob("Pulumi.*.yaml")}


def run_listing(root: Path, tmp_path: Path) -> list[str]:
    """Run the preview's listing script as the workflow does; return what it writes to the
    step output (and check it prints the same)."""
    output = tmp_path / "github_output"
    output.write_text("", encoding="utf-8")
    result = subprocess.run(
        [sys.executable, str(LIST_STACKS)],
        cwd=root,
        env={"GITHUB_OUTPUT": str(output), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=True,
    )
    lines = output.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("stacks="), lines
    stacks = json.loads(lines[0].removeprefix("stacks="))
    assert json.loads(result.stdout) == stacks
    assert isinstance(stacks, list)
    return stacks


# --- the preview matrix covers exactly the stack files ------------------------------------------


def test_preview_matrix_is_the_stack_listing() -> None:
    preview = workflow("preview.yml")
    lister = preview["jobs"]["stacks"]
    steps = [s for s in lister["steps"] if s.get("id") == "list"]
    assert len(steps) == 1
    assert steps[0]["run"].strip() == "python3 .github/scripts/list_stacks.py"
    assert lister["outputs"]["stacks"] == "${{ steps.list.outputs.stacks }}"

    job = preview["jobs"]["preview"]
    assert job["needs"] == "stacks"
    assert job["strategy"]["matrix"] == {"stack": "${{ fromJSON(needs.stacks.outputs.stacks) }}"}
    # An empty list would be an invalid matrix; no stacks means no preview job.
    assert job["if"] == "needs.stacks.outputs.stacks != '[]'"


def test_listing_covers_every_stack_file_in_the_repository(tmp_path: Path) -> None:
    listed = run_listing(ROOT, tmp_path)
    # Not previewed: the stacks CI never deploys (a laptop's, the E2E run's own kind cluster).
    on_disk = stack_files(ROOT) - {"local", "e2e"}
    assert {"local", "e2e"} <= stack_files(ROOT)
    assert not on_disk - set(listed), (
        f"stack files the preview matrix misses: {on_disk - set(listed)}"
    )
    assert not set(listed) - on_disk, f"matrix stacks with no stack file: {set(listed) - on_disk}"
    assert listed == sorted(listed)


def test_listing_takes_stack_files_and_nothing_else(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    (repo / "infra").mkdir(parents=True)
    for name in ("Pulumi.yaml", "Pulumi.dev.yaml", "Pulumi.staging.yaml", "Pulumi.prod.yaml"):
        (repo / name).write_text("config: {}\n", encoding="utf-8")
    (repo / "Pulumi.qa-eu.yaml").write_text("config: {}\n", encoding="utf-8")
    (repo / "Pulumi.local.yaml").write_text("config: {}\n", encoding="utf-8")  # a laptop's
    (repo / "Pulumi.old.yml").write_text("config: {}\n", encoding="utf-8")  # not .yaml
    (repo / "Pulumi.dev.yaml.bak").write_text("", encoding="utf-8")
    (repo / "infra" / "Pulumi.nested.yaml").write_text("", encoding="utf-8")  # not in the root
    (repo / "Pulumi.folder.yaml").mkdir()  # not a file
    assert run_listing(repo, tmp_path) == ["dev", "prod", "qa-eu", "staging"]


def test_listing_of_a_tree_without_stacks_is_empty(tmp_path: Path) -> None:
    assert run_listing(tmp_path, tmp_path) == []


def test_every_deployed_stack_has_a_stack_file() -> None:
    if not (ROOT / "Pulumi.yaml").exists():
        pytest.skip("the Pulumi project (Pulumi.yaml) is not in this tree yet")
    missing = [s for s in DEPLOY_STACKS if not (ROOT / f"Pulumi.{s}.yaml").is_file()]
    assert not missing, f"Deploy targets stacks with no Pulumi.<stack>.yaml: {missing}"


# --- pinning, permissions, untrusted input -----------------------------------------------------


def test_every_action_is_pinned_to_a_commit_sha_with_its_version() -> None:
    files = [*workflow_files(), *action_files()]
    assert len(files) >= 4
    refs = 0
    for path in files:
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            match = USES_LINE.match(line)
            if not match:
                continue
            refs += 1
            ref, rest = match["ref"], match["rest"]
            where = f"{path.relative_to(ROOT)}:{number}"
            if ref.startswith("./"):
                assert (ROOT / ref).exists(), f"{where}: {ref} does not exist"
                continue
            assert SHA_PIN.match(ref), f"{where}: {ref} is not pinned to a 40-hex commit SHA"
            assert re.search(r"#\s*v\d+(\.\d+)*\s*$", rest), f"{where}: no '# vX.Y.Z' comment"
    assert refs > 10


def test_same_action_is_pinned_to_the_same_commit_everywhere() -> None:
    pins: dict[str, set[str]] = {}
    for _, step in all_steps():
        uses = step.get("uses", "")
        if "@" in uses:
            name, sha = uses.split("@", 1)
            pins.setdefault(name, set()).add(sha)
    assert pins, "no pinned actions found"
    assert {n: s for n, s in pins.items() if len(s) > 1} == {}


def test_workflows_default_to_no_permissions() -> None:
    for path in workflow_files():
        assert workflow(path.name).get("permissions") == {}, f"{path.name}: set permissions: {{}}"


def test_every_job_declares_least_privilege_permissions() -> None:
    for path in workflow_files():
        for job_id, job in workflow(path.name)["jobs"].items():
            assert "permissions" in job, f"{path.name}:{job_id} declares no permissions"
            permissions = job["permissions"]
            assert isinstance(permissions, dict), f"{path.name}:{job_id}: {permissions!r}"
            writes = {scope for scope, level in permissions.items() if level == "write"}
            allowed = WRITE_SCOPES.get((path.name, job_id), set())
            assert writes == allowed, f"{path.name}:{job_id} writes {writes}, allowed {allowed}"
            assert set(permissions.values()) <= {"read", "write", "none"}


def test_run_scripts_expand_no_expressions() -> None:
    """Every value reaches a shell through env:, never by ${{ }} inside the script, so neither a
    pull-request title nor a branch name (nor anything else) can be read as shell code."""
    scripts = 0
    for where, step in all_steps():
        script = step.get("run")
        if script is None:
            continue
        scripts += 1
        expressions = EXPRESSION.findall(script)
        assert not expressions, f"{where}: ${{{{ }}}} inside run: {expressions}"
    assert scripts > 5


def test_no_untrusted_context_anywhere() -> None:
    # Belt and braces for the test above: no expression anywhere reads the head ref or a text
    # field of the event payload (titles, bodies, branch names, commit messages).
    for path in [*workflow_files(), *action_files()]:
        for expression in EXPRESSION.findall(path.read_text(encoding="utf-8")):
            where = f"{path.relative_to(ROOT)}: ${{{{{expression}}}}}"
            assert "head_ref" not in expression, where
            assert set(EVENT_FIELD.findall(expression)) <= EVENT_FIELDS_ALLOWED, where


def test_checkouts_do_not_persist_credentials() -> None:
    checkouts = 0
    for where, step in all_steps():
        if step.get("uses", "").startswith("actions/checkout@"):
            checkouts += 1
            assert step.get("with", {}).get("persist-credentials") is False, where
    assert checkouts >= 6


# --- deploys ------------------------------------------------------------------------------------


def pulumi_steps(job: dict[str, Any]) -> list[dict[str, Any]]:
    return [s for s in job.get("steps", []) if s.get("uses") == "./.github/actions/pulumi"]


def deploy_jobs() -> dict[str, dict[str, Any]]:
    """stack -> the Deploy job that runs `pulumi up` on it."""
    jobs: dict[str, dict[str, Any]] = {}
    for job in workflow("deploy.yml")["jobs"].values():
        for step in pulumi_steps(job):
            assert step["with"]["command"] == "up"
            stack = step["with"]["stack"]
            assert stack not in jobs, f"two deploy jobs for {stack}"
            jobs[stack] = job
    return jobs


def test_deploy_covers_dev_staging_and_prod() -> None:
    assert set(deploy_jobs()) == set(DEPLOY_STACKS)


def test_deploys_of_one_stack_never_overlap() -> None:
    groups = set()
    for stack, job in deploy_jobs().items():
        concurrency = job.get("concurrency")
        assert isinstance(concurrency, dict), f"deploy of {stack} has no concurrency group"
        assert concurrency["group"] == f"pulumi-{stack}"
        assert concurrency["cancel-in-progress"] is False
        groups.add(concurrency["group"])
    assert len(groups) == len(DEPLOY_STACKS)


def test_deploys_run_in_the_environment_named_after_the_stack() -> None:
    for stack, job in deploy_jobs().items():
        assert job.get("environment") == stack, f"deploy of {stack}: {job.get('environment')!r}"


def test_previews_run_in_preview_environments() -> None:
    job = workflow("preview.yml")["jobs"]["preview"]
    assert job["environment"] == "${{ matrix.stack }}-preview"
    assert job["environment"] not in DEPLOY_STACKS


def test_staging_and_prod_deploy_only_on_release_or_dispatch() -> None:
    deploy = workflow("deploy.yml")
    assert set(triggers(deploy)) == {"push", "release", "workflow_dispatch"}
    assert triggers(deploy)["push"] == {"branches": ["main"]}
    jobs = deploy["jobs"]
    assert "release" in jobs["resolve"]["if"]
    assert "workflow_dispatch" in jobs["resolve"]["if"]
    assert jobs["deploy-staging"]["needs"] == "resolve"
    assert set(jobs["deploy-prod"]["needs"]) == {"resolve", "deploy-staging"}
    assert jobs["deploy-dev"]["needs"] == "build"
    assert jobs["build"]["needs"] == "tests"
    assert jobs["tests"]["uses"] == "./.github/workflows/tests.yml"
    assert jobs["tests"]["if"] == "github.event_name == 'push'"


def test_image_is_built_and_pushed_once_then_promoted_by_digest() -> None:
    pushes = []
    for where, step in all_steps():
        if step.get("uses", "").startswith("docker/build-push-action@"):
            if step["with"].get("push") is True:
                pushes.append(where)
            else:
                assert step["with"].get("push") is False, where
    assert pushes == ["deploy.yml:build"]

    jobs = deploy_jobs()
    images = {stack: pulumi_steps(job)[0]["with"]["image"] for stack, job in jobs.items()}
    assert images["dev"] == "${{ needs.build.outputs.image }}"
    # staging and prod take the very same resolved digest, never a tag.
    assert images["staging"] == images["prod"] == "${{ needs.resolve.outputs.image }}"
    build = workflow("deploy.yml")["jobs"]["build"]
    assert build["outputs"]["image"] == "${{ steps.ref.outputs.image }}"
    ref_step = next(s for s in build["steps"] if s.get("id") == "ref")
    assert ref_step["env"]["DIGEST"] == "${{ steps.push.outputs.digest }}"
    assert "image=${NAME}@${DIGEST}" in ref_step["run"]


def test_the_pulumi_action_gets_only_known_inputs_and_enforces_the_policy_pack() -> None:
    steps = load(PULUMI_ACTION)["runs"]["steps"]
    pulumi = [s for s in steps if s.get("uses", "").startswith("pulumi/actions@")]
    for step in pulumi:
        assert set(step.get("with", {})) <= PULUMI_ACTION_INPUTS, step
    runs = [s for s in pulumi if "command" in s.get("with", {})]
    assert [s.get("id") for s in runs] == ["pulumi"]
    given = runs[0]["with"]
    assert given["policyPacks"] == "infra/policy"
    assert given["comment-on-pr"] == "${{ inputs.comment-on-pr }}"
    assert given["edit-pr-comment"] is True
    assert given["work-dir"] == "./"
    assert given["config-map"] == "${{ steps.config.outputs.config-map }}"
    config = next(s for s in steps if s.get("id") == "config")
    assert "python3 .github/scripts/stack_config.py" in config["run"]


def test_policy_pack_directory_exists() -> None:
    if not (ROOT / "infra").is_dir():
        pytest.skip("infra/ is not in this tree yet")
    if not (ROOT / "infra" / "policy").is_dir():
        pytest.skip("infra/policy is not in this tree yet")
    assert (ROOT / "infra" / "policy" / "PulumiPolicy.yaml").is_file()


def test_previews_comment_on_the_pull_request_and_skip_without_secrets() -> None:
    job = workflow("preview.yml")["jobs"]["preview"]
    check, *rest = job["steps"]
    assert check["id"] == "credentials"
    assert rest, "nothing after the credential check"
    for step in rest:
        assert step.get("if") == "steps.credentials.outputs.available == 'true'", step
    (pulumi,) = pulumi_steps(job)
    assert pulumi["with"]["command"] == "preview"
    assert pulumi["with"]["comment-on-pr"] is True
    assert job["concurrency"]["cancel-in-progress"] is True


# --- tests workflow -----------------------------------------------------------------------------


def test_tests_workflow_runs_everything_through_make() -> None:
    tests = workflow("tests.yml")
    assert {"pull_request", "push", "workflow_call"} <= set(triggers(tests))
    runs = [s.get("run", "").strip() for _, s in all_steps()]
    for target in ("make lint", "make test", "make validate-manifests"):
        assert target in runs, f"{target} never runs"
    services = tests["jobs"]["test"]["services"]
    assert services["postgres"]["image"] == "postgres:16"
    assert services["postgres"]["env"]["POSTGRES_HOST_AUTH_METHOD"] == "trust"
    assert services["postgres"]["ports"] == ["5432:5432"]
    assert services["redis"]["image"] == "redis:7"
    assert services["redis"]["ports"] == ["6379:6379"]
    build = next(
        s
        for s in tests["jobs"]["image"]["steps"]
        if s.get("uses", "").startswith("docker/build-push-action@")
    )
    assert build["with"]["push"] is False
    assert build["with"]["context"] == "."


def test_dependabot_watches_actions_and_the_lock() -> None:
    config = load(GITHUB / "dependabot.yml")
    assert config["version"] == 2
    ecosystems = {u["package-ecosystem"]: u for u in config["updates"]}
    assert {"github-actions", "uv"} <= set(ecosystems)
    directories = ecosystems["github-actions"].get("directories", [])
    for path in action_files():
        assert any(
            d == f"/{path.parent.relative_to(ROOT)}" or d.endswith("/*") for d in directories
        ), f"dependabot does not watch {path}"
