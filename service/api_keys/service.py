"""API keys' rules: who may mint one, what a key acts as, and how far its authority reaches.

A key acts as its own service account (a users row with no email and no password, created with
the key): items it creates are that account's, and it sees only those unless its effective role
is admin. Its effective role is the weaker of the key's role and its creator's current role, so
demoting the creator demotes every key they minted; a deactivated creator, a deactivated
account or a revoked key is refused.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from service.api_keys import secrets as key_secrets
from service.api_keys.models import ApiKey, RateLimitTier
from service.api_keys.repository import ApiKeyRepository, TierRepository
from service.kit.database import Sessions
from service.kit.models import utcnow
from service.kit.problems import Forbidden, NotFound, Unauthorized, invalid_field
from service.settings import EXEMPT_TIER
from service.users.models import Role, User
from service.users.repository import UserRepository

# Service accounts have ids derived from their key's, so linking a key minted before migration
# 0002 is idempotent even when two first requests race (the migration uses the same namespace).
SERVICE_ACCOUNT_NAMESPACE = uuid.UUID("6f1c1f53-4d55-4a3e-9a51-2f0b8e0c7a11")

INVALID_KEY = Unauthorized("The API key is not valid.", code="auth.invalid_api_key")


def service_account_id(key_id: uuid.UUID) -> uuid.UUID:
    return uuid.uuid5(SERVICE_ACCOUNT_NAMESPACE, str(key_id))


@dataclass(frozen=True, slots=True)
class VerifiedKey:
    key_id: uuid.UUID
    account: User
    role: Role  # effective: never more than the creator's current role
    tier_limit: str | None
    exempt: bool


async def verify_key(sessions: Sessions, presented: str) -> VerifiedKey:
    """The key's account and effective role; Unauthorized for anything wrong."""
    parts = key_secrets.split_key(presented)
    if parts is None:
        raise INVALID_KEY
    async with sessions.reading() as session:
        found = await ApiKeyRepository(session).find_for_auth(parts[0])
    if found is None or not key_secrets.secret_matches(parts[1], found.key.secret_hash):
        raise INVALID_KEY
    if found.key.revoked_at is not None:
        raise Unauthorized("The API key has been revoked.", code="auth.revoked_api_key")
    if not found.creator.is_active:
        raise Unauthorized("The API key's owner is deactivated.", code="auth.invalid_api_key")
    account = found.account or await _link_account(sessions, found.key)
    if not account.is_active:
        raise Unauthorized("The API key's account is deactivated.", code="auth.invalid_api_key")
    return VerifiedKey(
        key_id=found.key.id,
        account=account,
        role=Role(found.key.role).at_most(Role(found.creator.role)),
        tier_limit=found.tier_limit,
        exempt=found.key.tier == EXEMPT_TIER,
    )


def _account_for(key_id: uuid.UUID, name: str, role: Role) -> dict[str, object]:
    return {"id": service_account_id(key_id), "full_name": f"API key: {name}"[:200], "role": role}


async def _link_account(sessions: Sessions, key: ApiKey) -> User:
    """A key minted by the release before migration 0002: give it its account now, in a short
    write transaction of its own (the request may be a read)."""
    async with sessions.writing() as session:
        users = UserRepository(session)
        await users.insert_if_absent(**_account_for(key.id, key.name, Role(key.role)))
        await ApiKeyRepository(session).link_account(key.id, service_account_id(key.id))
        account = await users.get_by_id(service_account_id(key.id))
    if account is None:  # pragma: no cover - the insert above guarantees the row
        raise INVALID_KEY
    return account


async def mint_key(
    session: AsyncSession,
    *,
    creator_id: uuid.UUID,
    minted_by_key: bool,
    name: str,
    role: Role,
    tier: str | None,
    presented: str | None = None,
) -> tuple[ApiKey, str]:
    """A new key and its account; returns the key row and the secret (shown once).

    ``presented``: a key generated elsewhere (``bpk_<prefix>_<secret>``, e.g. by Pulumi for the
    in-cluster load test) to register instead of a new one; ValueError unless well formed.
    """
    if minted_by_key:
        # A key's authority is capped by its creator's; a key minting keys would launder that
        # cap through an account nobody demotes.
        raise Forbidden("API keys cannot mint API keys.", code="api_key.minted_by_key")
    if tier not in (None, EXEMPT_TIER) and not await TierRepository(session).get_by_name(tier):
        raise invalid_field(("body", "tier"), "No such rate-limit tier", "unknown_tier")
    secret, prefix, secret_hash = (
        key_secrets.from_key(presented) if presented else key_secrets.new_key()
    )
    key_id = uuid.uuid4()
    account = await UserRepository(session).create(User(**_account_for(key_id, name, role)))
    api_key = await ApiKeyRepository(session).create(
        ApiKey(
            id=key_id,
            name=name,
            prefix=prefix,
            secret_hash=secret_hash,
            role=role,
            tier=tier,
            created_by_id=creator_id,
            service_user_id=account.id,
        )
    )
    return api_key, secret


async def ensure_key(
    session: AsyncSession, *, creator: User, name: str, role: Role, tier: str | None, presented: str
) -> ApiKey:
    """``presented`` as a key of ``creator``'s, whatever happened to it since (idempotent).

    Minted through ``mint_key`` on first sight (with its service account); when a key with its
    prefix exists (a re-run), that row is restored: the secret, role, tier and creator as asked,
    un-revoked, its account re-activated. Its role is never more than the creator's current
    role, so the key's authority is not above its owner's even before ``verify_key`` caps it.
    """
    role = role.at_most(Role(creator.role))
    _, prefix, secret_hash = key_secrets.from_key(presented)
    keys = ApiKeyRepository(session)
    if (existing := await keys.get_by_prefix(prefix)) is None:
        api_key, _ = await mint_key(
            session,
            creator_id=creator.id,
            minted_by_key=False,
            name=name,
            role=role,
            tier=tier,
            presented=presented,
        )
        return api_key
    if tier not in (None, EXEMPT_TIER) and not await TierRepository(session).get_by_name(tier):
        raise invalid_field(("body", "tier"), "No such rate-limit tier", "unknown_tier")
    users = UserRepository(session)
    if existing.service_user_id and (account := await users.get_by_id(existing.service_user_id)):
        await users.update(account, {"is_active": True, "role": role})
    return await keys.update(
        existing,
        {
            "name": name,
            "secret_hash": secret_hash,
            "role": role,
            "tier": tier,
            "created_by_id": creator.id,
            "revoked_at": None,
        },
    )


async def revoke_keys_created_by(session: AsyncSession, creator_ids: list[uuid.UUID]) -> int:
    """Revoke every live key these users minted; how many were live (0: nothing to do)."""
    keys = ApiKeyRepository(session)
    live = await keys.live_created_by(creator_ids)
    for api_key in live:
        await keys.update(api_key, {"revoked_at": utcnow()})
    return len(live)


async def revoke_key(session: AsyncSession, key_id: uuid.UUID) -> None:
    keys = ApiKeyRepository(session)
    if (api_key := await keys.get_by_id(key_id)) is None:
        raise NotFound("No such API key.", code="api_key.not_found")
    if api_key.revoked_at is None:
        await keys.update(api_key, {"revoked_at": utcnow()})


async def create_tier(session: AsyncSession, *, name: str, limit: str) -> RateLimitTier:
    if name == EXEMPT_TIER:
        raise invalid_field(("body", "name"), f"'{EXEMPT_TIER}' is built in", "reserved_name")
    return await TierRepository(session).create(RateLimitTier(name=name, limit=limit))
