"""The engine and the per-request session (a transaction for writes, none for reads)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, Request
from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from service.settings import Settings


def create_engine(settings: Settings) -> AsyncEngine:
    url = make_url(settings.database_url.get_secret_value())
    options: dict[str, Any] = {"echo": settings.db_echo, "pool_pre_ping": settings.db_pool_pre_ping}
    if url.get_backend_name() == "sqlite":
        if url.database and url.database != ":memory:":
            Path(url.database).parent.mkdir(parents=True, exist_ok=True)
        options["connect_args"] = {"timeout": settings.db_connect_timeout}
    else:
        options |= {
            "pool_size": settings.db_pool_size,
            "max_overflow": settings.db_max_overflow,
            "pool_timeout": settings.db_pool_timeout,
            "pool_recycle": settings.db_pool_recycle,
            "connect_args": {
                "timeout": settings.db_connect_timeout,
                "command_timeout": settings.db_command_timeout,
                "server_settings": {"application_name": settings.app_name},
            },
        }
    engine = create_async_engine(url, **options)
    if url.get_backend_name() == "sqlite":
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
    return engine


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # SQLite enforces foreign keys only when asked, per connection; WAL lets readers and one
    # writer work at once.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.close()


def create_sessionmaker(
    engine: AsyncEngine, *, autocommit: bool = False
) -> async_sessionmaker[AsyncSession]:
    """Sessions in a transaction, or (autocommit) sessions that send no BEGIN and no COMMIT:
    each statement commits on its own. The autocommit engine shares the same pool."""
    if autocommit:
        engine = engine.execution_options(isolation_level="AUTOCOMMIT")
    # expire_on_commit=False: the response is serialised from objects after the commit.
    return async_sessionmaker(engine, expire_on_commit=False, autoflush=False)


# Requests that only read. Under READ COMMITTED (the default) every statement takes its own
# snapshot inside a transaction or not, so a transaction buys a reader nothing but the BEGIN
# and COMMIT round trips: an authenticated GET makes one round trip instead of three.
READ_ONLY_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    """One session per request: commit on success, roll back on any error, always close.

    Used with scope="function" (see SessionDep), so the commit runs before the response is
    sent: a failure at commit time becomes the error response, never a 200 with lost data.
    Read-only methods get an autocommit session (see READ_ONLY_METHODS); a write on it would
    commit at once, so they must not write (an idempotent insert is the one exception: linking
    an identity provider's user on first sight).
    """
    state = request.app.state
    sessionmaker: async_sessionmaker[AsyncSession] = (
        state.read_sessionmaker if request.method in READ_ONLY_METHODS else state.sessionmaker
    )
    async with sessionmaker() as session:
        try:
            yield session
            await session.commit()
        except BaseException:
            await session.rollback()
            raise


SessionDep = Annotated[AsyncSession, Depends(get_session, scope="function")]
