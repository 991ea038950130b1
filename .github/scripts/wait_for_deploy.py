"""Wait until no Deploy job is running `pulumi up` on this stack, so a preview never reads a
half-applied state.

Pulumi lets a preview run while an update holds the stack (both backends, pulumi/pulumi#8642:
"the preview may be relative to a partial state of the stack"), and a GitHub concurrency group
shared with the deploys cannot be used instead: a group keeps one pending run and cancels the
one before it, so a pull request's preview could cancel a pending deploy of prod.

Usage: ``python3 .github/scripts/wait_for_deploy.py STACK`` with GITHUB_TOKEN (actions: read),
GITHUB_REPOSITORY and GITHUB_API_URL set; waits at most WAIT_SECONDS.
"""

from __future__ import annotations

import json
import os
import sys
import time
import urllib.request
from collections.abc import Iterable, Mapping
from typing import Any

DEPLOY_WORKFLOW = "deploy.yml"
WAIT_SECONDS = 45 * 60  # the deploy jobs' own timeout
POLL_SECONDS = 20


def deploy_job_name(stack: str) -> str:
    """The name Deploy gives the job that runs `pulumi up` on ``stack``."""
    return f"pulumi up ({stack})"


def busy(jobs: Iterable[Mapping[str, Any]], stack: str) -> bool:
    """Whether one of a run's jobs is deploying ``stack`` now (queued jobs have not started)."""
    return any(
        job.get("name") == deploy_job_name(stack) and job.get("status") == "in_progress"
        for job in jobs
    )


def _get(url: str, token: str) -> Any:
    request = urllib.request.Request(  # noqa: S310 - the GitHub API's https URL
        url, headers={"Authorization": f"Bearer {token}", "Accept": "application/vnd.github+json"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
        return json.load(response)


def deploying(stack: str, env: Mapping[str, str]) -> bool:
    api, repo, token = env["GITHUB_API_URL"], env["GITHUB_REPOSITORY"], env["GITHUB_TOKEN"]
    runs = _get(
        f"{api}/repos/{repo}/actions/workflows/{DEPLOY_WORKFLOW}/runs?status=in_progress", token
    )
    for run in runs.get("workflow_runs", []):
        jobs = _get(f"{api}/repos/{repo}/actions/runs/{run['id']}/jobs", token)
        if busy(jobs.get("jobs", []), stack):
            return True
    return False


def main(argv: list[str]) -> int:
    stack = argv[1]
    deadline = time.monotonic() + WAIT_SECONDS
    while deploying(stack, os.environ):
        if time.monotonic() > deadline:
            print(f"::error::a deploy of {stack} is still running after {WAIT_SECONDS} s")
            return 1
        print(f"a deploy of {stack} is in progress; waiting")
        time.sleep(POLL_SECONDS)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
