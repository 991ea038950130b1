"""Case 1 — saturation: mixed read/write load on the production server (2 workers, real
PostgreSQL and Redis) for a fixed time; no 5xx, and the database holds exactly the items the
clients were told were created (and not deleted)."""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass, field

import asyncpg
import httpx
import pytest

from tests.reliability.conftest import (
    GENEROUS_LIMITS,
    Servers,
    login,
    record_figures,
    scaled,
    seed_users,
    user_email,
)
from tests.reliability.load import Load, not_problem_json, server_errors, summarize
from tests.support.databases import REDIS_URL

USERS = 8
CONCURRENCY = 32
DURATION = scaled(20, 120)

pytestmark = pytest.mark.timeout(int(scaled(120, 400)))


@dataclass
class Ledger:
    """What the clients were told, per item title (titles are unique)."""

    created: dict[str, str] = field(default_factory=dict)  # title -> id, from a 201
    failed: set[str] = field(default_factory=set)  # titles whose POST got anything else
    deleted: set[str] = field(default_factory=set)  # ids whose DELETE got 204
    owned: dict[int, list[str]] = field(default_factory=dict)  # user -> ids, for reads


async def test_mixed_load_loses_nothing_and_serves_no_5xx(
    database_url: str, servers: Servers
) -> None:
    seed_users(database_url, USERS)
    server = servers.start(
        {"DATABASE_URL": database_url, "REDIS_URL": REDIS_URL, **GENEROUS_LIMITS}, workers=2
    )
    ledger = Ledger()
    rng = random.Random(8)
    limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
    async with httpx.AsyncClient(base_url=server.base_url, timeout=30, limits=limits) as client:
        auth = [await login(client, user_email(i)) for i in range(USERS)]
        load = Load(client)

        async def step(load: Load, loop: int) -> None:
            user = loop % USERS
            headers = auth[user]
            mine = ledger.owned.setdefault(user, [])
            roll = rng.random()
            if roll < 0.40 or not mine:
                title = f"sat-{uuid.uuid4().hex}"
                response = await load.request(
                    "POST",
                    "/api/v1/items",
                    json={"title": title, "description": "x" * rng.randrange(0, 500)},
                    headers=headers,
                )
                if response is not None and response.status_code == 201:
                    ledger.created[title] = response.json()["id"]
                    mine.append(response.json()["id"])
                else:
                    ledger.failed.add(title)
            elif roll < 0.70:
                await load.request("GET", "/api/v1/items", params={"limit": 20}, headers=headers)
            elif roll < 0.88:
                await load.request(
                    "GET",
                    f"/api/v1/items/{rng.choice(mine)}",
                    route="/api/v1/items/{id}",
                    headers=headers,
                )
            elif roll < 0.96:
                await load.request(
                    "PATCH",
                    f"/api/v1/items/{rng.choice(mine)}",
                    route="/api/v1/items/{id}",
                    json={"description": "patched"},
                    headers=headers,
                )
            else:
                item_id = mine.pop(rng.randrange(len(mine)))
                response = await load.request(
                    "DELETE",
                    f"/api/v1/items/{item_id}",
                    route="/api/v1/items/{id}",
                    headers=headers,
                )
                if response is not None and response.status_code == 204:
                    ledger.deleted.add(item_id)

        await load.run(step, concurrency=CONCURRENCY, duration=DURATION)

    conn = await asyncpg.connect(database_url.replace("+asyncpg", ""))
    try:
        rows = await conn.fetch("SELECT id::text AS id, title FROM items")
    finally:
        await conn.close()
    in_db = {row["title"]: row["id"] for row in rows}
    expected = {t: i for t, i in ledger.created.items() if i not in ledger.deleted}

    figures = summarize(load.samples)
    record_figures(
        "saturation",
        {
            "command": "pytest tests/reliability/test_saturation.py",
            "workers": 2,
            "concurrency": CONCURRENCY,
            "duration_s": DURATION,
            "mix": "40% POST item, 30% GET list, 18% GET item, 8% PATCH, 4% DELETE",
            **figures,
            "items_created_201": len(ledger.created),
            "items_deleted_204": len(ledger.deleted),
            "posts_failed": len(ledger.failed),
            "items_in_database": len(in_db),
            "missing_from_database": len(set(expected) - set(in_db)),
            "unexpected_in_database": len(set(in_db) - set(expected)),
        },
    )
    assert server_errors(load.samples) == [], figures["by_status"]
    assert not_problem_json(load.samples) == []
    assert ledger.created, "the load created nothing"
    # Nothing lost, nothing invented: the database holds exactly what got 201 and no 204.
    assert in_db == expected
    assert not ledger.failed & set(in_db)
