"""The open-loop locustfile against a stub of the service contract (named: a stdlib HTTP server
in a thread here, so each behaviour can be provoked). Locust runs in a subprocess: its gevent
monkey-patching stays out of this process.

What is checked is behaviour, not speed: starts follow the schedule although replies are slow,
a full pool drops starts and counts them, latency counts from the scheduled start, responses are
validated, 429s are counted apart, accounts are partitioned between schedulers, probes run apart.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs

import pytest

from loadtests.sizing.run import LOCUSTFILE
from loadtests.sizing.stack import REPO

PASSWORD, API_KEY = "pw-123456", "bpk_limited_key"


class Stub(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    logins: Counter[str] = Counter()
    delay = 0.0
    next_id = iter(range(1, 1_000_000))
    tokens: dict[str, str] = {}
    in_flight = 0
    most_in_flight = 0
    lock = threading.Lock()

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
        with Stub.lock:
            Stub.in_flight += 1
            Stub.most_in_flight = max(Stub.most_in_flight, Stub.in_flight)
        try:
            time.sleep(self.delay)
            self.answer(method)
        finally:
            with Stub.lock:
                Stub.in_flight -= 1

    def answer(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode()
        path = self.path.split("?")[0]
        email = self.tokens.get(self.headers.get("Authorization", ""))
        page = {"items": [], "total": 0, "limit": 20, "offset": 0}
        if path.startswith("/health/"):
            self.reply(200, {"status": "ok"})
        elif path == "/api/v1/auth/token" and method == "POST":
            form = {k: v[0] for k, v in parse_qs(body).items()}
            self.logins[form["username"]] += 1
            token = f"token-{form['username']}"
            self.tokens[f"Bearer {token}"] = form["username"]
            self.reply(200, {"access_token": token, "token_type": "bearer", "expires_in": 900})
        elif path == "/api/v1/users":  # the API-key client's tier is exhausted
            assert self.headers.get("X-API-Key") == API_KEY
            self.reply(429, {"status": 429}, **{"Retry-After": "1"})
        elif email is None:
            self.reply(401, {"status": 401})
        elif path == "/api/v1/users/me":  # a wrong account for loadtest-1: validation fails
            self.reply(200, {"email": "someone@else" if email.startswith("loadtest-1@") else email})
        elif path == "/api/v1/items" and method == "POST":
            self.reply(201, {"id": str(next(self.next_id)), **json.loads(body)})
        elif path == "/api/v1/items":
            self.reply(200, page)
        elif method == "DELETE":
            self.reply(204)
        else:
            item = path.rsplit("/", 1)[1]
            self.reply(200, {"id": item, "title": "t", **(json.loads(body) if body else {})})

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
    Stub.logins.clear()
    Stub.delay = 0.0
    Stub.most_in_flight = 0
    server = ThreadingHTTPServer(("127.0.0.1", 0), Stub)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


def run_locust(host: str, prefix: Path, seconds: int, **env: str) -> dict[str, dict[str, str]]:
    environ = {
        **os.environ,
        "LOADTEST_PASSWORD": PASSWORD,
        "LOADTEST_USERS": "4",
        "LOADTEST_API_KEY": API_KEY,
        "LOADTEST_ARRIVALS": "constant",
        **env,
    }
    users = environ.get("LOADTEST_SCHEDULERS", "1")
    args = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "--only-summary"]
    if processes := environ.pop("PROCESSES", None):
        args += ["--processes", processes]
    args += ["-u", users, "-r", "100", "-t", f"{seconds}s", "--host", host, "--csv", str(prefix)]
    done = subprocess.run(args, env=environ, capture_output=True, text=True, timeout=60)
    assert done.returncode in (0, 1), done.stderr  # 1: some requests failed (on purpose)
    with Path(f"{prefix}_stats.csv").open() as handle:
        return {f"{row['Type']} {row['Name']}": row for row in csv.DictReader(handle)}


def count(stats: dict[str, dict[str, str]], key: str, column: str = "Request Count") -> int:
    return int(stats.get(key, {}).get(column, "0"))


def test_every_operation_is_validated_and_429s_are_counted_apart(stub: str, tmp_path: Path) -> None:
    # Run times leave room for Locust's start on a machine busy with other test suites.
    stats = run_locust(stub, tmp_path / "mix", 10, LOADTEST_RATE="40", LOADTEST_SCHEDULERS="2")

    for key in ("GET me", "GET list_items", "GET read_item", "POST create_item",
                "PATCH update_item", "DELETE delete_item", "GET 429 list_users_api_key",
                "GET probe_live", "GET probe_ready"):  # fmt: skip
        assert count(stats, key) > 0, key
    assert count(stats, "GET list_users_api_key") == 0  # a 429 never counts under the route
    assert count(stats, "GET list_items", "Failure Count") == 0
    # loadtest-1's /users/me answers with another account: a 200 that is a failure.
    assert 0 < count(stats, "GET me", "Failure Count") < count(stats, "GET me")
    # Two schedulers, four accounts: each account is logged in by one scheduler, once.
    assert Stub.logins == {f"loadtest-{i}@example.com": 1 for i in range(4)}


def test_locust_processes_share_the_accounts_without_overlap(stub: str, tmp_path: Path) -> None:
    stats = run_locust(
        stub, tmp_path / "procs", 10, LOADTEST_RATE="20", LOADTEST_SCHEDULERS="2", PROCESSES="2"
    )

    # One scheduler per process, each with its own accounts (by worker index): one login each.
    assert Stub.logins == {f"loadtest-{i}@example.com": 1 for i in range(4)}
    assert count(stats, "GET list_items") > 0


def test_starts_keep_the_schedule_when_replies_are_slow(stub: str, tmp_path: Path) -> None:
    Stub.delay = 0.25
    # One account: its setup (a login, three items, one at a time) takes a second here.
    stats = run_locust(
        stub, tmp_path / "slow", 7, LOADTEST_RATE="20", LOADTEST_PROBES="0", LOADTEST_USERS="1"
    )

    # A closed loop of one user has one request in flight; 20 starts a second against replies
    # of 0.25 s overlap (about five at a time: more when this machine is slow, never one).
    assert Stub.most_in_flight >= 3
    assert count(stats, "SCHED dropped") == 0
    # Every request took at least the stub's delay, counted from its scheduled start.
    assert float(stats["GET list_items"]["Min Response Time"]) >= 250


def test_a_full_pool_drops_starts_and_counts_them(stub: str, tmp_path: Path) -> None:
    Stub.delay = 0.25
    stats = run_locust(
        stub,
        tmp_path / "full",
        6,
        LOADTEST_RATE="20",
        LOADTEST_SLOTS="1",
        LOADTEST_PROBES="0",
        LOADTEST_USERS="1",
    )

    done = sum(count(stats, k) for k in stats if not k.startswith(("SCHED", " Agg", "POST setup")))
    # One slot serves at most 4 a second of the 20 scheduled: the rest are dropped, counted.
    # (Run times leave room for Locust's start and the setup on a machine that is busy.)
    assert Stub.most_in_flight == 1
    assert count(stats, "SCHED dropped") > 2 * done
    assert count(stats, "SCHED dropped", "Failure Count") == count(stats, "SCHED dropped")


def test_an_item_two_requests_use_stays_out_of_deletes_until_both_are_done() -> None:
    """Two reads of one item in flight: when the first finishes, a delete must still not take it
    (a sizing run once counted the second read's 404 as a failure)."""
    code = """
from loadtests.locustfile import Account
account = Account("a@example.com")
account.items = ["1", "2"]
with account.using("1"):
    with account.using("1"):
        pass
    assert account.free_items() == ["2"], account.free_items()
assert account.free_items() == ["1", "2"], account.free_items()
print("ok")
"""
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert done.stdout.strip() == "ok", done.stdout + done.stderr
