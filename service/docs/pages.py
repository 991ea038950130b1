"""The front page and the error catalogue's pages, as HTML for people and JSON for programs.

Every problem's `type` (/problems/<code>) resolves here, to a page made from the code's
catalogue entry in service/kit/problems.py. The HTML is a few lines of f-strings with every
value escaped: three small pages do not need a template engine in the image.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from html import escape

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response

from service.kit.problems import CATALOGUE, PROBLEM_TYPE_PREFIX, ErrorCode, NotFound, example_body

_STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:54rem;margin:2rem auto;padding:0 1rem;"
    "line-height:1.5;color:#1b1b1b}"
    "pre{background:#f4f4f4;padding:1rem;overflow:auto;border-radius:4px}"
    "code{background:#f4f4f4;padding:0 .2rem;border-radius:3px}"
    "table{border-collapse:collapse;width:100%}"
    "th,td{text-align:left;vertical-align:top;padding:.35rem .6rem;border-bottom:1px solid #ddd}"
    "dt{font-weight:600}dd{margin:0 0 .8rem 0}"
)
_STYLE_HASH = base64.b64encode(hashlib.sha256(_STYLE.encode()).digest()).decode()
# No script at all; the one inline <style> above is allowed by its hash, not 'unsafe-inline'.
PAGE_CSP = (
    f"default-src 'none'; style-src 'sha256-{_STYLE_HASH}'; img-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


def install(app: FastAPI) -> None:
    for path, endpoint in (
        ("/", front_page),
        ("/problems", problem_index),
        (PROBLEM_TYPE_PREFIX + "{code}", problem_page),
    ):
        app.add_api_route(path, endpoint, include_in_schema=False, response_class=HTMLResponse)


def wants_json(request: Request) -> bool:
    """JSON for a client that asks for it and not for HTML (browsers name text/html first)."""
    accept = request.headers.get("accept", "")
    return "json" in accept and "text/html" not in accept


def favicon_link(request: Request) -> str:
    """The favicon ships with the Swagger UI assets, so it exists only when the docs do."""
    if not request.app.state.settings.docs_enabled:
        return ""
    root = request.scope.get("root_path", "")
    return f'<link rel="icon" type="image/png" href="{root}/docs/assets/favicon.png">'


def _page(request: Request, title: str, body: str) -> HTMLResponse:
    html = f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{escape(title)}</title>
{favicon_link(request)}
<style>{_STYLE}</style>
</head>
<body>
{body}
</body>
</html>
"""
    return HTMLResponse(html, headers={"Content-Security-Policy": PAGE_CSP})


def _links(request: Request) -> list[tuple[str, str, str]]:
    """(key for the JSON index, label for the page, URL) of each thing the service offers."""
    settings = request.app.state.settings
    links = []
    if settings.docs_enabled:
        links += [("docs", "Swagger UI", "/docs"), ("redoc", "ReDoc", "/redoc")]
    links += [
        ("openapi", "OpenAPI document", request.app.openapi_url),
        ("problems", "Error catalogue", "/problems"),
        ("health_live", "Liveness probe", "/health/live"),
        ("health_ready", "Readiness probe", "/health/ready"),
    ]
    if settings.metrics_enabled:
        links.append(("metrics", "Prometheus metrics", "/metrics"))
    root = request.scope.get("root_path", "")
    return [(key, label, root + path) for key, label, path in links]


async def front_page(request: Request) -> Response:
    app = request.app
    links = _links(request)
    if wants_json(request):
        index = {key: url for key, _, url in links}
        return JSONResponse({"name": app.title, "version": app.version, "links": index})
    items = "\n".join(
        f'<li><a href="{escape(url)}">{escape(label)}</a> <code>{escape(url)}</code></li>'
        for _, label, url in links
    )
    body = (
        f"<h1>{escape(app.title)} <small>{escape(app.version)}</small></h1>\n<ul>\n{items}\n</ul>"
    )
    return _page(request, app.title, body)


def _prose(text: str) -> str:
    """Escaped text with its `backticked` words as code."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", escape(text))


def _status(entry: ErrorCode) -> str:
    return str(entry.status) if entry.status else "varies"


async def problem_index(request: Request) -> Response:
    if wants_json(request):
        return JSONResponse(
            {
                "problems": [
                    {"code": e.code, "status": e.status, "title": e.title, "type": e.type}
                    for e in CATALOGUE.values()
                ]
            }
        )
    rows = "\n".join(
        f'<tr><td><a href="{escape(e.type)}"><code>{escape(e.code)}</code></a></td>'
        f"<td>{_status(e)}</td><td>{escape(e.title)}</td></tr>"
        for e in sorted(CATALOGUE.values(), key=lambda e: e.code)
    )
    body = (
        "<h1>Error catalogue</h1>\n"
        "<p>Every error is an RFC 9457 <code>application/problem+json</code> body whose "
        "<code>type</code> links to one of these pages and whose <code>code</code> names it."
        f' <a href="{escape(request.scope.get("root_path", ""))}/">Front page</a></p>\n'
        f"<table>\n<tr><th>code</th><th>status</th><th>title</th></tr>\n{rows}\n</table>"
    )
    return _page(request, "Error catalogue", body)


async def problem_page(request: Request, code: str) -> Response:
    entry = CATALOGUE.get(code)
    if entry is None:
        raise NotFound(f"No error code is named {code!r}.", code="route.not_found")
    example = example_body(entry)
    if wants_json(request):
        return JSONResponse(
            {
                "code": entry.code,
                "status": entry.status,
                "title": entry.title,
                "meaning": entry.meaning,
                "action": entry.action,
                "example": example,
            }
        )
    root = escape(request.scope.get("root_path", ""))
    body = f"""<p><a href="{root}/problems">Error catalogue</a></p>
<h1><code>{escape(entry.code)}</code>: {escape(entry.title)}</h1>
<dl>
<dt>Status</dt><dd>{_status(entry)}</dd>
<dt>Meaning</dt><dd>{_prose(entry.meaning)}</dd>
<dt>What the client should do</dt><dd>{_prose(entry.action)}</dd>
</dl>
<h2>Example</h2>
<pre>{escape(json.dumps(example, indent=2))}</pre>"""
    return _page(request, f"{entry.code}: {entry.title}", body)
