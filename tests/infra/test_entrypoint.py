"""infra/__main__.py as Pulumi runs it: working directory infra/, only infra/ on sys.path."""

from __future__ import annotations

import json
import subprocess
import sys

from infra import harness

SCRIPT = """
import json, runpy, sys
import pulumi

class Echo(pulumi.runtime.Mocks):
    types = []
    def new_resource(self, args):
        Echo.types.append((args.typ, args.inputs.get("build", {}).get("context")))
        # What providers would add: a generated password, a pushed digest.
        return args.name + "-id", {"result": "pw", "repoDigest": "r@sha256:0", **args.inputs}
    def call(self, args):
        return {}, None

assert sys.argv[2] not in sys.path, "the repo root must not be on sys.path, as under Pulumi"
pulumi.runtime.set_mocks(Echo(), project="blueprint", stack="local", preview=False)
pulumi.runtime.set_all_config(json.loads(sys.argv[1]))
pulumi.runtime.test(lambda: runpy.run_path(".", run_name="__main__"))()
print(json.dumps(Echo.types))
"""


def test_pulumi_can_run_the_program_from_infra() -> None:
    config = json.dumps(harness.stack_config("local"))
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, config, str(harness.REPO_ROOT)],
        cwd=harness.REPO_ROOT / "infra",
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    registered = json.loads(result.stdout.strip().splitlines()[-1])
    types = [t for t, _ in registered]
    assert "kubernetes:apps/v1:Deployment" in types
    assert "pulumi:providers:kubernetes" in types
    # The image builds from the repo root, relative to infra/ so no checkout path leaks in.
    assert ["docker:index/image:Image", ".."] in registered
