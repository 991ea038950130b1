"""Swagger UI and ReDoc from the assets that fastapi-offline ships (pinned in uv.lock): no CDN,
no network at run time.

FastAPI's get_swagger_ui_html() configures Swagger UI in an inline script; this page keeps its
content security policy at script-src 'self' instead: the configuration travels in a JSON data
block (never executed) that static/swagger-init.js reads.
"""

from __future__ import annotations

import json
from html import escape
from typing import Any

from fastapi import FastAPI, Request
from fastapi.openapi.docs import swagger_ui_default_parameters
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from service.docs.pages import favicon_link

ASSETS = "/docs/assets"

SWAGGER_UI_PARAMETERS: dict[str, Any] = swagger_ui_default_parameters | {
    "persistAuthorization": True,  # the token from Authorize survives a reload
    "validatorUrl": None,  # no badge fetched from the public validator
}

# Scripts and the stylesheet from this service only; Swagger UI's icons are data: images in
# its stylesheet; "Try it out" and Authorize call this API. React sets inline styles through
# the DOM, which style-src does not restrict.
SWAGGER_UI_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
# ReDoc styles itself with styled-components, which writes <style> elements at run time, and
# builds its search index in a worker made from a blob: URL.
REDOC_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; worker-src blob:; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'none'"
)


def install(app: FastAPI) -> None:
    app.mount(
        ASSETS,
        StaticFiles(packages=[("fastapi_offline", "static"), ("service.docs", "static")]),
        name="docs-assets",
    )
    app.add_api_route("/docs", swagger_ui, include_in_schema=False, response_class=HTMLResponse)
    app.add_api_route("/redoc", redoc, include_in_schema=False, response_class=HTMLResponse)


def _json_block(value: object) -> str:
    # "<" escaped so no string in the configuration can close the <script> element.
    return json.dumps(value).replace("<", "\\u003c")


async def swagger_ui(request: Request) -> HTMLResponse:
    root = request.scope.get("root_path", "")
    config = SWAGGER_UI_PARAMETERS | {"url": root + request.app.openapi_url}
    html = f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{escape(request.app.title)} - Swagger UI</title>
{favicon_link(request)}
<link rel="stylesheet" href="{root}{ASSETS}/swagger-ui.css">
</head>
<body>
<div id="swagger-ui"></div>
<script id="swagger-ui-config" type="application/json">{_json_block(config)}</script>
<script src="{root}{ASSETS}/swagger-ui-bundle.js"></script>
<script src="{root}{ASSETS}/swagger-init.js"></script>
</body>
</html>
"""
    return HTMLResponse(html, headers={"Content-Security-Policy": SWAGGER_UI_CSP})


async def redoc(request: Request) -> HTMLResponse:
    root = request.scope.get("root_path", "")
    html = f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{escape(request.app.title)} - ReDoc</title>
{favicon_link(request)}
</head>
<body>
<redoc spec-url="{root}{request.app.openapi_url}"></redoc>
<script src="{root}{ASSETS}/redoc.standalone.js"></script>
</body>
</html>
"""
    return HTMLResponse(html, headers={"Content-Security-Policy": REDOC_CSP})
