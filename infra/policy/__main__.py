"""The policy pack's entry point: `pulumi preview --policy-pack infra/policy`."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repo root, for `infra.…`

from pulumi_policy import EnforcementLevel, PolicyPack

from infra.policy.rules import RESOURCE_POLICIES, STACK_POLICIES

PolicyPack(
    name="blueprint",
    enforcement_level=EnforcementLevel.MANDATORY,
    policies=[*RESOURCE_POLICIES, *STACK_POLICIES],
)
