"""Print the Pulumi CLI version to install: the `pulumi` SDK's version in uv.lock, so the CLI
and the SDK the program runs with never drift apart. With GITHUB_OUTPUT set (inside a workflow
step) it also appends ``version=<version>`` to that file."""

from __future__ import annotations

import os
import sys
import tomllib
from pathlib import Path


def locked_version(lock: Path) -> str:
    packages = tomllib.loads(lock.read_text(encoding="utf-8"))["package"]
    return str(next(p["version"] for p in packages if p["name"] == "pulumi"))


def main() -> int:
    version = locked_version(Path("uv.lock"))
    print(f"Pulumi CLI {version}")
    if output := os.environ.get("GITHUB_OUTPUT"):
        with open(output, "a", encoding="utf-8") as fh:
            fh.write(f"version={version}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
