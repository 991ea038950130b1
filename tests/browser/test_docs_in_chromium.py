"""The interactive docs as a person meets them: Debian's Chromium, headless, driven by
Playwright against the production server (Gunicorn, real PostgreSQL), with every request that
would leave the machine blocked and recorded. Nothing here needs the internet: the page must
work from the service's own assets alone.

The screenshot of Swagger UI answering 200 lands in build/browser/ for whoever reads the CI log.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from playwright.async_api import Browser, ConsoleMessage, Page, Route, async_playwright

from tests.support.api import seed_loadtest
from tests.support.databases import REDIS_URL, ROOT, create_database, drop_database
from tests.support.processes import Server, start_server

# Debian's package (.ci/run installs it); never a Playwright-downloaded build. CHROMIUM_PATH
# names another installed Chromium-family browser (the GitHub runner's Chrome).
CHROMIUM = Path(os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium"))
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
SCREENSHOTS = ROOT / "build" / "browser"
PASSWORD = "browser-test-password"
EMAIL = "loadtest-0@example.com"  # made by `seed-loadtest`
REDOC_LOGO = "https://cdn.redoc.ly/redoc/logo-mini.svg"
TIMEOUT_MS = 30_000  # two busy cores parse a 1.5 MB bundle slowly


@pytest.fixture(scope="module")
def chromium() -> Path:
    if not CHROMIUM.exists():
        message = f"{CHROMIUM} is missing: apt-get install -y chromium (.ci/run does so)"
        if os.environ.get("CI"):
            pytest.fail(message)  # CI installs it: a skip there would hide the test
        pytest.skip(message)
    return CHROMIUM


@pytest.fixture(scope="module")
async def database_url() -> AsyncIterator[str]:
    name, url = await create_database("browser")
    seed_loadtest(url, 1, password=PASSWORD)
    try:
        yield url
    finally:
        await drop_database(name)


@pytest.fixture(scope="module")
def server(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = start_server(
        {
            "DATABASE_URL": database_url,
            "DOCS_ENABLED": "true",
            "APP_NAME": f"browser-{uuid.uuid4().hex[:8]}",  # a fresh rate-limit budget
            "REDIS_URL": REDIS_URL,  # production refuses per-process limits
        },
        tmp_path_factory.mktemp("browser-server"),
        workers=1,
    )
    yield server
    server.stop()


@pytest.fixture(scope="module")
async def browser(chromium: Path) -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=str(chromium), args=CHROMIUM_ARGS
        )
        yield browser
        await browser.close()


@dataclass
class Visit:
    """A page plus what it tried to do that it should not: leave the server, break its CSP."""

    page: Page
    outside: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)


@pytest.fixture
async def visit(browser: Browser, server: Server) -> AsyncIterator[Visit]:
    context = await browser.new_context(viewport={"width": 1280, "height": 1000})
    context.set_default_timeout(TIMEOUT_MS)
    page = await context.new_page()
    visit = Visit(page)

    async def only_the_server(route: Route) -> None:
        if route.request.url.startswith(server.base_url + "/"):
            await route.continue_()
        else:  # a CDN, a font, a validator badge: none of it exists offline
            visit.outside.append(route.request.url)
            await route.abort()

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error":  # CSP violations are reported here
            visit.console_errors.append(message.text)

    await context.route("**/*", only_the_server)
    page.on("console", on_console)
    yield visit
    await context.close()


async def test_swagger_ui_authorizes_with_the_password_flow_and_tries_users_me(
    visit: Visit, server: Server
) -> None:
    page = visit.page
    await page.goto(server.base_url + "/docs")

    # The operation list renders.
    me = page.locator(".opblock-get", has=page.locator('[data-path="/api/v1/users/me"]'))
    await me.wait_for()
    assert await page.locator(".opblock").count() >= 10

    # Authorize: the OAuth2 password flow gets a token from the token endpoint.
    await page.locator(".auth-wrapper button.authorize").click()
    oauth2 = page.locator(".auth-container", has_text="OAuth2PasswordBearer")
    await oauth2.locator("#oauth_username").fill(EMAIL)
    await oauth2.locator("#oauth_password").fill(PASSWORD)
    async with page.expect_response("**/api/v1/auth/token") as token_answer:
        await oauth2.get_by_role("button", name="Apply given OAuth2 credentials").click()
    assert (await token_answer.value).status == 200
    # Swagger UI holds the token: the scheme shows as authorized, with a Logout button.
    await oauth2.get_by_role("button", name="Remove authorization").wait_for()
    await oauth2.get_by_role("button", name="Close").click()

    # persistAuthorization: a reload keeps the token.
    await page.reload()
    await me.wait_for()
    await page.locator(".auth-wrapper button.authorize.locked").wait_for()

    # Try it out on GET /api/v1/users/me: 200 with the user's email.
    await me.locator(".opblock-summary").click()
    await me.locator("button.try-out__btn").click()
    async with page.expect_response("**/api/v1/users/me") as me_answer:
        await me.locator("button.execute").click()
    assert (await me_answer.value).status == 200
    live = me.locator(".live-responses-table .response")
    await live.locator(".response-col_status", has_text="200").wait_for()
    assert EMAIL in await live.locator(".response-col_description").inner_text()

    # The operation from its title down to the live 200 response, in one viewport.
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    await me.evaluate("e => e.scrollIntoView({block: 'start'})")
    await page.screenshot(path=SCREENSHOTS / "swagger-ui-users-me.png")

    assert visit.outside == []
    assert visit.console_errors == []


async def test_redoc_renders_the_api(visit: Visit, server: Server) -> None:
    page = visit.page
    await page.goto(server.base_url + "/redoc")
    await page.locator(".api-info h1", has_text="Blueprint API").wait_for()
    await page.get_by_text("/api/v1/users/me").first.wait_for(state="attached")
    assert visit.outside == []
    # The one thing the page tries beyond the service: ReDoc's bundle hard-codes its side-menu
    # logo's URL; the policy blocks it and ReDoc hides the image when it fails to load.
    assert all(REDOC_LOGO in error for error in visit.console_errors), visit.console_errors


async def test_the_front_page_leads_to_an_error_page(visit: Visit, server: Server) -> None:
    page = visit.page
    await page.goto(server.base_url + "/")
    await page.get_by_role("link", name="Error catalogue").click()
    await page.get_by_role("link", name="auth.invalid_token").click()
    assert page.url == server.base_url + "/problems/auth.invalid_token"
    await page.get_by_text("What the client should do").wait_for()
    # The page's one <style> passes its CSP (by hash): the example block is styled.
    background = await page.locator("pre").evaluate("e => getComputedStyle(e).backgroundColor")
    assert background == "rgb(244, 244, 244)"
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=SCREENSHOTS / "problem-auth.invalid_token.png", full_page=True)
    assert visit.outside == []
    assert visit.console_errors == []
