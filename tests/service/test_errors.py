"""Every error class answers in the same problem+json shape, and none leaks internals."""

from __future__ import annotations

import ast
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text

from service.items.models import Item
from service.kit.database import SessionDep
from service.kit.problems import (
    CATALOGUE,
    HTTP_CODES,
    Conflict,
    NotFound,
    Problem,
    Unauthorized,
    UncataloguedCode,
    example_body,
    problem,
    register_constraint,
)
from tests.service.conftest import CreateUser, assert_problem, client_for

SERVICE = Path(__file__).resolve().parents[2] / "service"


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


# --- the catalogue ----------------------------------------------------------------------------


def _modules() -> Iterator[tuple[Path, ast.Module]]:
    for path in sorted(SERVICE.rglob("*.py")):
        yield path, ast.parse(path.read_text(), filename=str(path))


def _name(func: ast.expr) -> str:
    return func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")


def _str(node: ast.AST) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def codes_raised_in_service() -> dict[str, str]:
    """Every error code written in service/, with where: `code="..."` in any call (AppError
    and its subclasses), problem("..."), register_constraint(name, "..."), and the
    subclasses' `code = "..."` defaults."""
    found: dict[str, str] = {}
    for path, module in _modules():
        where = str(path.relative_to(SERVICE.parent))
        for node in ast.walk(module):
            candidates: list[ast.expr] = []
            if isinstance(node, ast.Call):
                candidates += [k.value for k in node.keywords if k.arg == "code"]
                if _name(node.func) == "problem" and node.args:
                    candidates.append(node.args[0])
                if _name(node.func) == "register_constraint" and len(node.args) > 1:
                    candidates.append(node.args[1])
            elif isinstance(node, ast.Assign):  # `code = "x"` or `status, code = 401, "x"`
                for target in node.targets:
                    names = target.elts if isinstance(target, ast.Tuple) else [target]
                    values = node.value.elts if isinstance(node.value, ast.Tuple) else [node.value]
                    candidates += [
                        v
                        for n, v in zip(names, values, strict=False)
                        if isinstance(n, ast.Name) and n.id == "code"
                    ]
            for candidate in candidates:
                if (code := _str(candidate)) is not None:
                    found.setdefault(code, f"{where}:{candidate.lineno}")
    return found


def test_every_code_raised_in_the_service_is_catalogued() -> None:
    raised = codes_raised_in_service()
    # The scan itself works: it sees codes from the domains, the handlers and the defaults.
    assert {"auth.invalid_token", "user.email_taken", "request.too_large", "not_found"} <= set(
        raised
    )
    missing = {code: where for code, where in raised.items() if code not in CATALOGUE}
    assert not missing, f"add these codes to CATALOGUE in service/kit/problems.py: {missing}"


def test_every_catalogued_code_is_used_somewhere() -> None:
    """A catalogue entry whose code appears nowhere else in service/ documents nothing real."""
    literals: set[str] = set()
    for _, module in _modules():
        catalogue = [
            node
            for node in module.body
            if isinstance(node, ast.Assign)
            and any(getattr(target, "id", "") == "_CATALOGUE_ENTRIES" for target in node.targets)
        ]
        skipped = {id(node) for entry in catalogue for node in ast.walk(entry)}
        literals |= {
            value
            for node in ast.walk(module)
            if id(node) not in skipped and (value := _str(node)) is not None
        }
    unused = sorted(set(CATALOGUE) - literals)
    assert not unused, f"catalogued but never raised: {unused}"


def test_framework_statuses_map_to_catalogued_codes_of_that_status() -> None:
    for status, code in HTTP_CODES.items():
        assert CATALOGUE[code].status == status


def test_an_uncatalogued_code_fails_at_raise_time() -> None:
    with pytest.raises(UncataloguedCode, match="no entry"):
        NotFound("x", code="thing.missing")
    with pytest.raises(UncataloguedCode, match="catalogued as 401"):
        Conflict("x", code="auth.invalid_token")  # an entry's status is its only status
    with pytest.raises(UncataloguedCode):
        problem("thing.missing", "x")
    with pytest.raises(UncataloguedCode):
        register_constraint("uq_things", "thing.taken", "A thing exists.")
    assert Unauthorized("x", code="auth.invalid_token").entry is CATALOGUE["auth.invalid_token"]


def test_every_entry_documents_its_code() -> None:
    for code, entry in CATALOGUE.items():
        assert all((entry.title, entry.meaning, entry.action, entry.example_detail)), code
        example = Problem.model_validate(example_body(entry))
        assert (example.code, example.type) == (code, f"/problems/{code}")
        assert example.status == (entry.status or entry.example_status)
        assert entry.status is not None or entry.example_status, code


async def test_every_problem_type_resolves_to_its_page(client: httpx.AsyncClient) -> None:
    for code, entry in CATALOGUE.items():
        page = await client.get(entry.type)  # relative: resolved against the request's URL
        assert page.status_code == 200, code
        assert page.headers["content-type"].startswith("text/html")
        assert f"<code>{code}</code>" in page.text
        assert f"<dd>{entry.status or 'varies'}</dd>" in page.text
        as_json = (await client.get(entry.type, headers={"Accept": "application/json"})).json()
        assert as_json["status"] == entry.status
        assert as_json["action"] == entry.action
        assert as_json["example"] == example_body(entry)


async def test_a_real_error_links_to_its_page(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/v1/users/me")
    body = assert_problem(response, 401, "auth.missing_credentials")
    page = await client.get(response.url.join(body["type"]))  # RFC 9457: relative to the request
    assert page.status_code == 200
    assert CATALOGUE["auth.missing_credentials"].title in page.text


async def test_an_unknown_code_has_no_page(client: httpx.AsyncClient) -> None:
    assert_problem(await client.get("/problems/no.such_code"), 404, "route.not_found")


async def test_the_catalogue_index_lists_every_code(client: httpx.AsyncClient) -> None:
    index = (await client.get("/problems", headers={"Accept": "application/json"})).json()
    assert {p["code"] for p in index["problems"]} == set(CATALOGUE)
    html = (await client.get("/problems")).text
    assert all(f'href="/problems/{code}"' in html for code in CATALOGUE)


async def test_openapi_describes_the_catalogue(client: httpx.AsyncClient) -> None:
    schema = (await client.get("/openapi.json")).json()["components"]["schemas"]["Problem"]
    assert schema["properties"]["code"]["enum"] == sorted(CATALOGUE)
    assert schema["x-problem-codes"]["user.email_taken"] == {
        "status": 409,
        "title": CATALOGUE["user.email_taken"].title,
        "type": "/problems/user.email_taken",
    }


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
