"""The floor: the least a FastAPI service can do for `GET /api/v1/users/me`.

FastAPI + an asyncpg pool + PyJWT (HS256, the same claims checked as the service's issuer), one
SELECT of the user row by id from the same `users` table. No ORM, no limiter, no middleware, no
logging, no metrics. The full stack is judged against it; it is served exactly like the service
(the Dockerfile's Gunicorn command and configuration, with this app in place of the service's):

    gunicorn --config python:service.gunicorn_conf benchmarks.floor_app:app

`/health/live/with-headers` is not part of the floor: the same answer with the response headers
the service adds to every response (security headers, a request id), pre-encoded as the
service's edge adds them. `make benchmark` measures it for context: what those headers alone
cost a server that does nothing else.

It reads the service's own settings (JWT_SECRET, JWT_ISSUER, JWT_AUDIENCE, DATABASE_URL,
DB_POOL_SIZE + DB_MAX_OVERFLOW), so one environment configures both.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import jwt
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse

from service.auth.tokens import REQUIRED_CLAIMS
from service.kit.security_headers import response_headers
from service.settings import load_settings

settings = load_settings()
SECRET = settings.jwt_secret.get_secret_value()
USER_QUERY = (
    "SELECT id, email, full_name, role, is_active, created_at, updated_at FROM users WHERE id = $1"
)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    dsn = settings.database_url.get_secret_value().replace("+asyncpg", "")
    size = settings.db_pool_size + settings.db_max_overflow
    async with asyncpg.create_pool(dsn, min_size=1, max_size=size) as pool:
        app.state.pool = pool
        yield


app = FastAPI(lifespan=lifespan)


@app.get("/health/live")
async def live() -> dict[str, str]:
    return {"status": "ok"}


@app.get("/api/v1/users/me")
async def me(request: Request) -> dict[str, Any]:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    try:
        if scheme.lower() != "bearer":
            raise jwt.InvalidTokenError
        claims = jwt.decode(
            token,
            SECRET,
            algorithms=["HS256"],
            audience=settings.jwt_audience,
            issuer=settings.jwt_issuer,
            leeway=settings.jwt_leeway_seconds,
            options={"require": REQUIRED_CLAIMS},
        )
        user_id = uuid.UUID(claims["sub"])
    except (jwt.InvalidTokenError, ValueError):
        raise HTTPException(401, "invalid token") from None
    row = await request.app.state.pool.fetchrow(USER_QUERY, user_id)
    if row is None or not row["is_active"]:
        raise HTTPException(401, "invalid token")
    return dict(row)


# Last, so the floor's own routes are matched as before. As the service in production sends
# them (HSTS on), plus a request id of the usual length.
SERVICE_HEADERS = [*response_headers(hsts=True), (b"x-request-id", b"0" * 32)]


@app.get("/health/live/with-headers", include_in_schema=False)
async def live_with_headers() -> JSONResponse:
    response = JSONResponse({"status": "ok"})
    response.raw_headers.extend(SERVICE_HEADERS)
    return response
