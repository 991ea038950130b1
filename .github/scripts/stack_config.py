"""Write the pulumi/actions ``config-map`` for one run: the image and the stack's secrets.

The stack secrets (``jwtSecret``, ``databaseUrl``, ...) live in the job's GitHub environment,
never in a stack file in plain text; each arrives in an environment variable named in
SECRET_ENV and is passed as ``{"secret": true}``, so Pulumi stores it encrypted and every
preview, diff and pull-request comment shows ``[secret]``. Unset variables are left out (the
stack's own ``secure:`` value or ESC environment, if any, then applies).

Usage (in a workflow step): ``python3 .github/scripts/stack_config.py`` with IMAGE and the
variables below in the environment; appends ``config-map=<json>`` to ``$GITHUB_OUTPUT``.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Mapping

PROJECT = "blueprint"
# Environment variable -> stack config key (infra/config.py SECRET_KEYS).
SECRET_ENV = {
    "STACK_JWT_SECRET": "jwtSecret",
    "STACK_DATABASE_URL": "databaseUrl",
    "STACK_REDIS_URL": "redisUrl",
    "STACK_FIRST_ADMIN_PASSWORD": "firstAdminPassword",
    "STACK_PULL_PASSWORD": "pullPassword",
}
DIGEST_REF = re.compile(r"^[a-z0-9][a-z0-9./_:-]*@sha256:[0-9a-f]{64}$")


def config_map(env: Mapping[str, str]) -> dict[str, dict[str, object]]:
    """The config entries for this run; raises ValueError on an image not pinned by digest."""
    entries: dict[str, dict[str, object]] = {}
    image = env.get("IMAGE", "")
    if image:
        if not DIGEST_REF.match(image):
            raise ValueError(f"not an image reference pinned by digest (name@sha256:...): {image}")
        entries[f"{PROJECT}:image"] = {"value": image, "secret": False}
    for variable, name in SECRET_ENV.items():
        if value := env.get(variable, ""):
            entries[f"{PROJECT}:{name}"] = {"value": value, "secret": True}
    return entries


def main() -> int:
    try:
        entries = config_map(os.environ)
    except ValueError as error:
        print(f"::error::{error}")
        return 1
    for entry in entries.values():
        if entry["secret"]:
            print(f"::add-mask::{entry['value']}")  # masked in this job's log from here on
    print("config keys:", ", ".join(sorted(entries)) or "none")
    with open(os.environ["GITHUB_OUTPUT"], "a", encoding="utf-8") as fh:
        fh.write(f"config-map={json.dumps(entries) if entries else ''}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
