"""One session per request: commit on success, roll back on any error, and a failure at
commit time becomes the error response (never a 200 with lost data)."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select

from service.items.models import Item
from service.kit.database import SessionDep
from service.users.models import User
from tests.service.conftest import CreateUser, assert_problem, client_for


async def _count(app: FastAPI, model: type[User] | type[Item]) -> int:
    async with app.state.sessionmaker() as session:
        return int(await session.scalar(select(func.count()).select_from(model)) or 0)


async def test_an_error_after_a_write_leaves_nothing_behind(
    app: FastAPI, create_user: CreateUser
) -> None:
    owner = await create_user()

    async def write_then_fail(session: SessionDep) -> dict[str, str]:
        session.add(Item(owner_id=owner.id, title="half-written"))
        await session.flush()  # the row is in the transaction...
        raise RuntimeError("boom")  # ...and the request fails afterwards

    app.add_api_route("/test/write-then-fail", write_then_fail, methods=["POST"])
    async with client_for(app) as client:
        response = await client.post("/test/write-then-fail")
    body = assert_problem(response, 500, "internal")
    assert "boom" not in response.text
    assert body["detail"] == "An unexpected error occurred."
    assert await _count(app, Item) == 0


async def test_a_failure_at_commit_time_becomes_the_response(
    app: FastAPI, create_user: CreateUser
) -> None:
    existing = await create_user("taken@example.com")

    async def insert_at_commit(session: SessionDep) -> dict[str, str]:
        # No flush: the INSERT (and its unique violation) happens only at commit.
        session.add(User(email="TAKEN@example.com", hashed_password="x"))
        return {"status": "looks fine"}

    app.add_api_route("/test/insert-at-commit", insert_at_commit, methods=["POST"])
    async with client_for(app) as client:
        response = await client.post("/test/insert-at-commit")
    assert_problem(response, 409, "user.email_taken")
    assert await _count(app, User) == 1
    assert existing.email == "taken@example.com"


async def test_success_commits(
    client: httpx.AsyncClient, app: FastAPI, user_headers: dict[str, str]
) -> None:
    response = await client.post("/api/v1/items", json={"title": "kept"}, headers=user_headers)
    assert response.status_code == 201
    assert await _count(app, Item) == 1


async def test_concurrent_creates_of_one_email_give_one_201_and_one_409(
    client: httpx.AsyncClient, admin_headers: dict[str, str], app: FastAPI
) -> None:
    email = f"race-{uuid.uuid4().hex[:6]}@example.com"
    bodies = [
        {"email": email, "password": "password-123"},
        {"email": email.upper(), "password": "password-456"},
    ]
    responses = await asyncio.gather(
        *(client.post("/api/v1/users", json=b, headers=admin_headers) for b in bodies)
    )
    assert sorted(r.status_code for r in responses) == [201, 409]
    conflict = next(r for r in responses if r.status_code == 409)
    assert_problem(conflict, 409, "user.email_taken")
    assert await _count(app, User) == 2  # the admin and one new user


async def test_a_value_the_database_cannot_hold_is_422(app: FastAPI, database_url: str) -> None:
    if not database_url.startswith("postgresql"):
        return  # SQLite stores NUL characters
    from sqlalchemy import text

    async def store_nul(session: SessionDep) -> dict[str, str]:
        await session.execute(text("SELECT CAST(:v AS text)"), {"v": "a\x00b"})
        return {"status": "stored"}

    app.add_api_route("/test/store-nul", store_nul, methods=["POST"])
    async with client_for(app) as client:
        response = await client.post("/test/store-nul")
    assert_problem(response, 422, "request.invalid_data")


async def test_reads_run_outside_a_transaction_and_writes_inside_one(
    app: FastAPI, database_url: str
) -> None:
    if not database_url.startswith("postgresql"):
        return  # SQLite's driver opens no transaction for a SELECT in either mode

    async def in_transaction(session: SessionDep) -> dict[str, bool]:
        await session.execute(select(1))
        raw = await (await session.connection()).get_raw_connection()
        return {"in_transaction": raw.driver_connection.is_in_transaction()}  # type: ignore[union-attr]

    app.add_api_route("/test/in-transaction", in_transaction, methods=["GET", "POST"])
    async with client_for(app) as client:
        read = await client.get("/test/in-transaction")
        write = await client.post("/test/in-transaction")
    # A GET pays no BEGIN and COMMIT round trips; a POST's statements commit or roll back as one.
    assert read.json() == {"in_transaction": False}
    assert write.json() == {"in_transaction": True}


async def test_a_read_request_cannot_write(app: FastAPI, create_user: CreateUser) -> None:
    """GETs run in autocommit: a write there would commit at once and survive the error that
    follows. The read session refuses it instead."""
    from sqlalchemy import insert

    owner = await create_user()

    async def flush_on_a_read(session: SessionDep) -> dict[str, str]:
        session.add(Item(owner_id=owner.id, title="written by a GET"))
        await session.flush()
        return {"status": "wrote"}

    async def insert_on_a_read(session: SessionDep) -> dict[str, str]:
        await session.execute(insert(Item).values(id=uuid.uuid4(), owner_id=owner.id, title="x"))
        return {"status": "wrote"}

    app.add_api_route("/test/flush-on-read", flush_on_a_read, methods=["GET"])
    app.add_api_route("/test/insert-on-read", insert_on_a_read, methods=["GET"])
    async with client_for(app) as client:
        for path in ("/test/flush-on-read", "/test/insert-on-read"):
            assert_problem(await client.get(path), 500, "internal")
    assert await _count(app, Item) == 0


async def test_a_read_session_raises_on_flush(app: FastAPI, create_user: CreateUser) -> None:
    from service.kit.database import ReadOnlySessionError

    owner = await create_user()
    async with app.state.read_sessionmaker() as session:
        assert await session.get(User, owner.id) is not None  # reading is what it is for
        session.add(Item(owner_id=owner.id, title="no"))
        with pytest.raises(ReadOnlySessionError):
            await session.flush()


async def test_an_edit_racing_a_delete_is_a_404_not_a_500(
    client: httpx.AsyncClient, user_headers: dict[str, str], database_url: str
) -> None:
    """The PATCH reads the item while a DELETE of it is uncommitted, then the DELETE commits:
    the edit must see the item gone (404), not update a row that no longer exists (500)."""
    if not database_url.startswith("postgresql"):
        pytest.skip("row locks: PostgreSQL")
    created = await client.post("/api/v1/items", json={"title": "contested"}, headers=user_headers)
    item_id = created.json()["id"]
    deleter = await asyncpg.connect(database_url.replace("+asyncpg", ""))
    try:
        async with deleter.transaction():
            await deleter.execute("DELETE FROM items WHERE id = $1", uuid.UUID(item_id))
            edit = asyncio.create_task(
                client.patch(
                    f"/api/v1/items/{item_id}", json={"title": "edited"}, headers=user_headers
                )
            )
            await asyncio.sleep(0.5)  # the edit has read the row and waits on its lock
        response = await edit
    finally:
        await deleter.close()
    assert_problem(response, 404, "item.not_found")
