"""The pages for people: the front page, the interactive docs served from a pinned package
(never a CDN), each page's own content security policy, and DOCS_ENABLED. The real browser
drives them in tests/browser/."""

from __future__ import annotations

import re
from collections.abc import Callable
from importlib.resources import files

import httpx
from fastapi import FastAPI

from service.docs.interactive import REDOC_CSP, SWAGGER_UI_CSP
from service.docs.pages import PAGE_CSP
from tests.service.conftest import assert_problem, client_for

API_CSP = "default-src 'none'; frame-ancestors 'none'"
EXTERNAL_URL = re.compile(r"""(?:src|href)=["']?(?:https?:)?//""")


async def test_the_front_page_points_at_docs_health_and_errors(client: httpx.AsyncClient) -> None:
    page = await client.get("/", headers={"Accept": "text/html,application/xhtml+xml,*/*"})
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    for path in ("/docs", "/redoc", "/openapi.json", "/problems", "/health/live", "/health/ready"):
        assert f'href="{path}"' in page.text
    index = (await client.get("/", headers={"Accept": "application/json"})).json()
    assert index["links"]["problems"] == "/problems"
    for url in index["links"].values():
        assert (await client.get(url)).status_code == 200, url


async def test_swagger_ui_and_redoc_come_from_the_service_itself(client: httpx.AsyncClient) -> None:
    static = files("fastapi_offline") / "static"
    for page, assets in (
        ("/docs", ("swagger-ui-bundle.js", "swagger-ui.css", "swagger-init.js", "favicon.png")),
        ("/redoc", ("redoc.standalone.js", "favicon.png")),
    ):
        html = (await client.get(page)).text
        assert not EXTERNAL_URL.search(html), f"{page} loads something from elsewhere"
        for asset in assets:
            assert f'"/docs/assets/{asset}"' in html
            served = await client.get(f"/docs/assets/{asset}")
            assert served.status_code == 200, asset
            if (static / asset).is_file():  # the package's bytes, not a copy of ours
                assert served.content == (static / asset).read_bytes()


async def test_swagger_ui_runs_no_inline_script(client: httpx.AsyncClient) -> None:
    html = (await client.get("/docs")).text
    scripts = re.findall(r"<script([^>]*)>(.*?)</script>", html, re.S)
    for attributes, body in scripts:
        assert "src=" in attributes or 'type="application/json"' in attributes, attributes
        assert "src=" not in attributes or not body.strip()
    assert '"persistAuthorization": true' in html
    assert '"validatorUrl": null' in html


async def test_each_page_has_its_own_policy_and_the_api_keeps_none(
    client: httpx.AsyncClient,
) -> None:
    expected = {
        "/docs": SWAGGER_UI_CSP,
        "/redoc": REDOC_CSP,
        "/": PAGE_CSP,
        "/problems": PAGE_CSP,
        "/problems/auth.invalid_token": PAGE_CSP,
        "/health/live": API_CSP,
        "/openapi.json": API_CSP,
        "/api/v1/users/me": API_CSP,
        "/docs/assets/swagger-ui-bundle.js": API_CSP,
        "/docs/assets/no-such-file.js": API_CSP,
    }
    for path, policy in expected.items():
        response = await client.get(path)
        assert response.headers.get_list("content-security-policy") == [policy], path
        assert response.headers["x-frame-options"] == "DENY"
    assert "'unsafe-inline'" not in SWAGGER_UI_CSP + PAGE_CSP
    assert "script-src 'self';" in SWAGGER_UI_CSP


async def test_docs_can_be_turned_off_per_deployment(make_app: Callable[..., FastAPI]) -> None:
    async with client_for(make_app(docs_enabled=False)) as client:
        for path in ("/docs", "/redoc", "/docs/assets/swagger-ui-bundle.js"):
            assert_problem(await client.get(path), 404, "route.not_found")
        front = (await client.get("/")).text
        assert "/docs" not in front
        assert (await client.get("/problems/auth.invalid_token")).status_code == 200
        assert (await client.get("/openapi.json")).status_code == 200


async def test_pages_answer_405_with_their_methods(client: httpx.AsyncClient) -> None:
    response = await client.post("/")
    assert_problem(response, 405, "method.not_allowed")
    assert response.headers["allow"] == "GET"
    response = await client.post("/docs/assets/swagger-ui.css")
    assert_problem(response, 405, "method.not_allowed")
    assert response.headers["allow"] == "GET, HEAD"
