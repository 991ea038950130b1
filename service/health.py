"""Kubernetes probes: liveness says the process answers; readiness says *this process* can serve.

Readiness is what takes one pod out of the Service's endpoints, so it fails only for what is
this pod's own trouble. Trouble every pod shares (PostgreSQL restarting, a network blip, a pool
saturated under load) would fail every pod at once, and a short outage would become the ingress's
bare 503 for every request, including those that need no database; the pods stay in instead and
answer with their own typed errors until the dependency is back. Hence:

- The database check is bounded by READY_CHECK_TIMEOUT (the probe's own timeout is longer, so a
  slow-but-passing check is not a failure), and never waits for a pooled connection: a pool with
  every connection checked out is busy, not broken ("busy", ready).
- A failed check makes the pod not ready only when the dependency has been unreachable for
  READY_FAILURE_GRACE seconds with no success in between, or was never reached since the process
  started (a pod that never reached its database has nothing to serve with).
- Redis is reported, and required (with the same rule) only when rate limiting fails closed.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Request
from sqlalchemy import text

from service.kit.problems import ServiceUnavailable

router = APIRouter(tags=["health"])


@router.get("/health/live")
async def live() -> dict[str, str]:
    return {"status": "ok"}


@dataclass
class Dependency:
    """When this process last reached one dependency (monotonic seconds; None: never)."""

    last_ok: float | None = None

    def record(self, ok: bool) -> None:
        if ok:
            self.last_ok = time.monotonic()

    def tolerated(self, grace: float) -> bool:
        """A failure is forgiven while the last success is at most ``grace`` seconds old."""
        return self.last_ok is not None and time.monotonic() - self.last_ok <= grace


@router.get("/health/ready", responses={503: {"description": "Not ready"}})
async def ready(request: Request) -> dict[str, Any]:
    state = request.app.state
    settings = state.settings
    if not hasattr(state, "readiness"):
        state.readiness = {"database": Dependency(), "redis": Dependency()}
    checks = {"database": await _database_status(request)}
    required = {"database"}
    if state.limiter.uses_redis:
        redis_ok = await _bounded(state.limiter.storage_ok(), settings)
        checks["redis"] = "ok" if redis_ok else "unavailable"
        if not state.limiter.fail_open:
            required.add("redis")
    for name, status in checks.items():
        state.readiness[name].record(status != "unavailable")
    failing = [
        name
        for name in sorted(required)
        if checks[name] == "unavailable"
        and not state.readiness[name].tolerated(settings.ready_failure_grace)
    ]
    if failing:
        raise ServiceUnavailable(
            ", ".join(f"{n}: unavailable" for n in failing), code="health.not_ready"
        )
    return {"status": "ok", "checks": checks}


async def _bounded(check: Any, settings: Any) -> bool:
    try:
        async with asyncio.timeout(settings.ready_check_timeout):
            return bool(await check)
    except Exception:  # any failure means "unavailable"; the reason is not the probe's business
        return False


async def _database_status(request: Request) -> str:
    state = request.app.state
    settings = state.settings
    pool = state.engine.pool
    checked_out = getattr(pool, "checkedout", None)
    if (
        checked_out is not None
        and checked_out() >= settings.db_pool_size + settings.db_max_overflow
    ):
        return "busy"  # every connection serving a request: taking one would only queue
    return "ok" if await _bounded(_select_one(request), settings) else "unavailable"


async def _select_one(request: Request) -> bool:
    async with request.app.state.engine.connect() as connection:
        await connection.execute(text("SELECT 1"))
    return True
