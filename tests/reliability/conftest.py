"""The reliability suite: the production server (the image's CMD, 2 workers) on real
PostgreSQL and Redis, driven by bounded load and cut off from its dependencies on purpose.

Every case is bounded in time. `RELIABILITY_LONG=1` lengthens durations and case counts; the
default run keeps the numbers the issue states. Each case writes its measured figures to
`build/reliability/<case>.json` (docs/reliability.md is filled from them).
"""

from __future__ import annotations

import json
import os
import platform
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.support.api import PASSWORD as PASSWORD
from tests.support.api import login as login
from tests.support.api import seed_loadtest
from tests.support.databases import ROOT, create_database, drop_database
from tests.support.processes import Server, start_server

LONG = os.environ.get("RELIABILITY_LONG") == "1"
FIGURES_DIR = ROOT / "build" / "reliability"

# Argon2 at its cheapest: the parameters are settings, the code path is the same.
FAST_HASHING = {"ARGON2_TIME_COST": "1", "ARGON2_MEMORY_COST": "1024"}
# Limits no test load reaches, for cases about something else than rate limiting.
GENEROUS_LIMITS = {
    "RATE_LIMIT_LOGIN": "100000/minute",
    "RATE_LIMIT_LOGIN_IP": "100000/minute",
    "RATE_LIMIT_LOGIN_USERNAME": "100000/minute",
    "RATE_LIMIT_CLIENT": "100000/minute",
    "RATE_LIMIT_USER": "100000/minute",
    "RATE_LIMIT_API_KEY_DEFAULT": "100000/minute",
}


def scaled(short: float, long: float) -> float:
    """A duration or count: `short` in the default (CI) run, `long` with RELIABILITY_LONG=1."""
    return long if LONG else short


def record_figures(case: str, figures: dict[str, Any]) -> Path:
    """Write a case's measured figures to build/reliability/<case>.json and print them."""
    FIGURES_DIR.mkdir(parents=True, exist_ok=True)
    document = {
        "case": case,
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "long": LONG,
        **figures,
    }
    path = FIGURES_DIR / f"{case}.json"
    path.write_text(json.dumps(document, indent=2, sort_keys=False) + "\n")
    print(f"\n[{case}] {json.dumps(figures, sort_keys=False)}")
    return path


seed_users = seed_loadtest


def user_email(index: int) -> str:
    return f"loadtest-{index}@example.com"


ADMIN_EMAIL = "loadtest-admin@example.com"


class Databases:
    """Fresh migrated databases (the real `python -m service migrate`), dropped at the end."""

    def __init__(self) -> None:
        self.names: list[str] = []

    async def create(self) -> str:
        name, url = await create_database("reliability")
        self.names.append(name)
        return url

    async def drop_all(self) -> None:
        while self.names:
            await drop_database(self.names.pop())


class Servers:
    """Production servers (tests.support.processes.start_server), all stopped at the end."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.started: list[Server] = []

    def start(self, env: dict[str, str], *, workers: int = 2) -> Server:
        base = {
            # The rate-limit key prefix: no two servers share counters in the shared Redis.
            "APP_NAME": f"rel-{uuid.uuid4().hex[:8]}",
            **FAST_HASHING,
        }
        server = start_server(base | env, self.log_dir, workers=workers)
        self.started.append(server)
        return server

    def stop_all(self) -> None:
        while self.started:
            self.started.pop().stop()


@pytest.fixture(scope="session")
async def databases() -> AsyncIterator[Databases]:
    registry = Databases()
    try:
        yield registry
    finally:
        await registry.drop_all()


@pytest.fixture
async def database_url(databases: Databases) -> str:
    return await databases.create()


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[Servers]:
    registry = Servers(tmp_path)
    try:
        yield registry
    finally:
        registry.stop_all()


@pytest.fixture(scope="module")
def module_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    """Servers shared by a module's tests (stopped after its last test)."""
    registry = Servers(tmp_path_factory.mktemp("servers"))
    try:
        yield registry
    finally:
        registry.stop_all()


def port_of(server: Server) -> int:
    return int(server.base_url.rsplit(":", 1)[1])
