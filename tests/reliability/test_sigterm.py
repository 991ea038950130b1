"""Case 4 — SIGTERM under load: logins with a costly Argon2 are in flight when Gunicorn's
master gets SIGTERM (what Kubernetes sends). Every in-flight request completes with its
normal status, the process exits within GRACEFUL_TIMEOUT (plus slack), and afterwards new
connections are refused."""

from __future__ import annotations

import asyncio
import signal
import socket
import time
from typing import Any

import httpx
import pytest

from tests.reliability.conftest import (
    GENEROUS_LIMITS,
    PASSWORD,
    Servers,
    port_of,
    record_figures,
    scaled,
    seed_users,
    user_email,
)
from tests.reliability.load import Load, summarize

# About 0.3-0.5 s per hash on this machine; 2 hashes at a time per worker.
COSTLY_HASHING = {"ARGON2_TIME_COST": "3", "ARGON2_MEMORY_COST": "65536"}
LOGINS = int(scaled(24, 60))
USERS = 6
GRACEFUL_TIMEOUT = 20
EXIT_SLACK = 5.0

pytestmark = pytest.mark.timeout(90)


def _refused(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(2)
        return sock.connect_ex(("127.0.0.1", port)) != 0


async def test_sigterm_lets_in_flight_requests_finish_and_exits_in_time(
    database_url: str, servers: Servers
) -> None:
    seed_users(database_url, USERS, env=COSTLY_HASHING, password=PASSWORD)
    server = servers.start(
        {
            "DATABASE_URL": database_url,
            "GRACEFUL_TIMEOUT": str(GRACEFUL_TIMEOUT),
            **GENEROUS_LIMITS,
            "RATE_LIMIT_STORAGE": "memory",  # no Redis in this case: per-process limits
            **COSTLY_HASHING,
        }
    )
    port = port_of(server)
    limits = httpx.Limits(max_connections=LOGINS, max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=server.base_url, timeout=60, limits=limits) as client:
        load = Load(client, phase="logins")
        # Warm both workers' pools and code paths, so the logins below are all in the server.
        warm = await client.get("/health/ready")
        assert warm.status_code == 200

        async def one_login(index: int) -> None:
            response = await load.request(
                "POST",
                "/api/v1/auth/token",
                data={"username": user_email(index % USERS), "password": PASSWORD},
            )
            if response is not None and response.status_code == 200:
                assert response.json()["access_token"]

        logins = [asyncio.create_task(one_login(i)) for i in range(LOGINS)]
        await asyncio.sleep(1.0)
        done_before = len(load.samples)
        server.process.send_signal(signal.SIGTERM)
        signalled_at = time.monotonic()
        await asyncio.sleep(0.5)
        refused_during_drain = _refused(port)
        await asyncio.gather(*logins)
        all_done_after = time.monotonic() - signalled_at

        while server.process.poll() is None and time.monotonic() - signalled_at < (
            GRACEFUL_TIMEOUT + EXIT_SLACK + 5
        ):
            await asyncio.sleep(0.1)
        exited_after = time.monotonic() - signalled_at
        exit_code = server.process.poll()
        refused_after_exit = _refused(port)

    figures: dict[str, Any] = {
        "command": "pytest tests/reliability/test_sigterm.py",
        "logins": LOGINS,
        "argon2": COSTLY_HASHING,
        "graceful_timeout_s": GRACEFUL_TIMEOUT,
        "completed_before_sigterm": done_before,
        "in_flight_at_sigterm": LOGINS - done_before,
        **summarize(load.samples),
        "completed_after_sigterm": sum(s.started + s.elapsed > signalled_at for s in load.samples),
        "all_in_flight_done_after_s": round(all_done_after, 2),
        "exited_after_s": round(exited_after, 2),
        "exit_code": exit_code,
        "new_connection_refused_0_5s_after_sigterm": refused_during_drain,
        "new_connection_refused_after_exit": refused_after_exit,
    }
    record_figures("sigterm", figures)

    assert LOGINS - done_before >= 4, "too few requests in flight for the case to mean much"
    # Every request completes with its normal answer: no reset, no 5xx, no lost response.
    assert [s.status for s in load.samples] == ["200"] * LOGINS, figures["by_status"]
    assert exit_code == 0
    assert exited_after <= GRACEFUL_TIMEOUT + EXIT_SLACK
    assert refused_after_exit
