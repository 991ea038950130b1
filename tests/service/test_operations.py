"""Health probes, request ids, metrics, security headers, CORS."""

from __future__ import annotations

from collections.abc import Callable

import httpx
from fastapi import FastAPI

from tests.service.conftest import assert_problem, client_for


async def test_liveness(client: httpx.AsyncClient) -> None:
    response = await client.get("/health/live")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_readiness_with_a_reachable_database(client: httpx.AsyncClient) -> None:
    response = await client.get("/health/ready")
    assert response.status_code == 200
    assert response.json()["checks"] == {"database": "ok"}


async def test_readiness_is_503_when_the_database_is_unreachable(
    make_app: Callable[..., FastAPI], closed_port: int
) -> None:
    app = make_app(
        database_url=f"postgresql://postgres@127.0.0.1:{closed_port}/x",
        db_connect_timeout=1,
        db_pool_timeout=1,
    )
    async with client_for(app) as client:
        response = await client.get("/health/ready")
    body = assert_problem(response, 503, "health.not_ready")
    assert body["detail"] == "database: unavailable"


async def test_request_id_is_echoed_or_generated(client: httpx.AsyncClient) -> None:
    assert (await client.get("/health/live", headers={"X-Request-ID": "abc-123"})).headers[
        "x-request-id"
    ] == "abc-123"
    generated = (await client.get("/health/live")).headers["x-request-id"]
    assert len(generated) == 32
    # A hostile id (header injection, log flooding) is replaced, not echoed.
    replaced = (await client.get("/health/live", headers={"X-Request-ID": "x" * 500})).headers
    assert replaced["x-request-id"] != "x" * 500


async def test_metrics_count_requests_by_route_template(
    client: httpx.AsyncClient, user_headers: dict[str, str]
) -> None:
    await client.get("/api/v1/items/00000000-0000-0000-0000-000000000000", headers=user_headers)
    text = (await client.get("/metrics")).text
    assert 'route="/api/v1/items/{item_id}"' in text
    assert "app_http_request_duration_seconds_bucket" in text
    assert "00000000-0000" not in text  # templates, not raw paths (bounded label values)


async def test_metrics_report_the_database_pool(
    make_app: Callable[..., FastAPI], database_url: str
) -> None:
    app = make_app()
    async with client_for(app) as client:
        await client.get("/health/ready")
        text = (await client.get("/metrics")).text
    if not database_url.startswith("postgresql"):
        return  # SQLite has no network pool worth reporting
    assert "app_db_pool_connections_in_use" in text
    assert "app_db_pool_capacity" in text


async def test_security_headers(client: httpx.AsyncClient) -> None:
    headers = (await client.get("/health/live")).headers
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["x-frame-options"] == "DENY"
    assert "default-src 'none'" in headers["content-security-policy"]


async def test_hsts_outside_development(make_app: Callable[..., FastAPI]) -> None:
    app = make_app(app_env="staging", jwt_secret="s" * 40)
    async with client_for(app) as client:
        assert "max-age" in (await client.get("/health/live")).headers["strict-transport-security"]


async def test_cors_only_for_configured_origins(make_app: Callable[..., FastAPI]) -> None:
    app = make_app(cors_origins=["https://app.example"])
    async with client_for(app) as client:
        allowed = await client.options(
            "/api/v1/items",
            headers={"Origin": "https://app.example", "Access-Control-Request-Method": "POST"},
        )
        denied = await client.options(
            "/api/v1/items",
            headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
        )
    assert allowed.headers["access-control-allow-origin"] == "https://app.example"
    assert "access-control-allow-origin" not in denied.headers


async def test_cors_preflight_carries_the_request_id_and_security_headers(
    make_app: Callable[..., FastAPI],
) -> None:
    # CORS answers a preflight itself, inside the edge: the edge's headers are still added.
    app = make_app(cors_origins=["https://app.example"])
    async with client_for(app) as client:
        preflight = await client.options(
            "/api/v1/items",
            headers={
                "Origin": "https://app.example",
                "Access-Control-Request-Method": "POST",
                "X-Request-ID": "preflight-1",
            },
        )
    assert preflight.status_code == 200
    assert preflight.headers["x-request-id"] == "preflight-1"
    assert preflight.headers["x-content-type-options"] == "nosniff"
    assert "default-src 'none'" in preflight.headers["content-security-policy"]


async def test_docs_are_served(client: httpx.AsyncClient) -> None:
    response = await client.get("/docs")
    assert response.status_code == 200
    assert "swagger-ui" in response.text
