"""The engine and the sessions: a transaction per write request, a write-refusing autocommit
session per read request, and short sessions for work that must not hold a connection while it
waits on something else (Argon2, the identity provider)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
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
from sqlalchemy.orm import ORMExecuteState, Session

from service.settings import Settings


def create_engine(settings: Settings) -> AsyncEngine:
    url = make_url(settings.database_url.get_secret_value())
    options: dict[str, Any] = {
        "echo": settings.db_echo,
        "pool_pre_ping": settings.db_pool_pre_ping,
        # Bound values (password hashes, emails) never appear in an exception's text, so no
        # log line or traceback can carry them.
        "hide_parameters": True,
    }
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


class ReadOnlySessionError(RuntimeError):
    """A write attempted on a read session: a bug in the route, never the client's fault."""


class ReadOnlySession(Session):
    """The session of a read request. It runs in autocommit (no BEGIN/COMMIT round trips), so a
    write would commit at once and survive a later error: it refuses flushes with pending
    changes and INSERT/UPDATE/DELETE statements instead."""

    def flush(self, objects: Any = None) -> None:
        if self.new or self.dirty or self.deleted:
            raise ReadOnlySessionError("a read session cannot write; use a write transaction")
        super().flush(objects)


@event.listens_for(ReadOnlySession, "do_orm_execute")
def _refuse_dml(state: ORMExecuteState) -> None:
    if state.is_insert or state.is_update or state.is_delete:
        raise ReadOnlySessionError("a read session cannot write; use a write transaction")


def create_sessionmaker(
    engine: AsyncEngine, *, read_only: bool = False
) -> async_sessionmaker[AsyncSession]:
    """Sessions in a transaction, or (read_only) autocommit sessions that send no BEGIN and no
    COMMIT and refuse writes. Both share the engine's pool."""
    # expire_on_commit=False: the response is serialised from objects after the commit.
    if read_only:
        return async_sessionmaker(
            engine.execution_options(isolation_level="AUTOCOMMIT"),
            expire_on_commit=False,
            autoflush=False,
            sync_session_class=ReadOnlySession,
        )
    return async_sessionmaker(engine, expire_on_commit=False, autoflush=False)


@dataclass(frozen=True, slots=True)
class Sessions:
    """Short sessions for the service layer: `reading()` (autocommit, refuses writes) and
    `writing()` (one transaction, committed when the block ends). Each holds a pooled
    connection only from its first statement to its end."""

    read: async_sessionmaker[AsyncSession]
    write: async_sessionmaker[AsyncSession]

    def reading(self) -> AsyncSession:
        return self.read()

    def writing(self) -> AbstractAsyncContextManager[AsyncSession]:
        return self.write.begin()


def sessions_of(request: Request) -> Sessions:
    state = request.app.state
    return Sessions(read=state.read_sessionmaker, write=state.sessionmaker)


# Requests that only read. Under READ COMMITTED (the default) every statement takes its own
# snapshot inside a transaction or not, so a transaction buys a reader nothing but the BEGIN
# and COMMIT round trips: an authenticated GET makes one round trip instead of three.
READ_ONLY_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    """One session per request: commit on success, roll back on any error, always close.

    Used with scope="function" (see SessionDep), so the commit runs before the response is
    sent: a failure at commit time becomes the error response, never a 200 with lost data.
    Read-only methods get a read session (see READ_ONLY_METHODS, ReadOnlySession); the few
    reads that must write (linking an identity provider's user on first sight) open their own
    short write transaction.
    """
    state = request.app.state
    if request.method in READ_ONLY_METHODS:
        async with state.read_sessionmaker() as session:
            yield session
        return
    async with state.sessionmaker() as session:
        try:
            yield session
            await session.commit()
        except BaseException:
            await session.rollback()
            raise


SessionDep = Annotated[AsyncSession, Depends(get_session, scope="function")]
