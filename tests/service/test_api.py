"""Users, items, API keys and tiers through the HTTP API, including role escalation attempts."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable

import httpx
import pytest
from fastapi import FastAPI

from service.users.models import Role
from tests.service.conftest import CreateUser, assert_problem, client_for, login


async def _item(client: httpx.AsyncClient, headers: dict[str, str], title: str = "thing") -> str:
    response = await client.post("/api/v1/items", json={"title": title}, headers=headers)
    assert response.status_code == 201, response.text
    item_id: str = response.json()["id"]
    return item_id


# --- items ----------------------------------------------------------------------------------


async def test_item_lifecycle(client: httpx.AsyncClient, user_headers: dict[str, str]) -> None:
    item_id = await _item(client, user_headers, "draft")
    got = await client.get(f"/api/v1/items/{item_id}", headers=user_headers)
    assert got.json()["title"] == "draft"
    patched = await client.patch(
        f"/api/v1/items/{item_id}", json={"description": "more"}, headers=user_headers
    )
    assert patched.json() | {} == got.json() | {
        "description": "more",
        "updated_at": patched.json()["updated_at"],
    }
    assert (
        await client.delete(f"/api/v1/items/{item_id}", headers=user_headers)
    ).status_code == 204
    assert_problem(
        await client.get(f"/api/v1/items/{item_id}", headers=user_headers), 404, "item.not_found"
    )


async def test_another_users_item_is_not_found(
    client: httpx.AsyncClient, user_headers: dict[str, str], create_user: CreateUser
) -> None:
    item_id = await _item(client, user_headers)
    intruder = await create_user()
    assert intruder.email
    other = await login(client, intruder.email)
    url = f"/api/v1/items/{item_id}"
    assert_problem(await client.get(url, headers=other), 404, "item.not_found")
    assert_problem(await client.patch(url, json={"title": "mine"}, headers=other), 404)
    assert_problem(await client.delete(url, headers=other), 404)
    assert (await client.get("/api/v1/items", headers=other)).json()["total"] == 0
    assert (await client.get(url, headers=user_headers)).json()["title"] == "thing"  # untouched


async def test_listing_pages_through_own_items(
    client: httpx.AsyncClient, user_headers: dict[str, str]
) -> None:
    for i in range(5):
        await _item(client, user_headers, f"item {i}")
    first = (await client.get("/api/v1/items?limit=2", headers=user_headers)).json()
    last = (await client.get("/api/v1/items?limit=2&offset=4", headers=user_headers)).json()
    assert (first["total"], first["limit"], first["offset"], len(first["items"])) == (5, 2, 0, 2)
    assert len(last["items"]) == 1
    assert first["items"][0]["title"] == "item 4"  # newest first


async def test_page_size_is_bounded_by_settings(
    make_app: Callable[..., FastAPI], create_user: CreateUser
) -> None:
    app = make_app(page_size_max=10, page_size_default=5)
    user = await create_user()
    assert user.email
    async with client_for(app) as client:
        headers = await login(client, user.email)
        body = assert_problem(await client.get("/api/v1/items?limit=11", headers=headers), 422)
        assert body["errors"][0]["loc"] == ["query", "limit"]
        assert (await client.get("/api/v1/items", headers=headers)).json()["limit"] == 5


async def test_admins_list_everyones_items_and_users_cannot(
    client: httpx.AsyncClient,
    user_headers: dict[str, str],
    admin_headers: dict[str, str],
) -> None:
    item_id = await _item(client, user_headers)
    owner_id = (await client.get("/api/v1/users/me", headers=user_headers)).json()["id"]
    everyone = (await client.get("/api/v1/items?all=true", headers=admin_headers)).json()
    by_owner = (
        await client.get(f"/api/v1/items?owner_id={owner_id}", headers=admin_headers)
    ).json()
    assert [i["id"] for i in everyone["items"]] == [item_id]
    assert [i["id"] for i in by_owner["items"]] == [item_id]
    assert (await client.get("/api/v1/items", headers=admin_headers)).json()["total"] == 0  # own
    assert_problem(await client.get("/api/v1/items?all=true", headers=user_headers), 403)
    assert (await client.get(f"/api/v1/items/{item_id}", headers=admin_headers)).status_code == 200


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"title": "x" * 201}, 422),
        ({"title": "ok", "owner_id": str(uuid.uuid4())}, 422),  # cannot choose the owner
        ({"title": ["not", "a", "string"]}, 422),
        ({}, 422),
    ],
)
async def test_bad_item_bodies(
    client: httpx.AsyncClient, user_headers: dict[str, str], body: dict[str, object], status: int
) -> None:
    assert_problem(await client.post("/api/v1/items", json=body, headers=user_headers), status)


async def test_malformed_json_is_422(
    client: httpx.AsyncClient, user_headers: dict[str, str]
) -> None:
    response = await client.post(
        "/api/v1/items",
        content=b'{"title": "unterminated',
        headers=user_headers | {"content-type": "application/json"},
    )
    assert_problem(response, 422, "request.validation_failed")


# --- users and roles ------------------------------------------------------------------------


async def test_a_user_cannot_reach_admin_routes(
    client: httpx.AsyncClient, user_headers: dict[str, str]
) -> None:
    someone = str(uuid.uuid4())
    attempts = [
        client.get("/api/v1/users", headers=user_headers),
        client.post(
            "/api/v1/users",
            json={"email": "e@x.io", "password": "password-1"},
            headers=user_headers,
        ),
        client.patch(f"/api/v1/users/{someone}", json={"role": "admin"}, headers=user_headers),
        client.delete(f"/api/v1/users/{someone}", headers=user_headers),
        client.post("/api/v1/api-keys", json={"name": "k"}, headers=user_headers),
        client.get("/api/v1/api-keys", headers=user_headers),
        client.post(
            "/api/v1/rate-limit-tiers",
            json={"name": "t", "limit": "1/second"},
            headers=user_headers,
        ),
    ]
    for attempt in attempts:
        assert_problem(await attempt, 403, "auth.role_required")


async def test_a_user_cannot_set_their_own_role(
    client: httpx.AsyncClient, user_headers: dict[str, str]
) -> None:
    response = await client.patch(
        "/api/v1/users/me", json={"role": "admin", "is_active": True}, headers=user_headers
    )
    body = assert_problem(response, 422)
    assert {tuple(e["loc"]) for e in body["errors"]} == {("body", "role"), ("body", "is_active")}
    assert (await client.get("/api/v1/users/me", headers=user_headers)).json()["role"] == "user"


async def test_admin_manages_users(
    client: httpx.AsyncClient, admin_headers: dict[str, str], create_user: CreateUser
) -> None:
    target = await create_user()
    assert target.email
    target_headers = await login(client, target.email)
    promoted = await client.patch(
        f"/api/v1/users/{target.id}", json={"role": "admin"}, headers=admin_headers
    )
    assert promoted.json()["role"] == "admin"
    # The stored role applies at once, even to a token issued before the promotion.
    assert (await client.get("/api/v1/users", headers=target_headers)).status_code == 200
    page = (await client.get("/api/v1/users?limit=1", headers=admin_headers)).json()
    assert (page["total"], len(page["items"])) == (2, 1)

    assert (
        await client.delete(f"/api/v1/users/{target.id}", headers=admin_headers)
    ).status_code == 204
    assert_problem(
        await client.get("/api/v1/users/me", headers=target_headers), 401, "auth.invalid_token"
    )
    assert_problem(
        await client.patch(
            f"/api/v1/users/{uuid.uuid4()}", json={"role": "user"}, headers=admin_headers
        ),
        404,
        "user.not_found",
    )


async def test_admins_cannot_lock_themselves_out(
    client: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    me = (await client.get("/api/v1/users/me", headers=admin_headers)).json()["id"]
    for attempt in (
        client.patch(f"/api/v1/users/{me}", json={"role": "user"}, headers=admin_headers),
        client.patch(f"/api/v1/users/{me}", json={"is_active": False}, headers=admin_headers),
        client.delete(f"/api/v1/users/{me}", headers=admin_headers),
    ):
        assert_problem(await attempt, 409, "user.self_lockout")


# --- API keys and tiers -----------------------------------------------------------------------


async def _new_key(
    client: httpx.AsyncClient, admin_headers: dict[str, str], **body: object
) -> dict[str, str]:
    response = await client.post(
        "/api/v1/api-keys", json={"name": "ci"} | body, headers=admin_headers
    )
    assert response.status_code == 201, response.text
    created: dict[str, str] = response.json()
    return created


async def test_api_key_is_shown_once_and_authenticates(
    client: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    created = await _new_key(client, admin_headers, role="user")
    assert created["key"].startswith(f"bpk_{created['prefix']}_")
    listed = (await client.get("/api/v1/api-keys", headers=admin_headers)).json()["items"]
    assert [k["id"] for k in listed] == [created["id"]]
    assert "key" not in listed[0]
    as_key = {"X-API-Key": created["key"]}
    me = await client.get("/api/v1/users/me", headers=as_key)
    assert me.status_code == 200
    # The key's role applies, not its creator's.
    assert_problem(await client.get("/api/v1/users", headers=as_key), 403)


async def test_revoked_unknown_and_malformed_keys_are_401(
    client: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    created = await _new_key(client, admin_headers)
    assert (
        await client.delete(f"/api/v1/api-keys/{created['id']}", headers=admin_headers)
    ).status_code == 204
    revoked = await client.get("/api/v1/users/me", headers={"X-API-Key": created["key"]})
    assert_problem(revoked, 401, "auth.revoked_api_key")
    tampered = created["key"][:-4] + "AAAA"
    for key in (tampered, f"bpk_{'0' * 12}_secret", "not-a-key", "bpk__"):
        assert_problem(await client.get("/api/v1/users/me", headers={"X-API-Key": key}), 401)


async def test_admin_defined_tiers(
    client: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    tier = await client.post(
        "/api/v1/rate-limit-tiers",
        json={"name": "partner", "limit": "5000/minute"},
        headers=admin_headers,
    )
    assert tier.status_code == 201
    duplicate = await client.post(
        "/api/v1/rate-limit-tiers",
        json={"name": "partner", "limit": "1/second"},
        headers=admin_headers,
    )
    assert_problem(duplicate, 409, "tier.name_taken")
    for bad in ({"name": "exempt", "limit": "1/second"}, {"name": "x", "limit": "lots"}):
        assert_problem(
            await client.post("/api/v1/rate-limit-tiers", json=bad, headers=admin_headers), 422
        )
    assert (await _new_key(client, admin_headers, tier="partner"))["tier"] == "partner"
    assert (await _new_key(client, admin_headers, tier="exempt"))["tier"] == "exempt"
    unknown = await client.post(
        "/api/v1/api-keys", json={"name": "k", "tier": "gold"}, headers=admin_headers
    )
    assert_problem(unknown, 422)


async def test_deactivating_a_keys_creator_disables_the_key(
    client: httpx.AsyncClient, create_user: CreateUser, admin_headers: dict[str, str]
) -> None:
    other_admin = await create_user(role=Role.admin)
    assert other_admin.email
    key = (await _new_key(client, await login(client, other_admin.email)))["key"]
    await client.delete(f"/api/v1/users/{other_admin.id}", headers=admin_headers)
    assert_problem(await client.get("/api/v1/users/me", headers={"X-API-Key": key}), 401)


@pytest.mark.parametrize("text", ["nul\x00byte", "lone \ud800 surrogate"], ids=["nul", "surrogate"])
async def test_text_no_database_can_store_is_422_not_500(
    client: httpx.AsyncClient, admin_headers: dict[str, str], text: str
) -> None:
    response = await client.post(
        "/api/v1/users",
        content=json.dumps(
            {"email": "t@example.com", "password": "password-123", "full_name": text}
        ),
        headers=admin_headers | {"content-type": "application/json"},
    )
    body = assert_problem(response, 422)
    assert body["errors"][0]["loc"] == ["body", "full_name"]


# --- what an API key acts as ------------------------------------------------------------------


async def test_a_demoted_admins_key_loses_its_admin_power(
    client: httpx.AsyncClient, create_user: CreateUser, admin_headers: dict[str, str]
) -> None:
    minter = await create_user(role=Role.admin)
    assert minter.email
    key = (await _new_key(client, await login(client, minter.email), role="admin"))["key"]
    as_key = {"X-API-Key": key}
    assert (await client.get("/api/v1/users", headers=as_key)).status_code == 200
    demoted = await client.patch(
        f"/api/v1/users/{minter.id}", json={"role": "user"}, headers=admin_headers
    )
    assert demoted.status_code == 200
    # The key's stored role is admin, but never more than its creator's current role.
    assert_problem(await client.get("/api/v1/users", headers=as_key), 403, "auth.role_required")
    assert (await client.get("/api/v1/users/me", headers=as_key)).json()["role"] == "user"


async def test_a_key_acts_as_its_own_account_never_as_its_creator(
    client: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    admin_id = (await client.get("/api/v1/users/me", headers=admin_headers)).json()["id"]
    admins_item = await _item(client, admin_headers, "the admin's")
    created = await _new_key(client, admin_headers, role="user")
    as_key = {"X-API-Key": created["key"]}
    me = (await client.get("/api/v1/users/me", headers=as_key)).json()
    assert me["id"] != admin_id
    # The creator's items are out of reach...
    assert_problem(await client.get(f"/api/v1/items/{admins_item}", headers=as_key), 404)
    assert_problem(await client.delete(f"/api/v1/items/{admins_item}", headers=as_key), 404)
    assert (await client.get(f"/api/v1/items/{admins_item}", headers=admin_headers)).is_success
    # ...and what the key creates is its own account's.
    own = await client.post("/api/v1/items", json={"title": "the key's"}, headers=as_key)
    assert own.json()["owner_id"] == me["id"]
    listed = (await client.get("/api/v1/items", headers=as_key)).json()["items"]
    assert [i["title"] for i in listed] == ["the key's"]
    assert me["id"] == created["service_user_id"]
    assert me["email"] is None


async def test_a_key_cannot_mint_keys(
    client: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    admin_key = {"X-API-Key": (await _new_key(client, admin_headers, role="admin"))["key"]}
    response = await client.post("/api/v1/api-keys", json={"name": "child"}, headers=admin_key)
    assert_problem(response, 403, "api_key.minted_by_key")


async def test_deactivating_a_keys_account_disables_the_key(
    client: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    created = await _new_key(client, admin_headers)
    await client.delete(f"/api/v1/users/{created['service_user_id']}", headers=admin_headers)
    response = await client.get("/api/v1/users/me", headers={"X-API-Key": created["key"]})
    assert_problem(response, 401, "auth.invalid_api_key")


async def test_a_key_minted_before_service_accounts_is_linked_on_first_use(
    client: httpx.AsyncClient, app: FastAPI, create_user: CreateUser
) -> None:
    """The release before migration 0002 inserts keys without an account; concurrent first
    requests (reads) link exactly one."""
    from sqlalchemy import func, select

    from service.api_keys import secrets as key_secrets
    from service.api_keys.models import ApiKey
    from service.users.models import User

    creator = await create_user(role=Role.admin)
    secret, prefix, secret_hash = key_secrets.new_key()
    async with app.state.sessionmaker() as session, session.begin():
        session.add(
            ApiKey(name="old", prefix=prefix, secret_hash=secret_hash, created_by_id=creator.id)
        )
    responses = [
        await asyncio.gather(
            *(client.get("/api/v1/users/me", headers={"X-API-Key": secret}) for _ in range(4))
        )
    ][0]
    assert [r.status_code for r in responses] == [200] * 4, [r.text for r in responses]
    assert len({r.json()["id"] for r in responses}) == 1
    assert responses[0].json()["id"] != str(creator.id)
    async with app.state.sessionmaker() as session:
        key = await session.scalar(select(ApiKey).where(ApiKey.prefix == prefix))
        accounts = await session.scalar(select(func.count()).select_from(User))
    assert key is not None
    assert str(key.service_user_id) == responses[0].json()["id"]
    assert accounts == 2  # the creator and the key's account


async def test_null_leaves_a_field_as_it_is(
    client: httpx.AsyncClient, user_headers: dict[str, str], admin_headers: dict[str, str]
) -> None:
    """Every user column is NOT NULL: a null in a PATCH means "no change", never a 422 (or the
    409 a NOT NULL violation used to be)."""
    me = await client.patch("/api/v1/users/me", json={"full_name": "Kept"}, headers=user_headers)
    nulled = await client.patch("/api/v1/users/me", json={"full_name": None}, headers=user_headers)
    assert nulled.status_code == 200, nulled.text
    assert nulled.json()["full_name"] == "Kept"
    by_admin = await client.patch(
        f"/api/v1/users/{me.json()['id']}",
        json={"full_name": None, "role": None, "is_active": None},
        headers=admin_headers,
    )
    assert by_admin.status_code == 200, by_admin.text
    assert by_admin.json()["role"] == "user"
