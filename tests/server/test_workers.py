"""How Gunicorn's workers share connections and what they leave in the log when they stop:
the production server (the image's command), real sockets, /proc for who holds what."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector

from service import gunicorn_conf
from tests.support.databases import REDIS_URL, create_database, drop_database
from tests.support.processes import Server, start_server


@pytest.fixture(scope="module")
async def database_url() -> AsyncIterator[str]:
    name, url = await create_database("workers")
    try:
        yield url
    finally:
        await drop_database(name)


@pytest.fixture
def server(database_url: str, tmp_path: Path) -> Iterator[Server]:
    # A flush interval longer than any test: only the exit flush can write the access lines.
    env = {"DATABASE_URL": database_url, "REDIS_URL": REDIS_URL, "ACCESS_LOG_FLUSH_SECONDS": "60"}
    server = start_server(env, tmp_path, workers=2)
    yield server
    server.stop()


def _workers(server: Server) -> list[int]:
    pid = server.process.pid
    return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def _port(server: Server) -> int:
    port = urlsplit(server.base_url).port
    assert port is not None
    return port


def _tcp_inodes(port: int, state: str) -> set[str]:
    """Inodes of the IPv4 sockets on local `port` in `state` (0A listening, 01 established)."""
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == state:
            inodes.add(fields[9])
    return inodes


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except FileNotFoundError:
            continue
        if target.startswith("socket:["):
            inodes.add(target.removeprefix("socket:[").removesuffix("]"))
    return inodes


def test_gunicorn_gives_each_worker_its_own_listening_socket() -> None:
    assert gunicorn_conf.reuse_port is True


def test_each_worker_listens_on_its_own_socket(server: Server) -> None:
    listening = _tcp_inodes(_port(server), "0A")
    held = [_socket_inodes(pid) & listening for pid in _workers(server)]
    assert len(listening) == 2
    assert [len(h) for h in held] == [1, 1]
    assert held[0] != held[1]


def test_a_burst_of_keep_alive_connections_reaches_both_workers(server: Server) -> None:
    connections = [socket.create_connection(("127.0.0.1", _port(server))) for _ in range(64)]
    try:
        for c in connections:
            c.sendall(b"GET /health/live HTTP/1.1\r\nHost: t\r\n\r\n")
        for c in connections:
            assert c.recv(4096).startswith(b"HTTP/1.1 200")  # accepted, served, still open
        established = _tcp_inodes(_port(server), "01")
        per_worker = [len(_socket_inodes(pid) & established) for pid in _workers(server)]
    finally:
        for c in connections:
            c.close()
    assert sum(per_worker) == 64
    assert min(per_worker) >= 16, per_worker  # hashed: 32 each on average


def test_access_lines_still_buffered_are_written_at_graceful_shutdown(server: Server) -> None:
    sent = [uuid.uuid4().hex for _ in range(100)]
    with httpx.Client(base_url=server.base_url) as client:
        for request_id in sent:
            # Any logged path (the probes' are not): a 404 touches nothing but the middleware.
            client.get("/no-such-route", headers={"X-Request-ID": request_id})
    assert server.stop() == 0  # SIGTERM, long before the 60 s flush interval
    access = [r for r in server.log_records() if r.get("logger") == "service.access"]
    logged = [r["request_id"] for r in access if r["request_id"] in set(sent)]
    assert sorted(logged) == sorted(sent)  # the readiness probes' lines besides


def test_request_metrics_still_unwritten_are_written_at_graceful_shutdown(
    database_url: str, tmp_path: Path
) -> None:
    # A metrics folder the test names outlives the server (Gunicorn removes only its own), and
    # a flush interval longer than the test: only the shutdown flush can write these requests.
    metrics_dir = tmp_path / "prometheus"
    metrics_dir.mkdir()
    env = {
        "DATABASE_URL": database_url,
        "REDIS_URL": REDIS_URL,
        "METRICS_FLUSH_SECONDS": "60",
        "ACCESS_LOG_FLUSH_SECONDS": "60",
        "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
    }
    server = start_server(env, tmp_path, workers=2)
    sent = [uuid.uuid4().hex for _ in range(100)]
    try:
        for request_id in sent:  # a new connection each: both workers serve some
            httpx.get(server.base_url + "/no-such-route", headers={"X-Request-ID": request_id})
    finally:
        assert server.stop() == 0  # SIGTERM, long before the 60 s flush interval
    access = [r for r in server.log_records() if r.get("request_id") in set(sent)]
    assert len({r["pid"] for r in access}) == 2, "both workers served"
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(metrics_dir))
    labels = {"method": "GET", "route": "unmatched"}
    name = "app_http_request_duration_seconds"
    assert registry.get_sample_value("app_http_requests_total", labels | {"status": "404"}) == 100
    assert registry.get_sample_value(f"{name}_count", labels) == 100
    assert registry.get_sample_value(f"{name}_bucket", labels | {"le": "+Inf"}) == 100
