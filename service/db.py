"""Engine, ORM base, the per-request session and the generic repository."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Generic, TypeVar

from fastapi import Depends, Request
from sqlalchemy import DateTime, Dialect, MetaData, Select, event, func, select
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

from service.settings import Settings

# Predictable constraint names: migrations can drop them and errors.py can map them to codes.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite drops the zone on the way back)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class TimestampedModel(Base):
    """UUID primary key and creation/update times, for every table of the domain."""

    __abstract__ = True

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    created_at: Mapped[datetime] = mapped_column(
        UTCDateTime, default=utcnow, server_default=func.now()
    )
    updated_at: Mapped[datetime] = mapped_column(
        UTCDateTime, default=utcnow, onupdate=utcnow, server_default=func.now()
    )


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

ModelT = TypeVar("ModelT", bound=TimestampedModel)


@dataclass(frozen=True, slots=True)
class Page(Generic[ModelT]):
    items: Sequence[ModelT]
    total: int
    limit: int
    offset: int


class Repository(Generic[ModelT]):
    """Queries for one model. Flushes so ids and constraints are checked early; never commits
    (the session dependency owns the transaction)."""

    model: type[ModelT]

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get_by_id(self, id_: uuid.UUID) -> ModelT | None:
        return await self.session.get(self.model, id_)

    async def create(self, obj: ModelT) -> ModelT:
        self.session.add(obj)
        await self.session.flush()
        return obj

    async def update(self, obj: ModelT, changes: dict[str, Any]) -> ModelT:
        for name, value in changes.items():
            setattr(obj, name, value)
        await self.session.flush()
        return obj

    async def delete(self, obj: ModelT) -> None:
        await self.session.delete(obj)
        await self.session.flush()

    async def page(self, query: Select[ModelT], *, limit: int, offset: int) -> Page[ModelT]:
        total = await self.session.scalar(select(func.count()).select_from(query.subquery()))
        rows = await self.session.scalars(
            query.order_by(self.model.created_at.desc(), self.model.id).limit(limit).offset(offset)
        )
        return Page(items=rows.all(), total=total or 0, limit=limit, offset=offset)
