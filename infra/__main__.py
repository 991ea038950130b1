"""Pulumi entry point (Pulumi.yaml `main: infra/`, run with infra/ as the working directory)."""

import sys
from pathlib import Path

# Make `import infra.…` work under Pulumi too, where only infra/ itself is on sys.path.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from infra.program import main

main()
