"""The production server as the image runs it: Gunicorn managing Uvicorn workers, real
Postgres, real Redis, real sockets."""

from __future__ import annotations

import gc
import os
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import uvicorn_worker

from loadtests.sizing.stack import dockerfile_env, missing_preloads
from tests.support.api import seed_loadtest
from tests.support.databases import REDIS_URL, ROOT, create_database, drop_database
from tests.support.processes import Server, image_command, make_image_venv, start_server

PASSWORD = "load-test-password"
# Each worker writes its request metrics to the shared files at most this late: a scrape served
# by another worker sees a request once this has passed.
METRICS_FLUSH_SECONDS = 0.1


@pytest.fixture(scope="module")
async def seeded_database() -> AsyncIterator[tuple[str, str]]:
    """A migrated database with one seeded user; (url, the seeded admin API key)."""
    name, url = await create_database("server")
    api_key = seed_loadtest(url, 1, password=PASSWORD)
    try:
        yield url, api_key
    finally:
        await drop_database(name)


@pytest.fixture
def server(seeded_database: tuple[str, str], tmp_path: Path) -> Iterator[Server]:
    url, _ = seeded_database
    server = start_server(
        {
            "DATABASE_URL": url,
            "REDIS_URL": REDIS_URL,
            "APP_NAME": f"e2e-{uuid.uuid4().hex[:8]}",  # a fresh rate-limit budget
            "RATE_LIMIT_USER": "40/hour",  # GCRA: 40 at once, then one per 90 s
            "RATE_LIMIT_LOGIN": "100/minute",
            "ACCESS_LOG_FLUSH_SECONDS": "0.1",  # the tests read who served from the log
            "METRICS_FLUSH_SECONDS": str(METRICS_FLUSH_SECONDS),
        },
        tmp_path,
        workers=2,
    )
    yield server
    server.stop()


@pytest.fixture(scope="module")
def image_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The image's environment, made the way the Dockerfile's build stage makes it: the
    service's runtime dependencies from uv.lock, no dev, infra or load-test groups."""
    venv = tmp_path_factory.mktemp("image") / "venv"
    make_image_venv(venv)
    return venv


def test_the_image_environment_serves_with_runtime_dependencies_only(
    image_venv: Path, seeded_database: tuple[str, str], tmp_path: Path
) -> None:
    installed = {
        p.name.split("-")[0].lower() for p in (image_venv / "lib").glob("python3*/site-packages/*")
    }
    assert {"fastapi", "gunicorn", "asyncpg"} <= installed
    assert not {"pulumi", "locust", "pytest", "mypy"} & installed
    url, _ = seeded_database
    env = {"DATABASE_URL": url, "RATE_LIMIT_STORAGE": "memory"}  # no Redis in this case
    server = start_server(env, tmp_path, workers=1, venv_bin=image_venv / "bin")
    try:
        ready = httpx.get(server.base_url + "/health/ready")
    finally:
        assert server.stop() == 0  # SIGTERM: a clean, graceful exit
    assert ready.json() == {"status": "ok", "checks": {"database": "ok"}}


def test_the_image_runs_gunicorn_with_uvicorn_workers_from_settings(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # Importing the config sets PROMETHEUS_MULTIPROC_DIR when it is unset: keep that inside
    # this test, away from the in-process apps of other tests.
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    command = image_command()
    assert command[0] == "gunicorn"
    assert "python:service.gunicorn_conf" in command
    from service import gunicorn_conf

    assert gunicorn_conf.worker_class == "service.http_server.UvicornWorker"
    from service.http_server import UvicornWorker

    assert issubclass(UvicornWorker, uvicorn_worker.UvicornWorker)


def test_workers_freeze_their_start_up_objects_out_of_the_collector(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    from service import gunicorn_conf

    assert gc.get_freeze_count() == 0
    try:
        gunicorn_conf.post_worker_init(None)  # Gunicorn calls it once the worker has the app
        assert gc.get_freeze_count() > 10_000  # this test process's modules, at least
    finally:
        gc.unfreeze()


def test_the_workers_allocate_with_the_images_jemalloc(server: Server) -> None:
    # The Dockerfile preloads jemalloc; start_server applies the same ENV with this machine's
    # copy of Debian's libjemalloc2 (.ci/run installs it).
    assert "LD_PRELOAD" in dockerfile_env((ROOT / "Dockerfile").read_text())
    missing = missing_preloads()
    if missing:
        message = f"{missing} not on this machine: apt-get install -y libjemalloc2"
        if os.environ.get("CI"):
            pytest.fail(message)  # CI installs it: a skip there would hide the test
        pytest.skip(message)
    workers = Path(f"/proc/{server.process.pid}/task/{server.process.pid}/children").read_text()
    for pid in workers.split():
        assert "libjemalloc.so" in Path(f"/proc/{pid}/maps").read_text()


def _pids_serving(server: Server, path: str) -> set[object]:
    time.sleep(0.3)  # the access lines are written in batches
    return {r["pid"] for r in server.log_records() if r.get("path") == path}


def test_the_rate_limit_is_global_across_workers(server: Server) -> None:
    token = httpx.post(
        server.base_url + "/api/v1/auth/token",
        data={"username": "loadtest-0@example.com", "password": PASSWORD},
    ).json()["access_token"]

    def call(_: int) -> int:
        # A new connection each time, so the kernel may hand it to either worker.
        with httpx.Client(
            base_url=server.base_url, headers={"Authorization": f"Bearer {token}"}
        ) as c:
            return c.get("/api/v1/users/me").status_code

    statuses: Counter[int] = Counter()
    with ThreadPoolExecutor(max_workers=8) as pool:
        # Batches until the access log shows both workers served (accept() is not round-robin).
        for _ in range(10):
            statuses.update(pool.map(call, range(20)))
            if sum(statuses.values()) >= 60 and len(_pids_serving(server, "/api/v1/users/me")) == 2:
                break
    total = sum(statuses.values())
    assert len(_pids_serving(server, "/api/v1/users/me")) == 2, "both workers served"
    # One budget, whoever served: per-process budgets would admit up to 80. Never overdrawn.
    # A worker may hold part of it in a lease (docs/reliability.md, "Leases") through a pause
    # between batches; what expires unused stays counted, so a few may be refused early.
    assert 32 <= statuses[200] <= 40
    assert statuses[429] == total - statuses[200]


def _sample(text: str, prefix: str) -> float:
    found = [line for line in text.splitlines() if line.startswith(prefix + " ")]
    return float(found[0].rsplit(" ", 1)[1]) if found else 0.0


def _health_count(server: Server) -> float:
    time.sleep(3 * METRICS_FLUSH_SECONDS)  # the other worker's requests reach the files
    text = httpx.get(server.base_url + "/metrics").text
    return _sample(text, 'app_http_requests_total{method="GET",route="/health/live",status="200"}')


def test_metrics_cover_every_worker(server: Server) -> None:
    before = _health_count(server)
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(lambda _: httpx.get(server.base_url + "/health/live"), range(40)))
    assert _health_count(server) - before == 40.0  # every worker's requests, in one scrape


def test_a_scrape_of_one_worker_sees_the_other_workers_requests(server: Server) -> None:
    unmatched = 'app_http_requests_total{method="GET",route="unmatched",status="404"}'
    ids = [uuid.uuid4().hex for _ in range(30)]
    with httpx.Client(base_url=server.base_url) as one_connection:  # so one worker
        for request_id in ids:
            one_connection.get("/no-such-route", headers={"X-Request-ID": request_id})
    time.sleep(3 * METRICS_FLUSH_SECONDS)
    scrapes = {}
    for _ in range(20):  # new connections until the other worker has served some
        scrape_id = uuid.uuid4().hex
        text = httpx.get(server.base_url + "/metrics", headers={"X-Request-ID": scrape_id}).text
        scrapes[scrape_id] = _sample(text, unmatched)
        time.sleep(0.3)  # the access lines are written in batches
        access = [r for r in server.log_records() if r.get("logger") == "service.access"]
        served = {r["request_id"]: r["pid"] for r in access}
        counted_on = {served[i] for i in ids}
        by_others = [n for i, n in scrapes.items() if served.get(i) not in counted_on]
        if by_others:
            break
    assert len(counted_on) == 1  # one keep-alive connection, one worker
    assert by_others, "no scrape reached the other worker"
    assert by_others == [30.0] * len(by_others)
