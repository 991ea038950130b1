"""The security schemes of the front door in the OpenAPI document (Swagger's Authorize button).

The front door reads the Authorization and X-API-Key headers itself instead of depending on
FastAPI's security classes, which would be solved as dependencies on every request; their
models still describe the schemes, so the document says what it said before."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute, iter_route_contexts
from fastapi.security import APIKeyHeader, OAuth2PasswordBearer

from service.frontdoor.dependencies import front_door

SCHEMES = {
    "OAuth2PasswordBearer": OAuth2PasswordBearer(tokenUrl="/api/v1/auth/token").model,
    "APIKeyHeader": APIKeyHeader(name="X-API-Key").model,
}
# Either scheme authenticates (OpenAPI: alternatives are separate requirement objects).
REQUIREMENT: list[dict[str, list[str]]] = [{name: []} for name in SCHEMES]


def document_security(app: FastAPI, openapi: dict[str, Any]) -> dict[str, Any]:
    components = openapi.setdefault("components", {})
    components["securitySchemes"] = {
        name: model.model_dump(mode="json", by_alias=True, exclude_none=True)
        for name, model in SCHEMES.items()
    }
    # The routes as the app serves them (FastAPI nests included routers).
    for route in iter_route_contexts(app.routes):
        if isinstance(route.original_route, APIRoute) and _uses_front_door(route.dependant):
            for method in route.methods or ():
                openapi["paths"][route.path_format][method.lower()]["security"] = REQUIREMENT
    return openapi


def _uses_front_door(dependant: Dependant) -> bool:
    return any(d.call is front_door or _uses_front_door(d) for d in dependant.dependencies)
