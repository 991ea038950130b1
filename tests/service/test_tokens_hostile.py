"""Each hostile token is a 401 problem with an RFC 6750 `invalid_token` challenge."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi import FastAPI
from sqlalchemy import func, select

from service.users.models import User
from tests.service.conftest import CreateUser, assert_problem, client_for, login
from tests.service.jwks_server import JwksServer, SigningKey, serve_jwks

SECRET = "test-secret-" + "k" * 40
ISSUER, AUDIENCE = "http://127.0.0.1:8000", "blueprint-api"
IDP_ISSUER, IDP_AUDIENCE = "https://idp.example.test/", "blueprint"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _claims(user: User, **changes: Any) -> dict[str, Any]:
    now = int(time.time())
    claims = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": str(user.id),
        "iat": now,
        "nbf": now,
        "exp": now + 300,
        "jti": "j1",
        "roles": ["user"],
    } | changes
    return {k: v for k, v in claims.items() if v is not None}


def _hs256(claims: dict[str, Any], secret: str | bytes = SECRET) -> str:
    return jwt.encode(claims, secret, algorithm="HS256")


def _hmac_token(claims: dict[str, Any], key: bytes) -> str:
    # Built by hand: PyJWT itself refuses to HMAC-sign with a PEM public key.
    signing_input = (
        _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
        + "."
        + _b64(json.dumps(claims).encode())
    )
    signature = hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    return signing_input + "." + _b64(signature)


def _tamper(token: str, **changes: Any) -> str:
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return ".".join([header, _b64(json.dumps(claims | changes).encode()), signature])


@pytest.fixture
async def victim(create_user: CreateUser) -> User:
    return await create_user()


@pytest.fixture
def hs_app(make_app: Callable[..., FastAPI]) -> FastAPI:
    return make_app(jwt_secret=SECRET)


async def _assert_rejected(app: FastAPI, token: str) -> None:
    async with client_for(app) as client:
        response = await client.get(
            "/api/v1/users/me", headers={"Authorization": f"Bearer {token}"}
        )
    assert_problem(response, 401, "auth.invalid_token")
    assert response.headers["www-authenticate"].startswith('Bearer error="invalid_token"')


async def test_a_well_formed_token_is_accepted(hs_app: FastAPI, victim: User) -> None:
    async with client_for(hs_app) as client:
        response = await client.get(
            "/api/v1/users/me", headers={"Authorization": f"Bearer {_hs256(_claims(victim))}"}
        )
    assert response.status_code == 200  # the baseline every hostile variant departs from


HOSTILE: dict[str, Callable[[User], str]] = {
    "alg none": lambda u: jwt.encode(_claims(u), "", algorithm="none"),
    "expired": lambda u: _hs256(
        _claims(u, iat=int(time.time()) - 3600, exp=int(time.time()) - 120)
    ),
    "not yet valid": lambda u: _hs256(_claims(u, nbf=int(time.time()) + 600)),
    "wrong issuer": lambda u: _hs256(_claims(u, iss="https://evil.example")),
    "wrong audience": lambda u: _hs256(_claims(u, aud="another-api")),
    "missing sub": lambda u: _hs256(_claims(u, sub=None)),
    "missing exp": lambda u: _hs256(_claims(u, exp=None)),
    "tampered payload": lambda u: _tamper(_hs256(_claims(u)), roles=["admin"], sub="someone-else"),
    "other secret": lambda u: _hs256(_claims(u), "another-secret-" + "x" * 40),
    "garbage": lambda u: "not.a.jwt",
    "unknown subject": lambda u: _hs256(_claims(u, sub="00000000-0000-0000-0000-000000000000")),
    "malformed subject": lambda u: _hs256(_claims(u, sub="not-a-uuid")),
}


@pytest.mark.parametrize("case", HOSTILE)
async def test_hostile_token_is_401(hs_app: FastAPI, victim: User, case: str) -> None:
    await _assert_rejected(hs_app, HOSTILE[case](victim))


async def test_expired_and_premature_tokens_say_so(hs_app: FastAPI, victim: User) -> None:
    async with client_for(hs_app) as client:
        expired = await client.get(
            "/api/v1/users/me", headers={"Authorization": f"Bearer {HOSTILE['expired'](victim)}"}
        )
    assert "expired" in expired.headers["www-authenticate"]


async def test_algorithm_confusion_with_our_public_key(
    make_app: Callable[..., FastAPI], victim: User
) -> None:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    app = make_app(jwt_algorithm="RS256", jwt_private_key=pem)
    public_pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    await _assert_rejected(app, _hmac_token(_claims(victim), public_pem))


async def test_deactivated_user_is_401(hs_app: FastAPI, create_user: CreateUser) -> None:
    user = await create_user(is_active=False)
    await _assert_rejected(hs_app, _hs256(_claims(user)))


async def test_revoked_api_key_is_401(
    client: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    created = (
        await client.post("/api/v1/api-keys", json={"name": "k"}, headers=admin_headers)
    ).json()
    await client.delete(f"/api/v1/api-keys/{created['id']}", headers=admin_headers)
    response = await client.get("/api/v1/users/me", headers={"X-API-Key": created["key"]})
    assert_problem(response, 401, "auth.revoked_api_key")


# --- the identity-provider path -------------------------------------------------------------


@pytest.fixture
def idp() -> Iterator[JwksServer]:
    with serve_jwks([SigningKey("idp-1")]) as server:
        yield server


def _idp_settings(idp: JwksServer) -> dict[str, Any]:
    return {
        "oidc_jwks_url": idp.url,
        "oidc_issuer": IDP_ISSUER,
        "oidc_audience": IDP_AUDIENCE,
        "oidc_roles_claim": "realm_access.roles",
        "oidc_jwks_min_refresh_seconds": 60,
    }


@pytest.fixture
def idp_app(make_app: Callable[..., FastAPI], idp: JwksServer) -> FastAPI:
    return make_app(**_idp_settings(idp))


def _idp_claims(sub: str = "idp|42", **changes: Any) -> dict[str, Any]:
    now = int(time.time())
    return {
        "iss": IDP_ISSUER,
        "aud": IDP_AUDIENCE,
        "sub": sub,
        "iat": now,
        "exp": now + 300,
        "email": "Federated@Example.com",
        "realm_access": {"roles": ["user"]},
    } | changes


async def test_unknown_kid_is_401_and_refetches_at_most_once_per_interval(
    idp_app: FastAPI, idp: JwksServer
) -> None:
    stranger = SigningKey("not-published")
    async with client_for(idp_app) as client:
        known = idp.keys[0].sign(_idp_claims())
        assert (
            await client.get("/api/v1/users/me", headers={"Authorization": f"Bearer {known}"})
        ).status_code == 200
        assert idp.fetches == 1
        for _ in range(3):
            response = await client.get(
                "/api/v1/users/me",
                headers={"Authorization": f"Bearer {stranger.sign(_idp_claims())}"},
            )
            assert_problem(response, 401, "auth.invalid_token")
    assert idp.fetches == 2  # one re-fetch for the unknown kid, then none within the interval


async def test_hs256_with_the_idps_public_key_is_401(idp_app: FastAPI, idp: JwksServer) -> None:
    public_pem = (
        idp.keys[0]
        .private.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    await _assert_rejected(idp_app, _hmac_token(_idp_claims(), public_pem))


@pytest.mark.parametrize(
    "changes",
    [{"aud": "someone-else"}, {"exp": int(time.time()) - 600}, {"sub": None}],
    ids=["wrong audience", "expired", "missing sub"],
)
async def test_hostile_idp_tokens_are_401(
    idp_app: FastAPI, idp: JwksServer, changes: dict[str, Any]
) -> None:
    claims = {k: v for k, v in (_idp_claims() | changes).items() if v is not None}
    await _assert_rejected(idp_app, idp.keys[0].sign(claims))


async def test_idp_user_is_linked_on_first_sight_and_owns_items(
    idp_app: FastAPI, idp: JwksServer
) -> None:
    headers = {"Authorization": f"Bearer {idp.keys[0].sign(_idp_claims())}"}
    async with client_for(idp_app) as client:
        first = (await client.get("/api/v1/users/me", headers=headers)).json()
        again = (await client.get("/api/v1/users/me", headers=headers)).json()
        item = await client.post("/api/v1/items", json={"title": "federated"}, headers=headers)
    assert first["id"] == again["id"]
    assert first["email"] == "federated@example.com"
    assert item.json()["owner_id"] == first["id"]


async def test_idp_user_whose_email_is_a_local_accounts_is_linked_without_it(
    idp_app: FastAPI, idp: JwksServer, create_user: CreateUser
) -> None:
    local = await create_user("federated@example.com")
    headers = {"Authorization": f"Bearer {idp.keys[0].sign(_idp_claims())}"}
    async with client_for(idp_app) as client:
        me = await client.get("/api/v1/users/me", headers=headers)
    assert me.status_code == 200
    assert me.json()["email"] is None
    assert me.json()["id"] != str(local.id)


async def test_concurrent_first_requests_of_an_idp_user_link_one_row(
    idp_app: FastAPI, idp: JwksServer
) -> None:
    headers = {"Authorization": f"Bearer {idp.keys[0].sign(_idp_claims('idp|race'))}"}
    async with client_for(idp_app) as client:
        responses = await asyncio.gather(
            *(client.get("/api/v1/users/me", headers=headers) for _ in range(6))
        )
    assert [r.status_code for r in responses] == [200] * 6, [r.text for r in responses]
    assert len({r.json()["id"] for r in responses}) == 1
    async with idp_app.state.sessionmaker() as session:
        linked = await session.scalar(
            select(func.count()).select_from(User).where(User.external_subject == "idp|race")
        )
    assert linked == 1


async def test_roles_come_from_the_configured_claim(idp_app: FastAPI, idp: JwksServer) -> None:
    admin = idp.keys[0].sign(_idp_claims("idp|admin", realm_access={"roles": ["admin", "user"]}))
    user = idp.keys[0].sign(_idp_claims("idp|user", email=None))
    async with client_for(idp_app) as client:
        assert (
            await client.get("/api/v1/users", headers={"Authorization": f"Bearer {admin}"})
        ).status_code == 200
        denied = await client.get("/api/v1/users", headers={"Authorization": f"Bearer {user}"})
    assert_problem(denied, 403)


async def test_key_rotation_is_picked_up(idp_app: FastAPI, idp: JwksServer) -> None:
    async with client_for(idp_app) as client:
        old = idp.keys[0].sign(_idp_claims())
        assert (
            await client.get("/api/v1/users/me", headers={"Authorization": f"Bearer {old}"})
        ).status_code == 200
        rotated = SigningKey("idp-2")
        idp.keys = [rotated]  # the provider rotates: the old key is gone, a new kid appears
        new = rotated.sign(_idp_claims())
        response = await client.get("/api/v1/users/me", headers={"Authorization": f"Bearer {new}"})
    assert response.status_code == 200
    assert idp.fetches == 2


async def test_our_own_tokens_still_work_beside_an_idp(
    idp_app: FastAPI, create_user: CreateUser
) -> None:
    user = await create_user()
    assert user.email
    async with client_for(idp_app) as client:
        headers = await login(client, user.email)
        assert (await client.get("/api/v1/users/me", headers=headers)).status_code == 200


async def test_idp_down_without_cached_keys_is_503(idp_app: FastAPI, idp: JwksServer) -> None:
    idp.available = False
    async with client_for(idp_app) as client:
        response = await client.get(
            "/api/v1/users/me",
            headers={"Authorization": f"Bearer {idp.keys[0].sign(_idp_claims())}"},
        )
    assert_problem(response, 503, "auth.provider_unavailable")


def test_scope_strings_are_roles() -> None:
    from service.auth.jwks import OidcVerifier
    from service.settings import Settings

    verifier = OidcVerifier(
        Settings(
            oidc_jwks_url="http://127.0.0.1:1/jwks",
            oidc_issuer=IDP_ISSUER,
            oidc_audience=IDP_AUDIENCE,
            oidc_roles_claim="scope",
        )
    )
    assert verifier.roles({"scope": "openid admin items:write"}) == {
        "openid",
        "admin",
        "items:write",
    }
    assert verifier.roles({"other": 1}) == set()


# --- token types: only access tokens are access tokens ----------------------------------------


def _id_token_claims(sub: str = "idp|42") -> dict[str, Any]:
    # What an OpenID Connect ID token for our client carries besides the access token's claims.
    return _idp_claims(sub) | {"nonce": "n-0S6_WzA2Mj", "auth_time": int(time.time()) - 5}


def _logout_token_claims() -> dict[str, Any]:
    events: dict[str, Any] = {"http://schemas.openid.net/event/backchannel-logout": {}}
    return _idp_claims() | {"events": events, "jti": "logout-1"}


async def _me_status(app: FastAPI, token: str) -> int:
    async with client_for(app) as client:
        response = await client.get(
            "/api/v1/users/me", headers={"Authorization": f"Bearer {token}"}
        )
    if response.status_code == 401:
        assert_problem(response, 401, "auth.invalid_token")
    return response.status_code


@pytest.mark.parametrize(
    ("typ", "status"),
    [("at+jwt", 200), ("application/at+jwt", 200), ("AT+JWT", 200), ("JWT", 401), (None, 401)],
)
async def test_by_default_only_typed_access_tokens_pass(
    idp_app: FastAPI, idp: JwksServer, typ: str | None, status: int
) -> None:
    token = idp.keys[0].sign(_idp_claims(), typ=typ)
    assert await _me_status(idp_app, token) == status


async def test_an_id_token_is_not_an_access_token(idp_app: FastAPI, idp: JwksServer) -> None:
    # An ID token is typ JWT: refused by type alone.
    assert await _me_status(idp_app, idp.keys[0].sign(_id_token_claims(), typ="JWT")) == 401


@pytest.mark.parametrize("typ", ["logout+jwt", "JWT"])
async def test_a_logout_token_is_not_an_access_token(
    idp_app: FastAPI, idp: JwksServer, typ: str
) -> None:
    assert await _me_status(idp_app, idp.keys[0].sign(_logout_token_claims(), typ=typ)) == 401


@pytest.fixture
def plain_jwt_idp_app(make_app: Callable[..., FastAPI], idp: JwksServer) -> FastAPI:
    """A provider that issues untyped access tokens (Entra ID, Auth0's default profile, ...)."""
    return make_app(**_idp_settings(idp), oidc_token_types="at+jwt,JWT")


async def test_plain_jwt_access_tokens_pass_only_where_settings_say_so(
    plain_jwt_idp_app: FastAPI, idp: JwksServer
) -> None:
    assert await _me_status(plain_jwt_idp_app, idp.keys[0].sign(_idp_claims(), typ="JWT")) == 200
    assert await _me_status(plain_jwt_idp_app, idp.keys[0].sign(_idp_claims(), typ=None)) == 200


@pytest.mark.parametrize(
    "extra",
    [{"nonce": "n-1"}, {"at_hash": "77QmUPtjPfzWtF2AnpK9RQ"}, {"c_hash": "LDktKdoQak3Pk0cnXxCltA"}],
    ids=["nonce", "at_hash", "c_hash"],
)
async def test_with_plain_jwt_allowed_id_tokens_are_still_refused(
    plain_jwt_idp_app: FastAPI, idp: JwksServer, extra: dict[str, str]
) -> None:
    token = idp.keys[0].sign(_idp_claims() | extra, typ="JWT")
    assert await _me_status(plain_jwt_idp_app, token) == 401


async def test_with_plain_jwt_allowed_logout_tokens_are_still_refused(
    plain_jwt_idp_app: FastAPI, idp: JwksServer
) -> None:
    for typ in ("JWT", "logout+jwt"):
        token = idp.keys[0].sign(_logout_token_claims(), typ=typ)
        assert await _me_status(plain_jwt_idp_app, token) == 401


def test_token_types_accept_only_access_token_types() -> None:
    from pydantic import ValidationError

    from service.settings import Settings

    assert Settings(oidc_token_types="application/AT+JWT,JWT").oidc_token_types == [
        "at+jwt",
        "jwt",
    ]
    with pytest.raises(ValidationError, match="logout"):
        Settings(oidc_token_types="at+jwt,logout+jwt")
