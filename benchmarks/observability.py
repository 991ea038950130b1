"""`python -m benchmarks.observability`: what the request-context middleware costs per request.

In one process, pinned like the server (`taskset -c 0 .venv/bin/python -m
benchmarks.observability`), with Prometheus in multiprocess mode as under Gunicorn and stdout
sent to a file (`--sink file`) or to a pipe that another process drains (`--sink pipe`, as a
container runtime reads a container's stdout):

* the access line written the way it was before (a logging call through python-json-logger's
  formatter and a StreamHandler, which flushes every record: one write(2) per request) against
  service.kit.observability.AccessLog (one json.dumps, whole lines written in batches);
* the two metric updates through `labels()`, through cached children (each update writes the
  shared file), and through service.kit.observability.RequestMetrics (counted in the process,
  written in batches; the flush included);
* the whole service.kit.edge.Edge (request id, access log, metrics, security headers) around
  an app that answers at once: access log and metrics on, then off.

CPU µs per request (process time), median of `--rounds` interleaved rounds. A diagnosis next
to benchmarks.run, not a target.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

FIELDS = {"method": "GET", "path": "/api/v1/users/me", "status": 200, "duration_ms": 1.23}


def per_call_us(fn: Callable[[], Any], n: int) -> float:
    started = time.process_time()
    for _ in range(n):
        fn()
    return 1e6 * (time.process_time() - started) / n


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.observability", description=__doc__)
    p.add_argument("--requests", type=int, default=20_000, help="per measurement (%(default)s)")
    p.add_argument("--rounds", type=int, default=5, help="(%(default)s)")
    p.add_argument("--sink", choices=["file", "pipe"], default="file", help="(%(default)s)")
    opts = p.parse_args(argv)
    # As gunicorn_conf does, before prometheus_client is imported.
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="bench-prometheus-")
    from pythonjsonlogger.json import JsonFormatter
    from starlette.types import Receive, Scope, Send

    from service.kit import observability as obs
    from service.kit.edge import Edge

    # Not /dev/null: writing there costs less than a real file or pipe does.
    if opts.sink == "pipe":
        reader = subprocess.Popen(["cat"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
        assert reader.stdin is not None
        sink: Any = open(reader.stdin.fileno(), "w", closefd=False)  # noqa: SIM115
    else:
        sink = tempfile.TemporaryFile("w")  # noqa: SIM115 - stdout for the whole run
    sys.stdout = sink
    old = logging.getLogger("bench.access")
    handler = logging.StreamHandler(sink)
    handler.setFormatter(
        JsonFormatter(
            "%(asctime)s %(levelname)s %(name)s %(process)d %(message)s %(request_id)s",
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
        )
    )
    handler.addFilter(obs._RequestIdFilter())
    old.handlers[:] = [handler]
    old.propagate = False
    old.setLevel(logging.INFO)
    fields = FIELDS | {"client": "127.0.0.1"}

    async def answer(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    async def ignore(_message: Any) -> None:
        return None

    async def nothing() -> Any:
        return {"type": "http.request"}

    scope = {
        "type": "http",
        "method": "GET",
        "path": "/api/v1/users/me",
        "headers": [(b"host", b"t"), (b"authorization", b"Bearer x" * 30)],
        "client": ("127.0.0.1", 5000),
    }
    on = Edge(answer, access_log_enabled=True, metrics_enabled=True)
    off = Edge(answer, access_log_enabled=False, metrics_enabled=False)

    async def measure() -> dict[str, float]:
        new_log = obs.AccessLog(flush_seconds=1.0)
        metrics = obs.RequestMetrics(flush_seconds=1.0)

        def new_line() -> None:
            new_log.write(fields)

        def labelled() -> None:
            obs.REQUESTS.labels("GET", "/api/v1/users/me", "200").inc()
            obs.LATENCY.labels("GET", "/api/v1/users/me").observe(0.001)

        def cached() -> None:
            obs._request_counter("GET", "/api/v1/users/me", 200).inc()
            obs._latency_histogram("GET", "/api/v1/users/me").observe(0.001)

        def through(app: Edge) -> Callable[[], Any]:
            def call() -> None:
                coroutine = app(dict(scope), nothing, ignore)
                with contextlib.suppress(StopIteration):  # it never waits: one step
                    coroutine.send(None)

            return call

        figures = {
            "access line, logging + StreamHandler (before)": per_call_us(
                lambda: old.info("request", extra=fields), opts.requests
            ),
            "access line, AccessLog (after, flush included)": per_call_us(new_line, opts.requests),
            "metrics, labels() each time (before)": per_call_us(labelled, opts.requests),
            "metrics, cached children, written per request (before)": per_call_us(
                cached, opts.requests
            ),
            "metrics, RequestMetrics (after, flush included)": per_call_us(
                lambda: metrics.count("GET", "/api/v1/users/me", 200, 0.001), opts.requests
            ),
            "Edge, log + metrics on": per_call_us(through(on), opts.requests),
            "Edge, log + metrics off": per_call_us(through(off), opts.requests),
        }
        flush_started = time.process_time()
        new_log.flush()
        on.access_log.flush()
        flush_us = 1e6 * (time.process_time() - flush_started) / opts.requests
        figures["access line, AccessLog (after, flush included)"] += flush_us
        flush_started = time.process_time()
        metrics.flush()
        on.metrics.flush()
        flush_us = 1e6 * (time.process_time() - flush_started) / opts.requests
        figures["metrics, RequestMetrics (after, flush included)"] += flush_us
        return figures

    rounds = [asyncio.run(measure()) for _ in range(opts.rounds)]
    sys.stdout = sys.__stdout__
    print(f"| measurement | CPU µs per request (median of {opts.rounds}) | all rounds |")
    print("|---|---:|---|")
    for name in rounds[0]:
        values = [r[name] for r in rounds]
        cells = ", ".join(f"{v:.1f}" for v in values)
        print(f"| {name} | {statistics.median(values):.1f} | {cells} |")


if __name__ == "__main__":
    main()
