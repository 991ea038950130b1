"""The app's routing: every domain's routes on the app's own router (service/main.py), which
must serve and document exactly what FastAPI's include_router would."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from starlette.routing import BaseRoute, Route

from service import health
from service.api_keys.routes import router as api_keys_router
from service.auth.routes import router as auth_router
from service.items.routes import router as items_router
from service.users.routes import router as users_router

DOMAIN_ROUTERS = (health.router, auth_router, users_router, items_router, api_keys_router)


def test_no_request_walks_a_tree_of_included_routers(app: FastAPI) -> None:
    # An included router is a node that is not itself a route (FastAPI 0.137+).
    assert all(isinstance(route, BaseRoute) for route in app.router.routes)
    served = {
        (route.path, frozenset(route.methods))
        for route in app.router.routes
        if isinstance(route, Route) and route.methods
    }
    for router in DOMAIN_ROUTERS:
        for route in router.routes:
            assert isinstance(route, Route)
            assert (route.path, frozenset(route.methods or ())) in served


def test_the_schema_is_what_included_routers_would_give(app: FastAPI) -> None:
    reference = FastAPI(title=app.title, version=app.version)
    for router in DOMAIN_ROUTERS:
        reference.include_router(router)
    ours = get_openapi(title=app.title, version=app.version, routes=app.routes)
    assert ours["paths"] == reference.openapi()["paths"]
    assert ours["components"] == reference.openapi()["components"]
