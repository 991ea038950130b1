"""Print the Pulumi stacks CI previews as a JSON list, one per ``Pulumi.<stack>.yaml``.

The Preview workflow turns this list into its job matrix, so adding a stack file is all it
takes to get that stack previewed; ``tests/ci/test_workflows.py`` checks that the list matches
the files on disk. It uses the same glob as the Makefile's ``STACKS`` (``Pulumi.*.yaml`` in the
repository root), so ``make render-all`` and the preview always agree.

Usage: ``python3 .github/scripts/list_stacks.py [ROOT]``. With ``GITHUB_OUTPUT`` set (inside a
workflow step) it also appends ``stacks=<json>`` to that file.
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

STACK_FILE = re.compile(r"^Pulumi\.(?P<stack>[A-Za-z0-9_.-]+)\.yaml$")
# Stacks CI never deploys, so no preview environment holds credentials for them: `local` is a
# developer's laptop cluster, `e2e` a throwaway kind cluster the E2E workflow creates.
NOT_PREVIEWED = frozenset({"local", "e2e"})


def list_stacks(root: Path) -> list[str]:
    """The stack names whose ``Pulumi.<stack>.yaml`` is a file directly in ``root``, sorted,
    except NOT_PREVIEWED."""
    stacks = []
    for path in root.glob("Pulumi.*.yaml"):
        match = STACK_FILE.match(path.name)
        if match and path.is_file() and match["stack"] not in NOT_PREVIEWED:
            stacks.append(match["stack"])
    return sorted(stacks)


def main(argv: list[str]) -> int:
    root = Path(argv[1]) if len(argv) > 1 else Path.cwd()
    stacks = json.dumps(list_stacks(root))
    print(stacks)
    output = os.environ.get("GITHUB_OUTPUT")
    if output:
        with open(output, "a", encoding="utf-8") as fh:
            fh.write(f"stacks={stacks}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
