"""Our own issuer: login, token claims, passwords, the first admin, Swagger's Authorize."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from fastapi import FastAPI

from service.kit.database import create_engine, create_sessionmaker
from service.settings import Settings
from service.users.models import User
from service.users.repository import UserRepository
from tests.service.conftest import PASSWORD, CreateUser, assert_problem, client_for, login
from tests.support.databases import create_database, drop_database, migrate


async def _token_claims(client: httpx.AsyncClient, email: str) -> dict[str, object]:
    token = (await login(client, email))["Authorization"].removeprefix("Bearer ")
    return jwt.decode(token, options={"verify_signature": False})


async def test_login_issues_a_short_lived_token_with_every_claim(
    client: httpx.AsyncClient, create_user: CreateUser
) -> None:
    user = await create_user("alice@example.com")
    response = await client.post(
        "/api/v1/auth/token", data={"username": "alice@example.com", "password": PASSWORD}
    )
    assert response.status_code == 200
    # RFC 6749 §5.1: no cache may store a response that carries a token.
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["pragma"] == "no-cache"
    body = response.json()
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == 900
    claims = jwt.decode(body["access_token"], options={"verify_signature": False})
    assert {"iss", "aud", "sub", "exp", "iat", "nbf", "jti", "roles"} <= claims.keys()
    assert claims["sub"] == str(user.id)
    assert claims["roles"] == ["user"]
    assert claims["exp"] - claims["iat"] == 900
    assert jwt.get_unverified_header(body["access_token"])["alg"] == "HS256"


async def test_wrong_password_and_unknown_email_look_the_same(
    client: httpx.AsyncClient,
    create_user: CreateUser,
    app: FastAPI,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    await create_user("bob@example.com")
    verifications = []
    original = app.state.hasher._hash.verify_and_update

    def counting(password: str, hashed: str) -> tuple[bool, str | None]:
        verifications.append(hashed)
        result: tuple[bool, str | None] = original(password, hashed)
        return result

    monkeypatch.setattr(app.state.hasher._hash, "verify_and_update", counting)
    wrong = await client.post(
        "/api/v1/auth/token", data={"username": "bob@example.com", "password": "not-it-at-all"}
    )
    unknown = await client.post(
        "/api/v1/auth/token", data={"username": "nobody@example.com", "password": "not-it-at-all"}
    )
    body_wrong = assert_problem(wrong, 401, "auth.invalid_credentials")
    body_unknown = assert_problem(unknown, 401, "auth.invalid_credentials")
    assert body_wrong["detail"] == body_unknown["detail"]
    # One Argon2 verification in both cases: no timing difference to enumerate users by.
    assert len(verifications) == 2
    assert all(h.startswith("$argon2id$") for h in verifications)


async def test_oversized_password_is_refused_without_hashing(
    client: httpx.AsyncClient, app: FastAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    def never(*_: object) -> None:
        raise AssertionError("an oversized password must not be hashed")

    monkeypatch.setattr(app.state.hasher._hash, "verify_and_update", never)
    response = await client.post(
        "/api/v1/auth/token", data={"username": "x@example.com", "password": "p" * 1000}
    )
    assert_problem(response, 401, "auth.invalid_credentials")


async def test_login_rehashes_when_argon2_parameters_change(
    make_app: Callable[..., FastAPI], create_user: CreateUser
) -> None:
    user = await create_user("carol@example.com")  # hashed with time_cost=1
    stronger = make_app(argon2_time_cost=2)
    async with client_for(stronger) as client:
        await login(client, "carol@example.com")
    async with stronger.state.sessionmaker() as session:
        stored = await UserRepository(session).get_by_id(user.id)
    assert stored is not None
    assert stored.hashed_password is not None
    assert "t=2" in stored.hashed_password
    assert stored.hashed_password != user.hashed_password


async def test_emails_are_case_insensitive(
    client: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    created = await client.post(
        "/api/v1/users",
        json={"email": "Mixed.Case@Example.COM", "password": "password-123"},
        headers=admin_headers,
    )
    assert created.status_code == 201
    assert created.json()["email"] == "mixed.case@example.com"
    await login(client, "MIXED.case@example.com", "password-123")


@pytest.mark.parametrize("password", ["short", "p" * 129])
async def test_password_length_bounds(
    client: httpx.AsyncClient, admin_headers: dict[str, str], password: str
) -> None:
    response = await client.post(
        "/api/v1/users",
        json={"email": "len@example.com", "password": password},
        headers=admin_headers,
    )
    body = assert_problem(response, 422)
    assert body["errors"][0]["loc"] == ["body", "password"]


async def test_changing_my_password_needs_the_current_one(
    client: httpx.AsyncClient, create_user: CreateUser
) -> None:
    await create_user("dave@example.com")
    headers = await login(client, "dave@example.com")
    wrong = await client.patch(
        "/api/v1/users/me",
        json={"password": "brand-new-pass", "current_password": "guess"},
        headers=headers,
    )
    assert_problem(wrong, 403, "user.wrong_password")
    right = await client.patch(
        "/api/v1/users/me",
        json={"password": "brand-new-pass", "current_password": PASSWORD, "full_name": "Dave"},
        headers=headers,
    )
    assert right.status_code == 200
    assert right.json()["full_name"] == "Dave"
    await login(client, "dave@example.com", "brand-new-pass")
    old = await client.post(
        "/api/v1/auth/token", data={"username": "dave@example.com", "password": PASSWORD}
    )
    assert old.status_code == 401


def _pem_private_key(algorithm: str) -> str:
    key = (
        rsa.generate_private_key(public_exponent=65537, key_size=2048)
        if algorithm == "RS256"
        else ed25519.Ed25519PrivateKey.generate()
    )
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


@pytest.mark.parametrize("algorithm", ["RS256", "EdDSA"])
async def test_asymmetric_signing_publishes_its_public_key(
    make_app: Callable[..., FastAPI], create_user: CreateUser, algorithm: str
) -> None:
    app = make_app(
        jwt_algorithm=algorithm, jwt_private_key=_pem_private_key(algorithm), jwt_key_id="k1"
    )
    await create_user("erin@example.com")
    async with client_for(app) as client:
        headers = await login(client, "erin@example.com")
        jwks = (await client.get("/.well-known/jwks.json")).json()
        assert (await client.get("/api/v1/users/me", headers=headers)).status_code == 200
    [key] = jwks["keys"]
    assert key["kid"] == "k1"
    assert key["alg"] == algorithm
    assert "d" not in key  # never the private part
    token = headers["Authorization"].removeprefix("Bearer ")
    assert jwt.get_unverified_header(token)["kid"] == "k1"
    public = jwt.PyJWK(key)
    claims = jwt.decode(token, public, algorithms=[algorithm], audience="blueprint-api")
    assert claims["roles"] == ["user"]


async def test_hs256_publishes_no_keys(client: httpx.AsyncClient) -> None:
    assert (await client.get("/.well-known/jwks.json")).json() == {"keys": []}


async def test_swagger_authorize_uses_the_password_flow(client: httpx.AsyncClient) -> None:
    schemes = (await client.get("/openapi.json")).json()["components"]["securitySchemes"]
    assert schemes["OAuth2PasswordBearer"]["flows"]["password"]["tokenUrl"] == "/api/v1/auth/token"
    assert schemes["APIKeyHeader"]["name"] == "X-API-Key"


async def test_migrate_creates_the_first_admin_once() -> None:
    name, url = await create_database("admin")
    admin_env = {
        "FIRST_ADMIN_EMAIL": "Root@Example.com",
        "FIRST_ADMIN_PASSWORD": "first-admin-pass",
    }
    try:
        assert "created the first admin" in migrate(url, **admin_env)
        assert "created the first admin" not in migrate(url, **admin_env)  # idempotent
        engine = create_engine(Settings(database_url=url))
        async with create_sessionmaker(engine)() as session:
            admin = await UserRepository(session).get_by_email("root@example.com")
        await engine.dispose()
        assert isinstance(admin, User)
        assert admin.role == "admin"
    finally:
        await drop_database(name)


async def test_a_username_no_email_can_hold_is_just_wrong_credentials(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post(
        "/api/v1/auth/token", data={"username": "nul\x00@example.com", "password": "whatever-1"}
    )
    assert_problem(response, 401, "auth.invalid_credentials")
