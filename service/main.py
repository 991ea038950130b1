"""create_app(): wiring only — settings, resources, middleware, handlers, routers."""

from __future__ import annotations

import ipaddress
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from starlette.routing import Route
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from service import docs, health, openapi
from service.api_keys.routes import router as api_keys_router
from service.auth.authenticate import create_principal_cache
from service.auth.jwks import OidcVerifier
from service.auth.passwords import PasswordHasher
from service.auth.routes import router as auth_router
from service.auth.tokens import TokenIssuer
from service.frontdoor.door import FrontDoor
from service.frontdoor.headers import SCOPE_KEY as QUOTA_SCOPE_KEY
from service.items.routes import router as items_router
from service.kit.database import create_engine, create_sessionmaker
from service.kit.edge import Edge
from service.kit.error_handlers import CatchUnhandled, install_error_handlers
from service.kit.observability import configure_logging, instrument_pool, metrics_endpoint
from service.ratelimit.limiter import Limiter
from service.settings import Settings, get_settings
from service.users.routes import router as users_router


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    yield
    if app.state.oidc_verifier is not None:
        await app.state.oidc_verifier.keys.aclose()
    await app.state.limiter.aclose()
    await app.state.engine.dispose()


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    settings.require_secure()
    configure_logging(settings.log_level)

    app = FastAPI(
        title="Blueprint API",
        version="0.1.0",
        lifespan=lifespan,
        # service/docs serves them (offline, when DOCS_ENABLED), not FastAPI's CDN-loading pages.
        docs_url=None,
        redoc_url=None,
        telemetry={
            "tracing": settings.fastapi_telemetry,
            "metrics": settings.fastapi_telemetry,
            "logs": settings.fastapi_telemetry,
        },
    )
    app.state.settings = settings
    app.state.engine = create_engine(settings)
    app.state.sessionmaker = create_sessionmaker(app.state.engine)
    app.state.read_sessionmaker = create_sessionmaker(app.state.engine, read_only=True)
    if not settings.uses_sqlite:
        instrument_pool(app.state.engine, settings.db_pool_size + settings.db_max_overflow)
    app.state.hasher = PasswordHasher(settings)
    app.state.token_issuer = TokenIssuer(settings)
    app.state.principal_cache = create_principal_cache(settings)
    app.state.oidc_verifier = OidcVerifier(settings) if settings.oidc_jwks_url else None
    app.state.limiter = Limiter(settings)
    app.state.frontdoor = FrontDoor(settings, app.state.limiter)

    install_error_handlers(app)
    if settings.cors_origins:
        # Inside CORS, so a 500 carries the CORS headers a browser needs to read it; without
        # CORS the Edge's own catch-all answers it.
        app.add_middleware(CatchUnhandled)
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "PATCH", "DELETE"],
            allow_headers=["Authorization", "Content-Type", "X-API-Key", "X-Request-ID"],
            expose_headers=[
                "X-Request-ID",
                "Retry-After",
                "RateLimit-Policy",
                "RateLimit",
            ],
        )
    # One ASGI pass for request id, metrics, access log, security headers, body limit, the
    # rate-limit headers (on every response, a 500 included) and the catch-all 500.
    app.add_middleware(
        Edge,
        access_log_enabled=settings.access_log == "json",
        access_log_flush_seconds=settings.access_log_flush_seconds,
        metrics_enabled=settings.metrics_enabled,
        metrics_flush_seconds=settings.metrics_flush_seconds,
        hsts=not settings.is_development,
        max_body_bytes=settings.max_body_bytes,
        header_source_key=QUOTA_SCOPE_KEY,
    )
    if settings.trusted_proxies:
        # The one place X-Forwarded-For (and -Proto) is believed, from TRUSTED_PROXIES only:
        # the client address the front door, the access log and the metrics see. The server's
        # own proxy handling is off (http_server.py, __main__.py).
        # Networks as written ("10.0.0.5/8" too): Uvicorn would take a non-strict one for a
        # host name and never match it.
        networks = [str(ipaddress.ip_network(n, strict=False)) for n in settings.trusted_proxies]
        app.add_middleware(ProxyHeadersMiddleware, trusted_hosts=networks)

    # Each domain's routes go on the app's own router, not include_router(): since FastAPI
    # 0.137 an included router stays a node of a tree that every request walks (its matching
    # and a version check over its routes), which cost more than the edge middleware on the
    # cheapest route (docs/benchmarks.md). A domain router's routes already carry its prefix,
    # tags, dependencies and responses; tests/service/test_routing.py pins that nothing is lost.
    for router in (health.router, auth_router, users_router, items_router, api_keys_router):
        app.router.routes.extend(router.routes)
    docs.install(app, settings)
    if settings.metrics_enabled:
        app.add_route("/metrics", metrics_endpoint, include_in_schema=False)
    # Every endpoint, for the Allow header of a 405.
    app.state.endpoints = [route for route in app.router.routes if isinstance(route, Route)]
    openapi.install(app, settings)
    return app
