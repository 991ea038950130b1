"""Kubernetes probes: liveness says the process answers; readiness says it can serve."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request
from sqlalchemy import text

from service.kit.problems import ServiceUnavailable

router = APIRouter(tags=["health"])


@router.get("/health/live")
async def live() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/health/ready", responses={503: {"description": "Not ready"}})
async def ready(request: Request) -> dict[str, Any]:
    """Database reachable; Redis reported, and required only when rate limiting fails closed."""
    state = request.app.state
    checks = {"database": "ok" if await _database_ok(request) else "unavailable"}
    if state.limiter.uses_redis:
        checks["redis"] = "ok" if await state.limiter.storage_ok() else "unavailable"
    failing = [name for name, status in checks.items() if status != "ok"]
    if "database" in failing or ("redis" in failing and not state.limiter.fail_open):
        raise ServiceUnavailable(
            ", ".join(f"{n}: unavailable" for n in failing), code="health.not_ready"
        )
    return {"status": "ok", "checks": checks}


async def _database_ok(request: Request) -> bool:
    settings = request.app.state.settings
    try:
        async with asyncio.timeout(settings.db_connect_timeout + settings.db_pool_timeout):
            async with request.app.state.engine.connect() as connection:
                await connection.execute(text("SELECT 1"))
    except Exception:  # any failure means "not ready"; the reason is not the probe's business
        return False
    return True
