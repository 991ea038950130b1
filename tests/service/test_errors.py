"""Every error class answers in the same problem+json shape, and none leaks internals."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text

from service.items.models import Item
from service.kit.database import SessionDep
from tests.service.conftest import CreateUser, assert_problem, client_for


async def test_unknown_route_is_404(client: httpx.AsyncClient) -> None:
    assert_problem(await client.get("/no/such/route"), 404, "route.not_found")


async def test_wrong_method_is_405(client: httpx.AsyncClient) -> None:
    response = await client.put("/health/live")
    assert_problem(response, 405, "method.not_allowed")
    assert "GET" in response.headers["allow"]


async def test_validation_error_lists_field_locations(
    client: httpx.AsyncClient, user_headers: dict[str, str]
) -> None:
    response = await client.post(
        "/api/v1/items", json={"title": "", "description": 5, "extra": 1}, headers=user_headers
    )
    body = assert_problem(response, 422, "request.validation_failed")
    locations = {tuple(e["loc"]) for e in body["errors"]}
    assert {("body", "title"), ("body", "description"), ("body", "extra")} <= locations
    assert all({"loc", "msg", "type"} == e.keys() for e in body["errors"])


async def test_validation_errors_never_echo_the_input(client: httpx.AsyncClient) -> None:
    secret = "hunter2-" * 200  # far above PASSWORD_MAX_LENGTH's outer cap
    response = await client.post(
        "/api/v1/users",
        json={"email": "not-an-email", "password": secret},
        headers={"X-API-Key": ""},
    )
    assert response.status_code in (401, 422)
    assert "hunter2" not in response.text


async def test_missing_credentials_is_401_with_bearer_challenge(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/v1/users/me")
    assert_problem(response, 401, "auth.missing_credentials")
    assert response.headers["www-authenticate"] == 'Bearer realm="api"'


async def test_role_check_is_403(client: httpx.AsyncClient, user_headers: dict[str, str]) -> None:
    assert_problem(
        await client.get("/api/v1/users", headers=user_headers), 403, "auth.role_required"
    )


async def test_body_too_large_is_413(make_app: Callable[..., FastAPI], create_user: object) -> None:
    app = make_app(max_body_bytes=2048)
    async with client_for(app) as client:
        response = await client.post(
            "/api/v1/items",
            content=b'{"title": "' + b"x" * 4096 + b'"}',
            headers={"content-type": "application/json", "Authorization": "Bearer whatever"},
        )
    assert_problem(response, 413, "request.too_large")


async def test_unexpected_error_is_a_generic_500_with_details_only_in_the_log(
    app: FastAPI, caplog: pytest.LogCaptureFixture
) -> None:
    async def broken() -> None:
        raise ZeroDivisionError("secret internals at /srv/app/module.py line 3")

    app.add_api_route("/test/broken", broken)
    async with client_for(app) as client:
        response = await client.get("/test/broken", headers={"X-Request-ID": "trace-me-123"})
    body = assert_problem(response, 500, "internal")
    assert body["request_id"] == "trace-me-123"
    assert "ZeroDivisionError" not in response.text
    logged = [r for r in caplog.records if r.exc_info and r.exc_info[0] is ZeroDivisionError]
    assert logged, "the traceback belongs in the log"
    assert logged[0].request_id == "trace-me-123"  # type: ignore[attr-defined]


async def test_database_unreachable_is_503(
    make_app: Callable[..., FastAPI], closed_port: int
) -> None:
    app = make_app(
        database_url=f"postgresql://postgres@127.0.0.1:{closed_port}/nothing",
        db_connect_timeout=1,
        db_pool_timeout=1,
    )
    async with client_for(app) as client:
        response = await client.post(
            "/api/v1/auth/token", data={"username": "a@example.com", "password": "whatever-123"}
        )
    assert_problem(response, 503, "database.unavailable")


async def test_openapi_documents_problem_responses(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    assert "Problem" in spec["components"]["schemas"]
    assert "HTTPValidationError" not in spec["components"]["schemas"]
    operation = spec["paths"]["/api/v1/items/{item_id}"]["get"]
    for status in ("404", "422", "4XX", "5XX"):
        content = operation["responses"][status]["content"]
        assert content == {
            "application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}
        }


async def test_405_allows_every_method_the_path_serves(
    client: httpx.AsyncClient, user_headers: dict[str, str]
) -> None:
    response = await client.delete("/api/v1/users/me", headers=user_headers)
    assert_problem(response, 405, "method.not_allowed")  # not a 422 for "me" as a user id
    assert set(response.headers["allow"].split(", ")) == {"GET", "PATCH"}


async def test_chunked_body_over_the_limit_is_413(make_app: Callable[..., FastAPI]) -> None:
    app = make_app(max_body_bytes=2048)

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: chunked
        for _ in range(8):
            yield b"x" * 512

    async with client_for(app) as client:
        response = await client.post(
            "/api/v1/auth/token",
            content=chunks(),
            headers={"content-type": "application/x-www-form-urlencoded"},
        )
    assert_problem(response, 413, "request.too_large")


async def test_chunked_body_under_the_limit_is_read(
    client: httpx.AsyncClient, user_headers: dict[str, str]
) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"title": '
        yield b'"chunked"}'

    response = await client.post(
        "/api/v1/items",
        content=chunks(),
        headers=user_headers | {"content-type": "application/json"},
    )
    assert response.status_code == 201
    assert response.json()["title"] == "chunked"


async def test_openapi_states_the_runtime_limits(make_app: Callable[..., FastAPI]) -> None:
    app = make_app(
        page_size_max=25, page_size_default=10, password_min_length=12, password_max_length=64
    )
    async with client_for(app) as client:
        spec = (await client.get("/openapi.json")).json()
    [limit] = [
        p for p in spec["paths"]["/api/v1/items"]["get"]["parameters"] if p["name"] == "limit"
    ]
    assert {"type": "integer", "minimum": 1, "maximum": 25} in limit["schema"]["anyOf"]
    password = spec["components"]["schemas"]["UserCreate"]["properties"]["password"]
    assert (password["minLength"], password["maxLength"]) == (12, 64)


# --- integrity violations: 422 for bad values, 409 for clashes with other rows -----------------


async def test_not_null_and_check_violations_are_422_unique_and_fk_are_409(
    app: FastAPI, create_user: CreateUser
) -> None:
    owner = await create_user()

    async def not_null(session: SessionDep) -> None:
        session.add(Item(owner_id=owner.id, title=None))
        await session.flush()

    async def check(session: SessionDep) -> None:
        await session.execute(text("CREATE TEMP TABLE probe (n integer CHECK (n > 0))"))
        await session.execute(text("INSERT INTO probe (n) VALUES (-1)"))

    async def foreign_key(session: SessionDep) -> None:
        session.add(Item(owner_id=uuid.uuid4(), title="orphan"))
        await session.flush()

    for name, route in (("not-null", not_null), ("check", check), ("fk", foreign_key)):
        app.add_api_route(f"/test/{name}", route, methods=["POST"])
    async with client_for(app) as client:
        assert_problem(await client.post("/test/not-null"), 422, "request.invalid_data")
        assert_problem(await client.post("/test/check"), 422, "request.invalid_data")
        assert_problem(await client.post("/test/fk"), 409, "conflict")


async def test_an_unclassified_database_error_is_logged_without_its_values(
    app: FastAPI, caplog: pytest.LogCaptureFixture, database_url: str
) -> None:
    if not database_url.startswith("postgresql"):
        return  # SQLite reports an unknown column as OperationalError (503), not a bug (500)
    email, password_hash = "victim@example.com", "$argon2id$v=19$m=19456,t=2,p=1$c2VjcmV0"

    async def broken_query(session: SessionDep) -> None:
        await session.execute(
            text("SELECT no_such_column FROM users WHERE email = :email AND hashed_password = :h"),
            {"email": email, "h": password_hash},
        )

    app.add_api_route("/test/broken-query", broken_query, methods=["POST"])
    with caplog.at_level("INFO"):
        async with client_for(app) as client:
            assert_problem(await client.post("/test/broken-query"), 500, "internal")
    # caplog.text is every record as formatted, tracebacks included.
    assert "broken-query" in caplog.text  # the error is logged...
    assert email not in caplog.text  # ...without the values it was given
    assert password_hash not in caplog.text
