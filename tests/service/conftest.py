"""Fixtures for the service: a real PostgreSQL database made for this session (and dropped
after), a SQLite file, each migrated with the real `python -m service migrate`; the app runs on
both. Redis, when a test asks for it, is the machine's real one."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.exc import SQLAlchemyError

from service.auth.passwords import PasswordHasher
from service.kit.models import Base
from service.main import create_app
from service.settings import Settings
from service.users.models import Role, User
from service.users.repository import UserRepository
from tests.support.api import PASSWORD as PASSWORD
from tests.support.api import login as login
from tests.support.databases import create_database, drop_database, migrate

# Cheap Argon2 for tests: the parameters are settings, the code path is the same.
FAST_HASHING: dict[str, Any] = {
    "argon2_time_cost": 1,
    "argon2_memory_cost": 1024,
    "argon2_parallelism": 1,
}


@pytest.fixture(scope="session")
async def postgres_url() -> AsyncIterator[str]:
    name, url = await create_database()
    try:
        yield url
    finally:
        await drop_database(name)


@pytest.fixture(scope="session")
def sqlite_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('sqlite') / 'app.db'}"
    migrate(url)
    return url


@pytest.fixture(params=["postgres", "sqlite"])
def database_url(request: pytest.FixtureRequest) -> str:
    url: str = request.getfixturevalue(f"{request.param}_url")
    return url


@pytest.fixture
def make_settings(database_url: str) -> Callable[..., Settings]:
    def make(**overrides: Any) -> Settings:
        base: dict[str, Any] = {
            "database_url": database_url,
            "redis_url": None,
            "app_name": f"test-{uuid.uuid4().hex[:8]}",  # also the rate-limit key prefix
            "access_log": "off",
            "rate_limit_login": "1000/minute",
            "rate_limit_login_ip": "1000/minute",
            "rate_limit_login_username": "1000/minute",
            "rate_limit_user": "10000/minute",
            "rate_limit_client": "10000/minute",
            # Off unless a test is about it: most tests change a user and look at once.
            "auth_cache_ttl_seconds": 0,
            **FAST_HASHING,
        }
        return Settings(**(base | overrides))

    return make


async def _clear(app: FastAPI) -> None:
    async with app.state.engine.begin() as conn:
        for table in reversed(Base.metadata.sorted_tables):
            await conn.execute(table.delete())


@pytest.fixture
async def make_app(make_settings: Callable[..., Settings]) -> AsyncIterator[Callable[..., FastAPI]]:
    """Apps with settings overrides; their tables are emptied and engines closed afterwards."""
    apps: list[FastAPI] = []

    def make(**overrides: Any) -> FastAPI:
        app = create_app(make_settings(**overrides))
        apps.append(app)
        return app

    yield make
    for app in apps:
        # An app pointed at a dead database on purpose has nothing to clear.
        with contextlib.suppress(OSError, SQLAlchemyError):
            await _clear(app)
        await app.state.engine.dispose()


def client_for(app: FastAPI, **kwargs: Any) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False, **kwargs)
    return httpx.AsyncClient(transport=transport, base_url="http://testserver")


@pytest.fixture
def app(make_app: Callable[..., FastAPI]) -> FastAPI:
    return make_app()


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(app) as c:
        yield c


CreateUser = Callable[..., Awaitable[User]]


@pytest.fixture
def create_user(app: FastAPI) -> CreateUser:
    async def create(
        email: str | None = None, *, role: Role = Role.user, password: str = PASSWORD, **fields: Any
    ) -> User:
        email = email or f"user-{uuid.uuid4().hex[:8]}@example.com"
        hashed = await PasswordHasher(app.state.settings).hash(password)
        async with app.state.sessionmaker() as session, session.begin():
            return await UserRepository(session).create(
                User(email=email, hashed_password=hashed, role=role, **fields)
            )

    return create


@pytest.fixture
async def user_headers(client: httpx.AsyncClient, create_user: CreateUser) -> dict[str, str]:
    user = await create_user()
    assert user.email
    return await login(client, user.email)


@pytest.fixture
async def admin_headers(client: httpx.AsyncClient, create_user: CreateUser) -> dict[str, str]:
    admin = await create_user(role=Role.admin)
    assert admin.email
    return await login(client, admin.email)


def assert_problem(
    response: httpx.Response, status: int, code: str | None = None
) -> dict[str, Any]:
    """The RFC 9457 shape every error shares; returns the body."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert body["type"] == f"/problems/{body['code']}"
    assert {"title", "code", "instance", "request_id"} <= body.keys()
    assert body["request_id"] == response.headers["x-request-id"]
    if code is not None:
        assert body["code"] == code
    for leak in (
        "Traceback",
        "sqlalchemy",
        "asyncpg",
        "sqlite3",
        "SELECT ",
        "INSERT ",
        "/work",
        ".py",
    ):
        assert leak not in response.text, f"error body leaks {leak!r}: {response.text}"
    return body


@pytest.fixture
def closed_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port
