"""The journeys against a stub of the service contract: 429s apart, API key, warm-up discarded.

Locust runs in a subprocess (its gevent monkey-patching stays out of this process); the stub is a
stdlib HTTP server on 127.0.0.1 in a thread here.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs

import pytest

from loadtests.sizing.run import LOCUSTFILE, step_from_stats

TOKEN, API_KEY, PASSWORD = "token-1", "exempt-key", "pw-123456"


class Stub(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    logins: Counter[str] = Counter()
    next_id = iter(range(1, 1_000_000))

    def log_message(self, *_: object) -> None:
        pass

    def reply(self, status: int, body: object = None, **headers: str) -> None:
        data = b"" if body is None else json.dumps(body).encode()
        self.send_response(status)
        for name, value in {"Content-Length": str(len(data)), **headers}.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def route(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode()
        path = self.path.split("?")[0]
        bearer = self.headers.get("Authorization") == f"Bearer {TOKEN}"
        if path == "/health/ready":  # the stub's limiter rejects every readiness probe
            problem = {"type": "about:blank", "title": "Too Many Requests", "status": 429}
            self.reply(429, problem, **{"Retry-After": "1"})
        elif path in ("/health/live", "/openapi.json"):
            self.reply(200, {"status": "ok"})
        elif path == "/api/v1/auth/token" and method == "POST":
            form = {k: v[0] for k, v in parse_qs(body).items()}
            ok = form.get("password") == PASSWORD
            self.logins[form.get("username", "")] += 1
            self.reply(200 if ok else 401, {"access_token": TOKEN, "token_type": "bearer"})
        elif path == "/api/v1/users" and self.headers.get("X-API-Key") == API_KEY:
            self.reply(200, {"items": [], "total": 0, "limit": 20, "offset": 0})
        elif not bearer:
            self.reply(401, {"title": "Unauthorized", "status": 401})
        elif path == "/api/v1/items" and method == "POST":
            self.reply(201, {"id": next(self.next_id), **json.loads(body)})
        elif path.startswith("/api/v1/items/") and method == "DELETE":
            self.reply(204)
        else:
            self.reply(200, {"id": 1, "email": "loadtest-0@example.com", "items": []})

    def do_GET(self) -> None:
        self.route("GET")

    def do_POST(self) -> None:
        self.route("POST")

    def do_PATCH(self) -> None:
        self.route("PATCH")

    def do_DELETE(self) -> None:
        self.route("DELETE")


@pytest.fixture
def stub() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Stub)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


def run_locust(host: str, prefix: Path, seconds: int, warmup: int) -> dict[str, dict[str, str]]:
    env = {
        **os.environ,
        "LOADTEST_PASSWORD": PASSWORD,
        "LOADTEST_USERS": "3",
        "LOADTEST_API_KEY": API_KEY,
        "LOADTEST_WAIT": "0.01-0.05",
        "LOADTEST_WARMUP": str(warmup),
    }
    args = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "--only-summary"]
    args += ["-u", "13", "-r", "13", "-t", f"{seconds}s", "--host", host, "--csv", str(prefix)]
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode in (0, 1), done.stderr  # 1: some requests failed (the 429s)
    with Path(f"{prefix}_stats.csv").open() as handle:
        return {row["Name"]: row for row in csv.DictReader(handle)}


def test_journeys_cover_the_contract_and_count_429s_apart(stub: str, tmp_path: Path) -> None:
    Stub.logins.clear()

    stats = run_locust(stub, tmp_path / "run", seconds=4, warmup=0)

    names = {name for name, row in stats.items() if int(row["Request Count"])}
    assert {
        "/health/live", "/openapi.json", "429 /health/ready", "/api/v1/auth/token",
        "/api/v1/users/me", "/api/v1/items", "/api/v1/items/[id]", "/api/v1/users", "Aggregated",
    } <= names  # fmt: skip
    assert "/health/ready" not in names  # a 429 is never counted under the route itself
    limited = stats["429 /health/ready"]
    assert int(limited["Failure Count"]) == int(limited["Request Count"]) > 0
    step = step_from_stats(list(stats.values()), workers=1)
    assert step.failures == 0
    assert step.rate_limited == int(limited["Request Count"])
    # Regular users log in once each (over the 3 seeded accounts); the admin uses the API key.
    assert set(Stub.logins) <= {f"loadtest-{i}@example.com" for i in range(3)}
    assert sum(Stub.logins.values()) == int(stats["/api/v1/auth/token"]["Request Count"]) <= 13


def test_warmup_statistics_are_discarded(stub: str, tmp_path: Path) -> None:
    stats = run_locust(stub, tmp_path / "warm", seconds=4, warmup=2)

    # Every login happens in the first moments, inside the warm-up, so none is left counted.
    assert int(stats.get("/api/v1/auth/token", {}).get("Request Count", "0")) == 0
    assert int(stats["/api/v1/items"]["Request Count"]) > 0
