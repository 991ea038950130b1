"""The JSON access log: one line per request, written in batches of whole lines."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import select
from typing import Any

import pytest

from service.kit import observability
from service.kit.edge import Edge
from service.kit.observability import AccessLog, configure_logging

FIELDS = {"method": "GET", "path": "/p", "status": 200, "duration_ms": 1.5, "client": "10.0.0.1"}


@pytest.fixture
def writes(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """What the access log hands to stdout, one item per write."""
    calls: list[bytes] = []
    monkeypatch.setattr(observability, "_write_stdout", calls.append)
    return calls


async def test_lines_are_buffered_then_written_within_the_flush_interval(
    writes: list[bytes],
) -> None:
    log = AccessLog(flush_seconds=0.05)
    for _ in range(10):
        log.write(FIELDS)
    assert writes == []  # no write per request
    await asyncio.sleep(0.2)
    lines = b"".join(writes).splitlines()
    assert len(lines) == 10
    assert len(writes) == 1  # ten short lines fit one pipe-sized write


async def test_a_pending_timer_spares_the_running_loop_lookup(
    writes: list[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    # On Python 3.11 each asyncio.get_running_loop() is a getpid(2) system call: once per
    # batch, not once per request.
    lookups = []
    real = asyncio.get_running_loop

    def counted() -> asyncio.AbstractEventLoop:
        lookups.append(1)
        return real()

    monkeypatch.setattr(observability.asyncio, "get_running_loop", counted)
    log = AccessLog(flush_seconds=0.05)
    for _ in range(100):
        log.write(FIELDS)
    assert len(lookups) == 1
    await asyncio.sleep(0.2)
    assert len(b"".join(writes).splitlines()) == 100
    log.write(FIELDS)  # the timer has fired: the next line schedules a new one
    assert len(lookups) == 2
    await asyncio.sleep(0.2)
    assert len(b"".join(writes).splitlines()) == 101


def test_a_full_buffer_is_written_at_once(writes: list[bytes]) -> None:
    log = AccessLog(flush_seconds=60, max_bytes=1000)
    log.write(FIELDS)  # outside an event loop: written now
    assert len(b"".join(writes).splitlines()) == 1


async def test_writes_are_whole_lines_no_longer_than_a_pipe_takes_whole(
    writes: list[bytes],
) -> None:
    log = AccessLog(flush_seconds=60)
    for n in range(300):
        log.write(FIELDS | {"path": f"/{n}" + "x" * (n % 40)})
    log.flush()
    assert len(writes) > 1
    for chunk in writes:
        assert len(chunk) <= select.PIPE_BUF
        assert chunk.endswith(b"\n")
    paths = [json.loads(line)["path"] for line in b"".join(writes).splitlines()]
    assert paths == [f"/{n}" + "x" * (n % 40) for n in range(300)]


def test_flush_access_logs_writes_every_buffered_line(writes: list[bytes]) -> None:
    """What atexit calls."""

    async def serve() -> AccessLog:
        log = AccessLog(flush_seconds=60)
        log.write(FIELDS)
        return log

    log = asyncio.run(serve())  # its timer died with its loop: only the exit flush is left
    assert writes == []
    observability.flush_access_logs()
    assert len(b"".join(writes).splitlines()) == 1
    del log


def test_a_line_has_the_fields_of_every_other_json_record(
    writes: list[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    stream = io.StringIO()
    monkeypatch.setattr("sys.stdout", stream)
    configure_logging("INFO")
    token = observability.REQUEST_ID.set("req-1")
    try:
        logging.getLogger("service.access").info("request", extra=FIELDS)
        AccessLog(flush_seconds=60, max_bytes=1).write(FIELDS)
    finally:
        observability.REQUEST_ID.reset(token)
        logging.getLogger().handlers[:] = []
    by_logging = json.loads(stream.getvalue())
    ours = json.loads(writes[0])
    assert list(ours) == list(by_logging)
    assert {k: v for k, v in ours.items() if k != "time"} == {
        k: v for k, v in by_logging.items() if k != "time"
    }
    assert ours["time"][:16] == by_logging["time"][:16]  # same format, same minute
    assert len(ours["time"]) == len(by_logging["time"])


async def test_one_line_per_request_except_the_kubelet_probes(writes: list[bytes]) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async def receive() -> dict[str, Any]:
        return {"type": "http.request"}

    async def ignore(_message: Any) -> None:
        return None

    context = Edge(app, access_log_enabled=True, metrics_enabled=False)
    for path in ("/api/v1/users/me", "/health/live", "/health/ready", "/api/v1/items"):
        scope: dict[str, Any] = {"type": "http", "method": "GET", "path": path, "headers": []}
        await context(scope, receive, ignore)
    context.access_log.flush()
    logged = [json.loads(line)["path"] for line in b"".join(writes).splitlines()]
    assert logged == ["/api/v1/users/me", "/api/v1/items"]


async def test_uvicorn_writes_no_access_line_of_its_own_under_our_logging(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Uvicorn's protocol decides per connection whether to log (and first format) an access
    # line of its own for every request; under the root handler it used to, only for the
    # disabled logger to drop it.
    from uvicorn.config import Config
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    from uvicorn.server import ServerState

    monkeypatch.setattr("sys.stdout", io.StringIO())
    configure_logging("INFO")
    try:
        config = Config(app=lambda *_: None, log_config=None)
        config.load()
        protocol = HttpToolsProtocol(
            config=config,
            server_state=ServerState(),
            app_state={},
            _loop=asyncio.get_running_loop(),
        )
        assert protocol.access_log is False
        assert logging.getLogger().handlers  # the service's own records still go out
    finally:
        logging.getLogger().handlers[:] = []
