"""Request metrics: counted in the process, written to prometheus_client's children in batches,
with the counts, buckets and sums that per-request inc() and observe() would give."""

from __future__ import annotations

import asyncio
import math
import random
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from fastapi import FastAPI
from prometheus_client import REGISTRY, CollectorRegistry, Histogram

from service.kit import observability
from service.kit.edge import Edge
from service.kit.observability import _LATENCY_BUCKETS, LATENCY, RequestMetrics
from tests.service.conftest import client_for

BOUNDS = [*_LATENCY_BUCKETS, math.inf]


def _route() -> str:
    return f"/test/{uuid.uuid4().hex}"  # label values no other test touches


def _written(route: str, status: int = 200) -> dict[str, float | None]:
    """What the app's registry holds for GET `route`: the counter, the histogram's count, sum
    and cumulative buckets by upper bound."""
    counter = {"method": "GET", "route": route, "status": str(status)}
    labels = {"method": "GET", "route": route}
    name = "app_http_request_duration_seconds"
    figures = {
        "requests": REGISTRY.get_sample_value("app_http_requests_total", counter),
        "count": REGISTRY.get_sample_value(f"{name}_count", labels),
        "sum": REGISTRY.get_sample_value(f"{name}_sum", labels),
    }
    for bound in BOUNDS:
        le = {"le": "+Inf" if bound == math.inf else str(bound)}
        figures[le["le"]] = REGISTRY.get_sample_value(f"{name}_bucket", labels | le)
    return figures


def _observed(values: list[float]) -> dict[str, float | None]:
    """The same figures from a plain prometheus_client Histogram fed `values` one by one."""
    registry = CollectorRegistry()
    plain = Histogram("plain", "", registry=registry, buckets=_LATENCY_BUCKETS)
    for value in values:
        plain.observe(value)
    figures = {
        "requests": float(len(values)),
        "count": registry.get_sample_value("plain_count"),
        "sum": registry.get_sample_value("plain_sum"),
    }
    for bound in BOUNDS:
        le = "+Inf" if bound == math.inf else str(bound)
        figures[le] = registry.get_sample_value("plain_bucket", {"le": le})
    return figures


def test_the_histogram_internals_written_to_are_what_observe_uses() -> None:
    # _add_to_histogram writes prometheus_client's private per-bucket values and sum: if a new
    # version stores them otherwise, this fails before a scrape reports wrong figures.
    child = LATENCY.labels("GET", _route())
    assert child._upper_bounds == BOUNDS
    assert len(child._buckets) == len(BOUNDS)
    child.observe(0.007)  # the second bucket, non-cumulative
    assert [b.get() for b in child._buckets] == [0, 1] + [0] * (len(BOUNDS) - 2)
    assert child._sum.get() == 0.007


async def test_n_requests_are_n_in_the_counter_and_the_histogram_once_flushed() -> None:
    route = _route()
    metrics = RequestMetrics(flush_seconds=60)
    rng = random.Random(11)
    values = [rng.expovariate(10) for _ in range(997)] + [0.0, 12.5, 1e6]
    for value in values:
        metrics.count("GET", route, 200, value)
    assert _written(route)["requests"] is None  # nothing written per request
    metrics.flush()
    written, observed = _written(route), _observed(values)
    assert written["requests"] == written["count"] == len(values)
    # One sum of the batch added once, against observe's running sum: equal but for rounding.
    assert written.pop("sum") == pytest.approx(observed.pop("sum"), rel=1e-12)
    assert written == observed


async def test_values_at_a_bucket_bound_fall_in_that_bucket() -> None:
    route = _route()
    metrics = RequestMetrics(flush_seconds=60)
    at = list(_LATENCY_BUCKETS)
    above = [math.nextafter(b, math.inf) for b in _LATENCY_BUCKETS]
    below = [math.nextafter(b, 0) for b in _LATENCY_BUCKETS]
    values = at + above + below
    for value in values:
        metrics.count("GET", route, 200, value)
    metrics.flush()
    written, observed = _written(route), _observed(values)
    assert written.pop("sum") == pytest.approx(observed.pop("sum"), rel=1e-12)
    assert written == observed
    # Spelled out: le=0.005 holds 0.005 and the value just below it, not the one just above.
    assert written["0.005"] == 2
    assert written["+Inf"] == len(values)


async def test_unwritten_counts_are_written_within_the_flush_interval() -> None:
    route = _route()
    metrics = RequestMetrics(flush_seconds=0.05)
    for _ in range(10):
        metrics.count("GET", route, 200, 0.001)
    assert _written(route)["requests"] is None
    await asyncio.sleep(0.2)
    assert _written(route)["requests"] == 10
    metrics.count("GET", route, 200, 0.001)  # a new batch, a new timer
    await asyncio.sleep(0.2)
    assert _written(route)["requests"] == 11


def test_outside_an_event_loop_a_count_is_written_at_once() -> None:
    route = _route()
    RequestMetrics(flush_seconds=60).count("GET", route, 201, 0.002)
    assert _written(route, 201)["requests"] == 1


async def test_label_sets_beyond_the_cap_are_written_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(observability, "_CHILDREN_CACHED", 2)
    metrics = RequestMetrics(flush_seconds=60)
    routes = [_route() for _ in range(4)]
    for route in routes:
        metrics.count("GET", route, 200, 0.001)
    assert len(metrics._counts) == len(metrics._latencies) == 2  # bounded
    assert [_written(r)["requests"] for r in routes] == [None, None, 1, 1]
    assert [_written(r)["count"] for r in routes] == [None, None, 1, 1]
    metrics.flush()
    assert [_written(r)["requests"] for r in routes] == [1, 1, 1, 1]


def test_flush_request_metrics_writes_every_instance() -> None:
    route = _route()
    first, second = RequestMetrics(flush_seconds=60), RequestMetrics(flush_seconds=60)
    first._counts["GET", route, 200] = 2  # as count() leaves them inside a loop
    second._counts["GET", route, 200] = 3
    observability.flush_request_metrics()
    assert _written(route)["requests"] == 5


async def test_the_edge_writes_them_at_the_lifespan_shutdown() -> None:
    route = _route()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await receive()
            await send({"type": "lifespan.shutdown.complete"})
            return
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async def receive() -> dict[str, Any]:
        return {"type": "lifespan.shutdown"}

    async def ignore(_message: Any) -> None:
        return None

    edge = Edge(app, access_log_enabled=False, metrics_enabled=True, metrics_flush_seconds=60)

    class Route:
        path_format = route

    for _ in range(7):
        scope = {"type": "http", "method": "GET", "path": "/p", "headers": [], "route": Route()}
        await edge(scope, receive, ignore)
    assert _written(route)["requests"] is None
    await edge({"type": "lifespan"}, receive, ignore)
    assert _written(route)["requests"] == _written(route)["count"] == 7


async def test_a_scrape_shows_every_request_answered_before_it(
    make_app: Callable[..., FastAPI],
) -> None:
    app = make_app(metrics_flush_seconds=60)  # only the scrape itself can write them
    line = 'app_http_requests_total{method="GET",route="/health/live",status="200"}'
    count = 'app_http_request_duration_seconds_count{method="GET",route="/health/live"}'

    def figure(text: str, prefix: str) -> float:
        found = [row for row in text.splitlines() if row.startswith(prefix + " ")]
        return float(found[0].rsplit(" ", 1)[1]) if found else 0.0

    async with client_for(app) as client:
        before = (await client.get("/metrics")).text
        for _ in range(25):
            await client.get("/health/live")
        after = (await client.get("/metrics")).text
    assert figure(after, line) - figure(before, line) == 25
    assert figure(after, count) - figure(before, count) == 25
