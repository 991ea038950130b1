"""Case 5 — fuzzing: schemathesis against the live OpenAPI document of the production server,
authenticated as a user and as an admin. Every built-in check (no server errors, responses
and status codes and content types as documented, ...) plus one of ours: every 4xx/5xx body
is problem+json with the fields our errors promise.

`test_fuzz_case_count` runs after both runs (file order) and asserts the issue's figure:
at least 1,000 generated cases in the default run."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import schemathesis
from schemathesis import BaseSchema, Case, CheckContext, Response
from schemathesis.config import SchemathesisConfig

from tests.reliability.conftest import (
    ADMIN_EMAIL,
    GENEROUS_LIMITS,
    Databases,
    Servers,
    login,
    record_figures,
    scaled,
    seed_users,
    user_email,
)
from tests.support.databases import REDIS_URL

# Hypothesis examples per operation in the fuzzing phase (the examples and coverage phases
# add their own cases on top).
MAX_EXAMPLES = int(scaled(40, 300))
MIN_CASES = 1000
PROBLEM_MEDIA_TYPE = "application/problem+json"

pytestmark = pytest.mark.timeout(int(scaled(180, 1800)))


@dataclass
class Tally:
    cases: int = 0
    by_status: Counter[int] = field(default_factory=Counter)
    by_operation: Counter[str] = field(default_factory=Counter)


TALLIES: dict[str, Tally] = {"user": Tally(), "admin": Tally()}


@dataclass(frozen=True)
class FuzzTarget:
    base_url: str
    headers: dict[str, dict[str, str]]


@pytest.fixture(scope="module")
async def fuzz_target(databases: Databases, module_servers: Servers) -> FuzzTarget:
    database_url = await databases.create()
    seed_users(database_url, 1)
    server = module_servers.start(
        {"DATABASE_URL": database_url, "REDIS_URL": REDIS_URL, **GENEROUS_LIMITS}
    )
    async with httpx.AsyncClient(base_url=server.base_url) as client:
        headers = {
            "user": await login(client, user_email(0)),
            "admin": await login(client, ADMIN_EMAIL),
        }
    return FuzzTarget(server.base_url, headers)


# One exception to "schema-valid data is accepted": an API key names its rate-limit tier, and
# tiers are created at run time, so the document cannot list them; a schema-valid name that no
# tier has is a 422 by design (the same check still holds for every other status and operation).
CONFIG = """
[[operations]]
include-path = "/api/v1/api-keys"
include-method = "POST"
checks.positive_data_acceptance.expected-statuses = [
    "2xx", "3xx", "401", "403", "404", "409", "422", "429", "5xx",
]
"""


@pytest.fixture(scope="module")
def live_schema(fuzz_target: FuzzTarget) -> BaseSchema:
    schema = schemathesis.openapi.from_url(
        fuzz_target.base_url + "/openapi.json", config=SchemathesisConfig.from_str(CONFIG)
    )
    # No example database on disk: every run generates afresh. The caller's identity is the
    # run's bearer token: no generated X-API-Key (the service tries a key first, so a random
    # one would turn most cases into a 401 and leave the routes behind it unexplored).
    schema.config.generation.update(
        max_examples=MAX_EXAMPLES, database="none", with_security_parameters=False
    )
    return schema


schema = schemathesis.pytest.from_fixture("live_schema")


@pytest.fixture(autouse=True)
def _pytest9_node_id(request: pytest.FixtureRequest) -> None:
    """schemathesis 4.32's lazy loader reads and rewrites `node._nodeid`, which pytest 9.2
    no longer has (it became `_id`); give it the attribute it reads. Only the subtest labels
    in the report use it."""
    request.node._nodeid = request.node.nodeid


def problem_json_errors(ctx: CheckContext, response: Response, case: Case) -> bool | None:
    """Every 4xx/5xx is RFC 9457 problem+json with our `code` and `request_id`."""
    if response.status_code < 400:
        return None
    content_type = (response.headers.get("content-type") or [""])[0]
    assert content_type == PROBLEM_MEDIA_TYPE, (
        f"{response.status_code} answered as {content_type!r}, not {PROBLEM_MEDIA_TYPE}"
    )
    body = json.loads(response.content)
    missing = {"type", "title", "status", "code", "request_id"} - body.keys()
    assert not missing, f"problem body lacks {sorted(missing)}"
    assert body["status"] == response.status_code
    assert body["type"] == f"/problems/{body['code']}"
    return True


def _run(case: Case, target: FuzzTarget, role: str) -> None:
    tally = TALLIES[role]
    tally.cases += 1
    tally.by_operation[case.operation.label] += 1
    headers = target.headers[role]
    response = case.call(headers=headers, timeout=30)
    tally.by_status[response.status_code] += 1
    case.validate_response(
        response,
        headers=headers,
        additional_checks=[problem_json_errors],
        transport_kwargs={"headers": headers, "timeout": 30},
    )


@schema.parametrize()
def test_fuzz_as_user(case: Case, fuzz_target: FuzzTarget) -> None:
    _run(case, fuzz_target, "user")


@schema.parametrize()
def test_fuzz_as_admin(case: Case, fuzz_target: FuzzTarget) -> None:
    _run(case, fuzz_target, "admin")


def test_fuzz_case_count(fuzz_target: FuzzTarget) -> None:
    if not all(t.cases for t in TALLIES.values()):
        pytest.skip("runs after both fuzz runs (run the whole module)")
    total = sum(t.cases for t in TALLIES.values())
    figures: dict[str, Any] = {
        "command": "pytest tests/reliability/test_fuzz.py",
        "max_examples_per_operation": MAX_EXAMPLES,
        "checks": "all built-in (schemathesis defaults) + problem_json_errors",
        "cases": total,
    }
    for role, tally in TALLIES.items():
        figures[role] = {
            "cases": tally.cases,
            "operations": len(tally.by_operation),
            "by_status": dict(sorted((str(k), v) for k, v in tally.by_status.items())),
        }
    figures["server_errors"] = sum(
        n for t in TALLIES.values() for status, n in t.by_status.items() if status >= 500
    )
    record_figures("fuzz", figures)
    assert total >= MIN_CASES
    assert figures["server_errors"] == 0
