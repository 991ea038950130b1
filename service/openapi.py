"""The OpenAPI document as the service really behaves: every error a Problem, and the limits
that come from runtime settings (page size, password length) written into the schemas."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from fastapi import FastAPI

from service.frontdoor.openapi import document_security
from service.kit.problems import CATALOGUE, PROBLEM_MEDIA_TYPE, Problem
from service.settings import Settings

# Request models whose `password` is a new password, checked against the length settings.
NEW_PASSWORD_MODELS = ("UserCreate", "MeUpdate")


def install(app: FastAPI, settings: Settings) -> None:
    default_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = document_security(app, document_problems(default_openapi()))
            app.openapi_schema = runtime_bounds(document, settings)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def document_problems(openapi: dict[str, Any]) -> dict[str, Any]:
    """Every 4xx/5xx response in the document is a Problem, served as problem+json; every
    operation also declares the 4XX/5XX ranges (rate limits, body size, outages apply to all)."""
    schemas = openapi.setdefault("components", {}).setdefault("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    schema = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
    schemas.update(schema.pop("$defs", {}))
    schemas["Problem"] = describe_catalogue(schema)
    content = {PROBLEM_MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}}
    for operation in _operations(openapi):
        responses = operation.setdefault("responses", {})
        responses.setdefault("4XX", {"description": "Client error"})
        responses.setdefault("5XX", {"description": "Server error"})
        for status, response in responses.items():
            if status[0] in "45":
                response["content"] = content
    return openapi


def describe_catalogue(schema: dict[str, Any]) -> dict[str, Any]:
    """The Problem schema names every catalogued code: `code` is an enum, and
    `x-problem-codes` gives each code's status, title and documentation page."""
    schema["properties"]["code"]["enum"] = sorted(CATALOGUE)
    schema["x-problem-codes"] = {
        code: {"status": entry.status, "title": entry.title, "type": entry.type}
        for code, entry in sorted(CATALOGUE.items())
    }
    schema["description"] += " Each code is documented at its `type`, /problems/{code}."
    return schema


def runtime_bounds(openapi: dict[str, Any], settings: Settings) -> dict[str, Any]:
    for operation in _operations(openapi):
        for parameter in operation.get("parameters", []):
            if parameter["in"] == "query" and parameter["name"] == "limit":
                for variant in _variants(parameter["schema"], "integer"):
                    variant["maximum"] = settings.page_size_max
    schemas = openapi["components"]["schemas"]
    for name in NEW_PASSWORD_MODELS:
        for variant in _variants(schemas[name]["properties"]["password"], "string"):
            variant["minLength"] = settings.password_min_length
            variant["maxLength"] = settings.password_max_length
    return openapi


def _operations(openapi: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for path_item in openapi.get("paths", {}).values():
        yield from path_item.values()


def _variants(schema: dict[str, Any], type_: str) -> Iterator[dict[str, Any]]:
    """The schema itself or its anyOf members (optional fields) of the given type."""
    for variant in schema.get("anyOf", [schema]):
        if variant.get("type") == type_:
            yield variant
