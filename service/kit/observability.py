"""Request ids, JSON logs, the access log and Prometheus metrics.

The middleware here is pure ASGI: cheaper per request than BaseHTTPMiddleware, and it sees
every response, including the 500s built by error_handlers.CatchUnhandled.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import time
import uuid
from contextvars import ContextVar
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from pythonjsonlogger.json import JsonFormatter
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

_request_id: ContextVar[str | None] = ContextVar("request_id", default=None)
# A client's id is echoed only when it is short and plain (it lands in logs and headers).
_SAFE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")

access_log = logging.getLogger("service.access")


def current_request_id() -> str | None:
    return _request_id.get()


class _RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = _request_id.get()
        return True


def configure_logging(level: str) -> None:
    """One JSON object per line on stdout, each with the request id when there is one."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(
        JsonFormatter(
            "%(asctime)s %(levelname)s %(name)s %(process)d %(message)s %(request_id)s",
            rename_fields={
                "asctime": "time",
                "levelname": "level",
                "name": "logger",
                "process": "pid",
            },
        )
    )
    handler.addFilter(_RequestIdFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Our middleware writes the access log; uvicorn's own would duplicate it as plain text.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "gunicorn.error"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    logging.getLogger("uvicorn.access").disabled = True


# --- metrics --------------------------------------------------------------------------------
# Under Gunicorn, PROMETHEUS_MULTIPROC_DIR (set by gunicorn_conf) makes every worker write its
# figures to shared files, so one scrape of any worker reports the whole pod.
REQUESTS = Counter(
    "http_requests_total", "HTTP requests", ["method", "route", "status"], namespace="app"
)
LATENCY = Histogram(
    "http_request_duration_seconds",
    "HTTP request latency",
    ["method", "route"],
    namespace="app",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
DB_POOL_IN_USE = Gauge(
    "db_pool_connections_in_use",
    "Database connections checked out",
    namespace="app",
    multiprocess_mode="livesum",
)
DB_POOL_CAPACITY = Gauge(
    "db_pool_capacity",
    "Pool size plus overflow, summed over live workers",
    namespace="app",
    multiprocess_mode="livesum",
)
RATE_LIMIT_STORAGE_ERRORS = Counter(
    "rate_limit_storage_errors_total",
    "Rate-limit checks that could not reach the storage (Redis)",
    ["outcome"],
    namespace="app",
)


def instrument_pool(engine: AsyncEngine, capacity: int) -> None:
    DB_POOL_CAPACITY.set(capacity)
    event.listen(engine.sync_engine, "checkout", lambda *_: DB_POOL_IN_USE.inc())
    event.listen(engine.sync_engine, "checkin", lambda *_: DB_POOL_IN_USE.dec())


# Decided once, like prometheus_client decides between in-memory and file-backed values when it
# is first imported: a later change to the environment must not split the two.
MULTIPROCESS = "PROMETHEUS_MULTIPROC_DIR" in os.environ


async def metrics_endpoint(_request: Request) -> Response:
    if MULTIPROCESS:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        payload = generate_latest(registry)
    else:
        payload = generate_latest()
    return Response(payload, media_type=CONTENT_TYPE_LATEST)


class RequestContext:
    """Request id (from X-Request-ID or new), echoed in the response; access log; metrics."""

    def __init__(self, app: ASGIApp, *, access_log_enabled: bool, metrics_enabled: bool) -> None:
        self.app = app
        self.access_log_enabled = access_log_enabled
        self.metrics_enabled = metrics_enabled

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        sent = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")
        request_id = sent if _SAFE_REQUEST_ID.match(sent) else uuid.uuid4().hex
        token = _request_id.set(request_id)
        status = 500
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", []).append((b"x-request-id", request_id.encode()))
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - started
            # The template as OpenAPI shows it (/items/{item_id}): bounded label values.
            route = getattr(scope.get("route"), "path_format", "unmatched")
            if self.metrics_enabled:
                REQUESTS.labels(scope["method"], route, str(status)).inc()
                LATENCY.labels(scope["method"], route).observe(elapsed)
            if self.access_log_enabled:
                access_log.info("request", extra=_access_fields(scope, status, elapsed))
            _request_id.reset(token)


def _access_fields(scope: Scope, status: int, elapsed: float) -> dict[str, Any]:
    client = scope.get("client")
    return {
        "method": scope["method"],
        "path": scope["path"],
        "status": status,
        "duration_ms": round(elapsed * 1000, 2),
        "client": client[0] if client else None,
    }
