"""Command line: `python -m service run | migrate | seed-loadtest | unseed-loadtest`."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from service.api_keys import secrets as key_secrets
from service.api_keys import service as api_key_service
from service.auth.passwords import PasswordHasher
from service.kit.database import create_engine, create_sessionmaker
from service.schema_lineage import (
    SchemaAhead,
    script_graph,
    unknown_heads_are_descendants,
)
from service.schema_lineage import record as record_lineage
from service.settings import Settings, get_settings
from service.users.models import Role, User
from service.users.repository import UserRepository

T = TypeVar("T")


MIGRATIONS = Path(__file__).parent / "migrations"


def migrate(settings: Settings, script_location: Path = MIGRATIONS) -> None:
    """Apply every Alembic migration, then create the first admin when configured.

    A database ahead of this image (a rollback after a release that added a migration) is
    accepted when its recorded lineage proves this image's head an ancestor: the schema is then
    one expand step ahead and still serves this code (docs/deployment.md, "Migrations").
    """
    from alembic import command
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", str(script_location))
    script = ScriptDirectory.from_config(config)
    try:
        ahead = asyncio.run(
            _in_connection(settings, lambda c: unknown_heads_are_descendants(c, script))
        )
    except SchemaAhead as error:
        raise SystemExit(f"migrate: {error}") from None
    if ahead:
        print(
            f"database at {', '.join(ahead)}, a descendant of this image's head"
            f" {script.get_current_head()}: nothing to migrate"
        )
    else:
        command.upgrade(config, "head")
        asyncio.run(_in_connection(settings, lambda c: record_lineage(c, script_graph(script))))
    if asyncio.run(_in_transaction(settings, lambda s: ensure_first_admin(s, settings))):
        print(f"created the first admin {settings.first_admin_email}")


async def _in_connection(settings: Settings, work: Callable[[AsyncConnection], Awaitable[T]]) -> T:
    engine = create_engine(settings)
    try:
        async with engine.begin() as connection:
            return await work(connection)
    finally:
        await engine.dispose()


async def _in_transaction(settings: Settings, work: Callable[[AsyncSession], Awaitable[T]]) -> T:
    engine = create_engine(settings)
    try:
        async with create_sessionmaker(engine)() as session, session.begin():
            return await work(session)
    finally:
        await engine.dispose()


async def ensure_first_admin(session: AsyncSession, settings: Settings) -> bool:
    """Create FIRST_ADMIN_EMAIL with FIRST_ADMIN_PASSWORD unless it exists (idempotent)."""
    if not (settings.first_admin_email and settings.first_admin_password):
        return False
    users = UserRepository(session)
    if await users.get_by_email(settings.first_admin_email):
        return False
    hashed = await PasswordHasher(settings).hash(settings.first_admin_password.get_secret_value())
    await users.create(
        User(email=settings.first_admin_email.lower(), hashed_password=hashed, role=Role.admin)
    )
    return True


# The accounts `seed-loadtest` creates (and `unseed-loadtest` disables); example.com is
# reserved (RFC 2606), so no real user has one of these addresses.
LOADTEST_ADMIN = "loadtest-admin@example.com"
SEEDED = re.compile(r"loadtest-(\d+|admin)@example\.com")
# The seeded key's rate-limit tier: None, the default every key minted without a tier gets
# (RATE_LIMIT_API_KEY_DEFAULT, 1200/minute unless the stack changes it). Not "exempt": the load
# test must pay for the per-key budget as an integration does (its charge rides in the same Redis
# call), and a limit that binds shows as "429 list_users_api_key" instead of passing unnoticed.
# The default tier needs no admin-defined tier to exist first and is what a new integration gets.
LOADTEST_KEY_TIER: str | None = None


def loadtest_email(index: int) -> str:
    return f"loadtest-{index}@example.com"


async def seed_loadtest(
    session: AsyncSession, settings: Settings, count: int, password: str, api_key: str | None
) -> str:
    """Users loadtest-0..N-1@example.com, loadtest-admin@example.com, and an admin API key on
    the default (limited) tier owned by that admin, minted through the API keys' service:
    `api_key` when given (Pulumi generates one for the in-cluster run), else a new one.
    Re-running resets passwords and re-enables the accounts and the key; returns the key."""
    users = UserRepository(session)
    hashed = await PasswordHasher(settings).hash(password)
    wanted = [(loadtest_email(i), Role.user) for i in range(count)]
    wanted.append((LOADTEST_ADMIN, Role.admin))
    for email, role in wanted:
        found = await users.get_by_email(email)
        if found is None:
            user = await users.create(User(email=email, hashed_password=hashed, role=role))
        else:
            user = await users.update(
                found, {"hashed_password": hashed, "role": role, "is_active": True}
            )
    key = api_key or key_secrets.new_key()[0]
    await api_key_service.ensure_key(
        session,
        creator=user,
        name="loadtest",
        role=Role.admin,
        tier=LOADTEST_KEY_TIER,
        presented=key,
    )  # owned by the admin, added last
    return key


async def unseed_loadtest(session: AsyncSession) -> dict[str, int]:
    """Deactivate every account `seed-loadtest` creates and revoke every key they minted
    (idempotent: nothing to do leaves the database as it is). Returns how many changed."""
    users = UserRepository(session)
    found = await users.with_email_like("loadtest-%@example.com")
    seeded = [user for user in found if user.email and SEEDED.fullmatch(user.email.lower())]
    revoked = await api_key_service.revoke_keys_created_by(session, [u.id for u in seeded])
    active = [user for user in seeded if user.is_active]
    for user in active:
        await users.update(user, {"is_active": False})
    return {"deactivated": len(active), "revoked": revoked}


def run(settings: Settings) -> None:
    """Development server: migrate, then one Uvicorn process with reload off."""
    import uvicorn

    from service.http_server import PROTOCOL

    migrate(settings)
    uvicorn.run(
        "service.main:create_app",
        factory=True,
        host=settings.host,
        port=settings.port,
        proxy_headers=False,  # the app handles X-Forwarded-For (main.py, TRUSTED_PROXIES)
        http=PROTOCOL,
        server_header=False,
        access_log=False,
        log_config=None,
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m service")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("run", help="development server (migrates first)")
    commands.add_parser("migrate", help="apply migrations and create the first admin")
    seed = commands.add_parser("seed-loadtest", help="create load-test users and an API key")
    seed.add_argument("--users", type=int, default=50)
    # From the environment by default: a password in argv shows in every process listing.
    seed.add_argument("--password", default=os.environ.get("LOADTEST_PASSWORD"))
    seed.add_argument("--api-key", default=os.environ.get("LOADTEST_API_KEY"))
    commands.add_parser(
        "unseed-loadtest", help="deactivate the load-test users and revoke their keys"
    )
    args = parser.parse_args(argv)
    if args.command == "seed-loadtest":
        if not args.password:
            parser.error("seed-loadtest needs --password or LOADTEST_PASSWORD")
        if args.api_key:
            try:
                key_secrets.from_key(args.api_key)
            except ValueError as error:
                parser.error(str(error))

    settings = get_settings()
    if args.command == "run":
        run(settings)
    elif args.command == "migrate":
        migrate(settings)
    elif args.command == "unseed-loadtest":
        print(json.dumps(asyncio.run(_in_transaction(settings, unseed_loadtest))))
    else:
        key = asyncio.run(
            _in_transaction(
                settings,
                lambda s: seed_loadtest(s, settings, args.users, args.password, args.api_key),
            )
        )
        print(json.dumps({"api_key": key}))


if __name__ == "__main__":
    main()
