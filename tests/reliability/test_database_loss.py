"""Case 3 — database lost mid-load: the service reaches PostgreSQL through a TCP proxy that the
test cuts ("refuse": the server is gone; "blackhole": the network is partitioned, nothing
answers) and restores. Requests get 503 problem+json within the configured timeouts, nothing
hangs, readiness turns 503, and the service recovers by itself within 5 s of the database's
return, without a restart."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy.engine import make_url

from tests.reliability.conftest import (
    GENEROUS_LIMITS,
    Servers,
    login,
    record_figures,
    scaled,
    seed_users,
    user_email,
)
from tests.reliability.load import Load, not_problem_json, server_errors, summarize, wait_until
from tests.reliability.proxy import CutMode, TcpProxy
from tests.service.conftest import assert_problem

USERS = 4
CONCURRENCY = 8
OUTAGE = scaled(6, 30)
CONNECT_TIMEOUT, POOL_TIMEOUT, COMMAND_TIMEOUT = 1.0, 1.0, 2.0
# One request may wait for a pooled connection, open one, and run a statement plus the
# rollback; beyond that sum (and scheduling slack on a busy 2-core machine) it "hangs".
REQUEST_BOUND = POOL_TIMEOUT + CONNECT_TIMEOUT + 2 * COMMAND_TIMEOUT + 3.0
RECOVERY_PROMISE = 5.0

pytestmark = pytest.mark.timeout(int(scaled(90, 240)))


@pytest.fixture
def proxy(database_url: str) -> Iterator[TcpProxy]:
    url = make_url(database_url)
    running = TcpProxy(url.host or "127.0.0.1", url.port or 5432).start()
    try:
        yield running
    finally:
        running.stop()


@pytest.mark.parametrize("mode", ["refuse", "blackhole"])
async def test_database_outage_answers_503_and_recovers_without_restart(
    mode: CutMode, database_url: str, proxy: TcpProxy, servers: Servers
) -> None:
    seed_users(database_url, USERS)
    proxied = make_url(database_url).set(host="127.0.0.1", port=proxy.port)
    server = servers.start(
        {
            "DATABASE_URL": proxied.render_as_string(hide_password=False),
            "DB_CONNECT_TIMEOUT": str(CONNECT_TIMEOUT),
            "DB_POOL_TIMEOUT": str(POOL_TIMEOUT),
            "DB_COMMAND_TIMEOUT": str(COMMAND_TIMEOUT),
            # No grace: this test watches readiness turn as soon as the outage is seen (a pod
            # tolerates a shorter outage by default: service/health.py).
            "READY_FAILURE_GRACE": "0",
            **GENEROUS_LIMITS,
            "RATE_LIMIT_STORAGE": "memory",  # no Redis in this case: per-process limits
        }
    )
    pid = server.process.pid
    async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as client:
        auth = [await login(client, user_email(i)) for i in range(USERS)]
        load = Load(client, phase="before")
        stop = asyncio.Event()

        async def step(load: Load, loop: int) -> None:
            headers = auth[loop % USERS]
            if loop % 2:
                await load.request("GET", "/api/v1/items", params={"limit": 5}, headers=headers)
            else:
                await load.request(
                    "POST", "/api/v1/items", json={"title": "during outage"}, headers=headers
                )

        async def ready_is(status: int) -> bool:
            return (await client.get("/health/ready")).status_code == status

        running = asyncio.create_task(load.run(step, concurrency=CONCURRENCY, stop=stop))
        await asyncio.sleep(3)

        load.phase = "outage"
        proxy.cut(mode)
        cut_at = time.monotonic()
        not_ready_after = await wait_until(lambda: ready_is(503), timeout=REQUEST_BOUND)
        probe_started = time.monotonic()
        not_ready = await client.get("/health/ready")
        ready_probe_s = time.monotonic() - probe_started
        await asyncio.sleep(max(0.0, cut_at + OUTAGE - time.monotonic()))

        load.phase = "recovery"
        proxy.restore()
        restored_at = time.monotonic()
        ready_after = await wait_until(lambda: ready_is(200), timeout=RECOVERY_PROMISE + 10)
        # Served again: the first request started after the return that got a 2xx.
        await asyncio.sleep(max(0.0, restored_at + RECOVERY_PROMISE - time.monotonic()))
        load.phase = "after"
        await asyncio.sleep(3)
        stop.set()
        await running

    # Wholly inside the outage: started after the cut, answered before the return.
    outage = [
        s
        for s in load.in_phase("outage")
        if s.started >= cut_at + 0.05 and s.started + s.elapsed < restored_at
    ]
    recovery = load.in_phase("recovery", "after")
    first_ok = min(
        (s.started + s.elapsed - restored_at for s in recovery if 200 <= s.status_code < 300),
        default=None,
    )
    last_error = max(
        (s.started + s.elapsed - restored_at for s in server_errors(recovery)), default=None
    )
    figures: dict[str, Any] = {
        "command": f"pytest tests/reliability/test_database_loss.py -k {mode}",
        "mode": mode,
        "concurrency": CONCURRENCY,
        "timeouts_s": {
            "DB_CONNECT_TIMEOUT": CONNECT_TIMEOUT,
            "DB_POOL_TIMEOUT": POOL_TIMEOUT,
            "DB_COMMAND_TIMEOUT": COMMAND_TIMEOUT,
        },
        "outage_s": round(restored_at - cut_at, 1),
        "phases": {
            p: summarize(load.in_phase(p)) for p in ("before", "outage", "recovery", "after")
        },
        "outage_codes": sorted({s.code for s in outage if s.code}),
        "not_ready_after_cut_s": None if not_ready_after is None else round(not_ready_after, 2),
        "ready_probe_during_outage_s": round(ready_probe_s, 2),
        "ready_again_after_restore_s": None if ready_after is None else round(ready_after, 2),
        "first_2xx_after_restore_s": None if first_ok is None else round(first_ok, 2),
        "last_error_after_restore_s": None if last_error is None else round(last_error, 2),
        "server_pid_unchanged": server.process.poll() is None and server.process.pid == pid,
    }
    record_figures(f"database-loss-{mode}", figures)

    assert [s for s in load.samples if not s.is_http] == [], "requests hung or were dropped"
    assert max(s.elapsed for s in load.samples) <= REQUEST_BOUND, figures["phases"]
    assert not_problem_json(load.samples) == []
    # Before the cut all is well; during it, only 503 database.unavailable.
    assert server_errors([s for s in load.samples if s.started + s.elapsed < cut_at]) == []
    assert {s.status for s in outage} == {"503"}, figures["phases"]["outage"]
    assert {s.code for s in outage} == {"database.unavailable"}
    assert not_ready_after is not None, "readiness never turned 503"
    assert_problem(not_ready, 503, "health.not_ready")
    # Back on its own, same process, within the promise; then nothing fails.
    assert ready_after is not None
    assert ready_after <= RECOVERY_PROMISE
    assert last_error is None or last_error <= RECOVERY_PROMISE, figures
    assert server_errors(load.in_phase("after")) == []
    assert figures["server_pid_unchanged"]
