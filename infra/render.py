"""Write a stack's Kubernetes objects as YAML, one file per object, from a mocked run.

    python -m infra.render dev                     -> build/manifests/dev/NN-kind-name.yaml
    python -m infra.render dev --set loadtestEnabled=true --set minReplicas=1 --set maxReplicas=1 \
        --out build/manifests/dev-loadtest       (the load test's per-pod target: one replica)

For review and for the validators (kubernetes-validate, checkov). Names Pulumi would auto-suffix
carry their logical name; secret values are placeholders, never real values.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path
from typing import Any

import yaml

from infra import harness
from infra.config import ConfigError


def write(objects: list[dict[str, Any]], out: Path) -> list[Path]:
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    paths = []
    for index, obj in enumerate(objects, start=1):
        path = out / f"{index:02d}-{obj['kind'].lower()}-{obj['metadata']['name']}.yaml"
        path.write_text(yaml.safe_dump(obj, sort_keys=True), encoding="utf-8")
        paths.append(path)
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.render", description=__doc__)
    parser.add_argument("stack", help="a stack with a Pulumi.<stack>.yaml")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override a plain key"
    )
    parser.add_argument("--out", type=Path, help="default: build/manifests/<stack>")
    args = parser.parse_args(argv)
    overrides = dict(item.split("=", 1) for item in args.set)
    try:
        objects = harness.kubernetes_objects(harness.run(args.stack, overrides))
    except ConfigError as error:
        print(f"render {args.stack}: {error}", file=sys.stderr)
        return 1
    out = args.out or harness.REPO_ROOT / "build" / "manifests" / args.stack
    paths = write(objects, out)
    print(f"render {args.stack}: {len(paths)} objects -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
