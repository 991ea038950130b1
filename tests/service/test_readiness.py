"""What readiness means (service/health.py): this process can serve; shared blips do not count."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Callable

import pytest
from fastapi import FastAPI
from pydantic import SecretStr

from service.kit.database import create_engine
from tests.service.conftest import assert_problem, client_for

pytestmark = pytest.mark.parametrize("database_url", ["postgres"], indirect=True)


def cut_database(app: FastAPI, port: int) -> None:
    """Point the app at a port nothing listens on: the database is gone for this process."""
    settings = app.state.settings.model_copy(
        update={"database_url": SecretStr(f"postgresql+asyncpg://postgres@127.0.0.1:{port}/x")}
    )
    app.state.engine = create_engine(settings)


@pytest.mark.parametrize("grace", [60, 0])
async def test_a_lost_database_fails_readiness_only_after_the_grace(
    make_app: Callable[..., FastAPI], closed_port: int, grace: int
) -> None:
    app = make_app(ready_failure_grace=grace, db_connect_timeout=1)
    async with client_for(app) as client:
        assert (await client.get("/health/ready")).status_code == 200
        cut_database(app, closed_port)
        response = await client.get("/health/ready")
    if grace:
        # Every pod sees the same outage: staying in the Service keeps the typed errors flowing.
        assert response.status_code == 200
        assert response.json()["checks"] == {"database": "unavailable"}
    else:
        assert_problem(response, 503, "health.not_ready")


async def test_a_saturated_pool_is_busy_not_broken(make_app: Callable[..., FastAPI]) -> None:
    app = make_app(db_pool_size=1, db_max_overflow=0, db_pool_timeout=30)
    async with client_for(app) as client, app.state.engine.connect():
        # The only connection is in use: the check must not queue behind it for the pool timeout.
        response = await asyncio.wait_for(client.get("/health/ready"), timeout=10)
    assert response.status_code == 200
    assert response.json()["checks"] == {"database": "busy"}


@pytest.fixture
async def silent_port() -> AsyncIterator[int]:
    """A port that accepts connections and never answers (a hung database)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    try:
        yield server.getsockname()[1]
    finally:
        server.close()


async def test_the_check_keeps_to_its_own_timeout(
    make_app: Callable[..., FastAPI], silent_port: int
) -> None:
    # Connect timeout far above the check's: the check's own bound must answer first, so the
    # kubelet (whose probe timeout is longer, infra/components/app.py) gets an answer.
    app = make_app(
        database_url=f"postgresql://postgres@127.0.0.1:{silent_port}/x",
        db_connect_timeout=20,
        ready_check_timeout=0.5,
    )
    async with client_for(app) as client:
        started = time.monotonic()
        response = await client.get("/health/ready")
        elapsed = time.monotonic() - started
    assert_problem(response, 503, "health.not_ready")  # never reached: nothing to serve with
    assert elapsed < 10, f"the check took {elapsed:.1f} s, not its own bound"
