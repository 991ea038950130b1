"""Request ids, JSON logs, the access log and Prometheus metrics.

service/kit/edge.py's Edge sets the request id and writes the access log and the metrics for
every HTTP request, with what is defined here.
"""

from __future__ import annotations

import asyncio
import atexit
import json
import logging
import os
import re
import select
import sys
import time
import weakref
from bisect import bisect_left
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

REQUEST_ID: ContextVar[str | None] = ContextVar("request_id", default=None)
# A client's id is echoed only when it is short and plain (it lands in logs and headers).
SAFE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def current_request_id() -> str | None:
    return REQUEST_ID.get()


class _RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = REQUEST_ID.get()
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
    for name in ("uvicorn", "uvicorn.error", "gunicorn.error"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    # The edge writes the access log; Uvicorn's own would duplicate it as plain text. Uvicorn
    # formats its line's arguments (the client address, the quoted path) before the logger
    # can drop it, whenever `uvicorn.access` has a handler anywhere up its chain (it checks
    # hasHandlers() per connection): no handler and no propagation spares every request that.
    uvicorn_access = logging.getLogger("uvicorn.access")
    uvicorn_access.handlers[:] = []
    uvicorn_access.propagate = False
    uvicorn_access.disabled = True


# --- metrics --------------------------------------------------------------------------------
# Under Gunicorn, PROMETHEUS_MULTIPROC_DIR (set by gunicorn_conf) makes every worker write its
# figures to shared files, so one scrape of any worker reports the whole pod.
REQUESTS = Counter(
    "http_requests_total", "HTTP requests", ["method", "route", "status"], namespace="app"
)
# Upper bounds, in order; prometheus_client adds +Inf. RequestMetrics buckets with these too.
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
LATENCY = Histogram(
    "http_request_duration_seconds",
    "HTTP request latency",
    ["method", "route"],
    namespace="app",
    buckets=_LATENCY_BUCKETS,
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
    # This worker's unwritten requests first: a scrape sees every request answered before it.
    flush_request_metrics()
    if MULTIPROCESS:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        payload = generate_latest(registry)
    else:
        payload = generate_latest()
    return Response(payload, media_type=CONTENT_TYPE_LATEST)


class _WrittenLater:
    """What is kept in the process and written at most `flush_seconds` after the first
    unwritten item, by a timer on the running event loop (one loop per worker: no lock), or at
    once where no loop runs; flush() writes it now. Subclasses write in _write()."""

    def __init__(self, flush_seconds: float) -> None:
        self.flush_seconds = flush_seconds
        self._timer: asyncio.TimerHandle | None = None
        self._timer_loop: asyncio.AbstractEventLoop | None = None

    def _schedule_flush(self) -> None:
        # A timer pending on a running loop writes this item too, so look no further: on Python
        # 3.11 every asyncio.get_running_loop() costs a getpid(2) system call (its fork check),
        # and this runs once per request (benchmarks/syscalls.py).
        pending = self._timer_loop
        if self._timer is not None and pending is not None and pending.is_running():
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no event loop (a thread, a script): write now
            self.flush()
            return
        # Another loop's timer (an earlier asyncio.run) may never fire: one on this loop.
        if self._timer is None or self._timer_loop is not loop:
            self._timer_loop = loop
            self._timer = loop.call_later(self.flush_seconds, self.flush)

    def flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._write()

    def _write(self) -> None:
        raise NotImplementedError


class AccessLog(_WrittenLater):
    """The JSON access log: one line per request, written to stdout in batches.

    A logging handler formats each record through several layers and flushes after each one,
    one write(2) per request; that was the largest cost of the middleware (docs/benchmarks.md).
    Here a line is one json.dumps into a buffer, and the buffer is written at most
    `flush_seconds` after its first line, as soon as it holds `max_bytes`, when the app shuts
    down (the Edge sees the lifespan) and at interpreter exit. A line has the fields, in
    the same order, that configure_logging's JSON formatter gives every other record.
    """

    # Workers share the container's stdout pipe: a write of at most PIPE_BUF bytes reaches it
    # whole, so whole lines are written in chunks no longer than that and never interleave
    # with another worker's.
    CHUNK_BYTES = select.PIPE_BUF

    def __init__(self, *, flush_seconds: float, max_bytes: int = 65_536) -> None:
        super().__init__(flush_seconds)
        self.max_bytes = max_bytes
        self._lines: list[bytes] = []
        self._size = 0
        self._second = -1
        self._second_text = ""
        _ACCESS_LOGS.add(self)

    def write(self, fields: dict[str, Any]) -> None:
        now = time.time()
        second = int(now)
        if second != self._second:  # the date and time, formatted once a second
            self._second = second
            self._second_text = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(second))
        line = {
            "time": f"{self._second_text},{int((now - second) * 1000):03d}",
            "level": "INFO",
            "logger": "service.access",
            "pid": os.getpid(),
            "message": "request",
            "request_id": REQUEST_ID.get(),
            **fields,
        }
        data = (json.dumps(line) + "\n").encode()
        self._lines.append(data)
        self._size += len(data)
        if self._size >= self.max_bytes:
            self.flush()
        else:
            self._schedule_flush()

    def _write(self) -> None:
        lines, self._lines, self._size = self._lines, [], 0
        chunk: list[bytes] = []
        size = 0
        for line in lines:
            if chunk and size + len(line) > self.CHUNK_BYTES:
                _write_stdout(b"".join(chunk))
                chunk, size = [], 0
            chunk.append(line)
            size += len(line)
        if chunk:
            _write_stdout(b"".join(chunk))


def _write_stdout(data: bytes) -> None:
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):  # stdout replaced (a test's capture)
        sys.stdout.write(data.decode())
        return
    view = memoryview(data)
    try:
        while view:
            view = view[os.write(fd, view) :]
    except OSError:
        pass  # stdout gone (closed pipe): the lines are lost, as a logging handler loses them


_ACCESS_LOGS: weakref.WeakSet[AccessLog] = weakref.WeakSet()


def flush_access_logs() -> None:
    """Write every buffered access line now (interpreter exit)."""
    for access in list(_ACCESS_LOGS):
        access.flush()


atexit.register(flush_access_logs)


# The kubelet's probes: a line per pod every few seconds says nothing the probe's own result
# does not, and on the cheapest route the line would be a large share of the work.
UNLOGGED_PATHS = frozenset({"/health/live", "/health/ready"})


# Each metric's children by label values: labels() takes a lock and builds its key on every
# call. The values are bounded (route templates), and so is this cache, for unknown methods.
_CHILDREN_CACHED = 1024
_request_counters: dict[tuple[str, str, int], Any] = {}
_latency_histograms: dict[tuple[str, str], Any] = {}


def _request_counter(method: str, route: str, status: int) -> Any:
    counter = _request_counters.get((method, route, status))
    if counter is None:
        counter = REQUESTS.labels(method, route, str(status))
        if len(_request_counters) < _CHILDREN_CACHED:
            _request_counters[method, route, status] = counter
    return counter


def _latency_histogram(method: str, route: str) -> Any:
    histogram = _latency_histograms.get((method, route))
    if histogram is None:
        histogram = LATENCY.labels(method, route)
        if len(_latency_histograms) < _CHILDREN_CACHED:
            _latency_histograms[method, route] = histogram
    return histogram


def _add_to_histogram(histogram: Any, buckets: list[float]) -> None:
    """Adds a batch (per-bucket counts, then the sum of the values) to a Histogram child.

    prometheus_client has no public call that adds more than one observation. This uses its
    private attributes, as Histogram.observe does: `_buckets[i]`, the non-cumulative count of
    bucket i, and `_sum`; tests/service/test_request_metrics.py fails if they change.
    """
    for i, count in enumerate(buckets[:-1]):
        if count:
            histogram._buckets[i].inc(count)
    histogram._sum.inc(buckets[-1])


class RequestMetrics(_WrittenLater):
    """app_http_requests_total and app_http_request_duration_seconds, counted in the worker and
    written to prometheus_client's children in batches.

    Hand-written because under Gunicorn (PROMETHEUS_MULTIPROC_DIR) each child value is backed
    by a shared file: every inc() and observe() takes a lock, checks the pid and writes the
    file, three times per request (the counter, the histogram's sum and one bucket), which was
    most of what the metrics cost per request (docs/benchmarks.md). Here a request adds to
    plain dicts: per (method, route, status) a count; per (method, route) the per-bucket counts
    and the sum of the durations, bucketed as Histogram.observe does (a value lands in the
    first bucket whose upper bound is >= it). The totals are written at most `flush_seconds`
    after the first unwritten request (a timer on the event loop; one loop per worker, so no
    lock), and at once when /metrics is scraped (metrics_endpoint writes the scraping worker's
    own before it collects), when the app shuts down (the Edge sees the lifespan) and at
    interpreter exit. So a scrape served by another worker sees a request at most
    `flush_seconds` late. Memory is bounded like the children caches: a label set beyond
    _CHILDREN_CACHED unwritten ones is written at once.
    """

    def __init__(self, *, flush_seconds: float) -> None:
        super().__init__(flush_seconds)
        self._counts: dict[tuple[str, str, int], int] = {}
        # Per (method, route): the unwritten count of each bucket, then the sum of the values.
        self._latencies: dict[tuple[str, str], list[float]] = {}
        _REQUEST_METRICS.add(self)

    def count(self, method: str, route: str, status: int, elapsed: float) -> None:
        key = (method, route, status)
        counts = self._counts
        count = counts.get(key)
        if count is not None:
            counts[key] = count + 1
        elif len(counts) < _CHILDREN_CACHED:
            counts[key] = 1
        else:  # too many unwritten label sets (unknown methods): this one goes straight out
            _request_counter(method, route, status).inc()
        latency = self._latencies.get((method, route))
        if latency is None:
            if len(self._latencies) >= _CHILDREN_CACHED:
                _latency_histogram(method, route).observe(elapsed)
                self._schedule_flush()
                return
            latency = self._latencies[method, route] = [0.0] * (len(_LATENCY_BUCKETS) + 2)
        # bisect_left: the first bound >= elapsed, as observe's `amount <= bound`; past the
        # last finite bound, the index of +Inf's bucket.
        latency[bisect_left(_LATENCY_BUCKETS, elapsed)] += 1
        latency[-1] += elapsed
        self._schedule_flush()

    def _write(self) -> None:
        counts, self._counts = self._counts, {}
        latencies, self._latencies = self._latencies, {}
        for (method, route, status), count in counts.items():
            _request_counter(method, route, status).inc(count)
        for (method, route), buckets in latencies.items():
            _add_to_histogram(_latency_histogram(method, route), buckets)


_REQUEST_METRICS: weakref.WeakSet[RequestMetrics] = weakref.WeakSet()


def flush_request_metrics() -> None:
    """Write every unwritten request count now (a scrape, interpreter exit)."""
    for metrics in list(_REQUEST_METRICS):
        metrics.flush()


atexit.register(flush_request_metrics)
