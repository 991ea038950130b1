"""Which revisions the database has seen, so an older image can tell "ahead of me" from "unknown".

Rollback after a release that added a migration runs the previous image's migration Job against
a database already at the newer revision. That image cannot read the newer migration script (it
does not ship it), so Alembic alone fails with "Can't locate revision". Every successful migrate
therefore records the revision graph it knows (revision -> down revisions) in LINEAGE_TABLE; an
older image then accepts a database head it does not know only when that recorded graph proves
its own head is an ancestor. Under the expand/contract policy (docs/deployment.md) the schema one
release ahead still serves the previous code, so nothing needs to run.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import sqlalchemy as sa
from alembic.script import ScriptDirectory
from sqlalchemy.ext.asyncio import AsyncConnection

LINEAGE_TABLE = "alembic_lineage"
VERSION_TABLE = "alembic_version"  # Alembic's own

_metadata = sa.MetaData()
lineage = sa.Table(
    LINEAGE_TABLE,
    _metadata,
    sa.Column("revision", sa.String(64), primary_key=True),
    # Comma-separated: a merge revision has several.
    sa.Column("down_revisions", sa.String(1024), nullable=False, default=""),
)


class SchemaAhead(Exception):
    """The database is at a revision this image does not know and cannot prove newer."""


def script_graph(script: ScriptDirectory) -> dict[str, tuple[str, ...]]:
    """revision -> its down revisions, for every script this image ships."""
    graph = {}
    for rev in script.walk_revisions():
        downs = rev.down_revision
        graph[rev.revision] = (
            tuple(downs) if isinstance(downs, tuple | list) else ((downs,) if downs else ())
        )
    return graph


def is_ancestor(ancestor: str, head: str, graph: Mapping[str, Iterable[str]]) -> bool:
    """Whether ``ancestor`` is reachable from ``head`` by following down revisions."""
    seen, todo = set(), [head]
    while todo:
        revision = todo.pop()
        if revision == ancestor:
            return True
        if revision not in seen:
            seen.add(revision)
            todo.extend(graph.get(revision, ()))
    return False


async def database_heads(connection: AsyncConnection) -> list[str]:
    """The revisions in alembic_version (none on a fresh database)."""
    if not await connection.run_sync(lambda c: sa.inspect(c).has_table(VERSION_TABLE)):
        return []
    rows = await connection.execute(sa.text(f"SELECT version_num FROM {VERSION_TABLE}"))  # noqa: S608 - a constant
    return [row[0] for row in rows]


async def recorded_graph(connection: AsyncConnection) -> dict[str, tuple[str, ...]]:
    if not await connection.run_sync(lambda c: sa.inspect(c).has_table(LINEAGE_TABLE)):
        return {}
    rows = await connection.execute(sa.select(lineage.c.revision, lineage.c.down_revisions))
    return {rev: tuple(filter(None, downs.split(","))) for rev, downs in rows}


async def record(connection: AsyncConnection, graph: Mapping[str, Iterable[str]]) -> None:
    """Add the revisions this image knows to the recorded graph (existing rows are kept)."""
    await connection.run_sync(lambda c: _metadata.create_all(c, checkfirst=True))
    known = await recorded_graph(connection)
    new = [
        {"revision": rev, "down_revisions": ",".join(downs)}
        for rev, downs in graph.items()
        if rev not in known
    ]
    if new:
        await connection.execute(sa.insert(lineage), new)


async def unknown_heads_are_descendants(
    connection: AsyncConnection, script: ScriptDirectory
) -> list[str]:
    """The database heads this image's scripts do not know, once each is proven a descendant of
    this image's head; raises SchemaAhead when one is not. Empty: Alembic can take over."""
    graph = script_graph(script)
    unknown = [head for head in await database_heads(connection) if head not in graph]
    if not unknown:
        return []
    recorded = await recorded_graph(connection)
    (own_head,) = script.get_heads()
    for head in unknown:
        if not is_ancestor(own_head, head, recorded):
            raise SchemaAhead(
                f"the database is at revision {head}, which this image does not ship and whose "
                f"recorded lineage ({LINEAGE_TABLE}) does not descend from this image's head "
                f"{own_head}: refusing to guess. Deploy an image that ships {head}."
            )
    return unknown
