"""`python -m benchmarks.principal_lookup`: what one user-row lookup costs the worker, four ways.

The read every authenticated request makes (the principal's user row by id), on a throwaway
migrated database, `--in-flight` lookups at a time as a worker carries them under load:

* `orm`: the service's way today: an autocommit AsyncSession from the service's own engine
  settings, `session.get(User, id)` (SQLAlchemy's greenlet bridge, ORM identity map, a User);
* `core`: a Core `select()` of the same columns, built once, on an autocommit `connect()` of
  the same engine (no Session, no ORM object; still the pool and the greenlet bridge);
  `core_per_call` builds the statement on every call, as a repository method would;
* `raw_on_pool`: asyncpg's `fetchrow` on the driver connection behind a pooled SQLAlchemy
  connection (the pool's checkout and checkin, no statement compilation or result processing);
* `asyncpg`: asyncpg's own pool, as the floor does it.

Client CPU µs (this process's time) and wall µs per lookup, median of `--rounds` interleaved
rounds. Run it pinned like the server: `taskset -c 0 .venv/bin/python -m
benchmarks.principal_lookup`. A diagnosis for the principal's read path, not a target.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
from sqlalchemy import bindparam, select

from service.kit.database import create_engine, create_sessionmaker
from service.settings import Settings
from service.users.models import User
from tests.support.api import seed_loadtest
from tests.support.databases import create_database, drop_database

QUERY = (
    "SELECT id, email, full_name, role, is_active, created_at, updated_at FROM users WHERE id = $1"
)


async def measure(
    lookup: Callable[[uuid.UUID], Awaitable[Any]], user_id: uuid.UUID, n: int, in_flight: int
) -> tuple[float, float]:
    async def worker(count: int) -> None:
        for _ in range(count):
            row = await lookup(user_id)
            assert row is not None

    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker(n // in_flight) for _ in range(in_flight)))
    done = n // in_flight * in_flight
    return 1e6 * (time.process_time() - cpu) / done, 1e6 * (time.perf_counter() - wall) / done


async def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.principal_lookup", description=__doc__)
    p.add_argument("--lookups", type=int, default=4000, help="per measurement (%(default)s)")
    p.add_argument("--in-flight", type=int, default=16, help="(%(default)s)")
    p.add_argument("--rounds", type=int, default=3, help="(%(default)s)")
    opts = p.parse_args(argv)
    name, url = await create_database("lookup")
    try:
        seed_loadtest(url, 1)
        settings = Settings(database_url=url, redis_url=None, app_env="development")
        engine = create_engine(settings)
        read_sessions = create_sessionmaker(engine, read_only=True)
        columns = [
            getattr(User, c) for c in QUERY.split("SELECT ")[1].split(" FROM")[0].split(", ")
        ]
        size = settings.db_pool_size + settings.db_max_overflow
        pool = await asyncpg.create_pool(url.replace("+asyncpg", ""), min_size=1, max_size=size)
        assert pool is not None
        user_id = await pool.fetchval("SELECT id FROM users WHERE email = 'loadtest-0@example.com'")

        async def orm(id_: uuid.UUID) -> Any:
            async with read_sessions() as session:
                return await session.get(User, id_)

        autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")  # as reads run
        statement = select(*columns).where(User.id == bindparam("id"))

        async def core(id_: uuid.UUID) -> Any:
            async with autocommit.connect() as connection:
                result = await connection.execute(statement, {"id": id_})
                return result.first()

        async def core_per_call(id_: uuid.UUID) -> Any:
            async with autocommit.connect() as connection:
                result = await connection.execute(select(*columns).where(User.id == id_))
                return result.first()

        async def raw_on_pool(id_: uuid.UUID) -> Any:
            async with autocommit.connect() as connection:
                raw = await connection.get_raw_connection()
                return await raw.driver_connection.fetchrow(QUERY, id_)  # type: ignore[union-attr]

        async def floor(id_: uuid.UUID) -> Any:
            return await pool.fetchrow(QUERY, id_)

        ways = {
            "orm": orm,
            "core": core,
            "core_per_call": core_per_call,
            "raw_on_pool": raw_on_pool,
            "asyncpg": floor,
        }
        figures: dict[str, list[tuple[float, float]]] = {k: [] for k in ways}
        for way in ways.values():  # warm-up: connections, statement caches
            await measure(way, user_id, 400, opts.in_flight)
        for _ in range(opts.rounds):
            for label, way in ways.items():
                figures[label].append(await measure(way, user_id, opts.lookups, opts.in_flight))
        await pool.close()
        await engine.dispose()
    finally:
        await drop_database(name)
    print(f"| lookup | CPU µs per lookup | wall µs per lookup | in flight: {opts.in_flight} |")
    print("|---|---:|---:|---|")
    for label, values in figures.items():
        cpu = statistics.median(v[0] for v in values)
        wall = statistics.median(v[1] for v in values)
        rounds = ", ".join(f"{v[0]:.0f}" for v in values)
        print(f"| {label} | {cpu:.0f} | {wall:.0f} | CPU per round: {rounds} |")


if __name__ == "__main__":
    asyncio.run(main())
