"""FastAPI's native OpenTelemetry follows FASTAPI_TELEMETRY, even with a provider set up.

Each case runs in a process of its own: OpenTelemetry's global provider can be set once per
process, and the rest of the suite must not run under one.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("opentelemetry.sdk")

# A real SDK provider with an in-memory exporter, set up before the app is built (as
# opentelemetry-instrument does), then one GET /health/live through the whole ASGI stack.
PROGRAM = """
import asyncio, json
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

exporter = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(exporter))
trace.set_tracer_provider(provider)

from service.main import create_app

app = create_app()
statuses = []

async def main():
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
             "method": "GET", "scheme": "http", "path": "/health/live",
             "raw_path": b"/health/live", "query_string": b"", "root_path": "",
             "headers": [(b"host", b"test")], "client": ("127.0.0.1", 5000),
             "server": ("test", 80)}
    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}
    async def send(message):
        if message["type"] == "http.response.start":
            statuses.append(message["status"])
    await app(scope, receive, send)

asyncio.run(main())
print(json.dumps({"statuses": statuses, "spans": [s.name for s in exporter.get_finished_spans()]}))
"""


def request_spans(**env: str) -> dict[str, list[object]]:
    environment = {
        **os.environ,
        "APP_ENV": "development",
        "DATABASE_URL": "sqlite+aiosqlite:///:memory:",
        "RATE_LIMIT_STORAGE": "memory",
        **env,
    }
    result = subprocess.run(
        [sys.executable, "-c", PROGRAM],
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    answer: dict[str, list[object]] = json.loads(result.stdout.strip().splitlines()[-1])
    return answer


def test_no_fastapi_spans_by_default_even_under_an_opentelemetry_provider() -> None:
    assert request_spans() == {"statuses": [200], "spans": []}


def test_fastapi_telemetry_on_traces_requests_through_the_provider() -> None:
    answer = request_spans(FASTAPI_TELEMETRY="true")
    assert answer["statuses"] == [200]
    assert answer["spans"], "FastAPI recorded no span with FASTAPI_TELEMETRY=true"
