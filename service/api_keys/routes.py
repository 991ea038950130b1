from __future__ import annotations

import uuid

from fastapi import APIRouter, Depends

from service.api_keys import secrets as key_secrets
from service.api_keys.models import ApiKey, RateLimitTier
from service.api_keys.repository import ApiKeyRepository, TierRepository
from service.api_keys.schemas import ApiKeyCreate, ApiKeyCreated, ApiKeyRead, TierCreate, TierRead
from service.frontdoor import AdminUser, require_admin
from service.kit.database import SessionDep
from service.kit.models import utcnow
from service.kit.pagination import PageDep, PageOut
from service.kit.problems import NotFound, invalid_field
from service.settings import EXEMPT_TIER

router = APIRouter(
    prefix="/api/v1",
    tags=["api-keys"],
    # The front door first (require_admin depends on it), then the role check.
    dependencies=[Depends(require_admin)],
    responses={
        401: {"description": "Not authenticated"},
        403: {"description": "Admins only"},
        429: {"description": "Rate limited"},
    },
)


@router.post("/api-keys", response_model=ApiKeyCreated, status_code=201)
async def create_api_key(
    body: ApiKeyCreate, admin: AdminUser, session: SessionDep
) -> ApiKeyCreated:
    """Create a key for a service client. The secret is in this response only."""
    if body.tier not in (None, EXEMPT_TIER) and not await TierRepository(session).get_by_name(
        body.tier
    ):
        raise invalid_field(("body", "tier"), "No such rate-limit tier", "unknown_tier")
    key, prefix, secret_hash = key_secrets.new_key()
    api_key = await ApiKeyRepository(session).create(
        ApiKey(
            name=body.name,
            prefix=prefix,
            secret_hash=secret_hash,
            role=body.role,
            tier=body.tier,
            created_by_id=admin.user.id,
        )
    )
    shown = ApiKeyRead.model_validate(api_key, from_attributes=True)
    return ApiKeyCreated(**shown.model_dump(), key=key)


@router.get("/api-keys", response_model=PageOut[ApiKeyRead])
async def list_api_keys(session: SessionDep, page: PageDep) -> object:
    return await ApiKeyRepository(session).list(limit=page.limit, offset=page.offset)


@router.delete(
    "/api-keys/{key_id:uuid}", status_code=204, responses={404: {"description": "No such key"}}
)
async def revoke_api_key(key_id: uuid.UUID, session: SessionDep) -> None:
    keys = ApiKeyRepository(session)
    if (api_key := await keys.get_by_id(key_id)) is None:
        raise NotFound("No such API key.", code="api_key.not_found")
    if api_key.revoked_at is None:
        await keys.update(api_key, {"revoked_at": utcnow()})


@router.post(
    "/rate-limit-tiers",
    response_model=TierRead,
    status_code=201,
    responses={409: {"description": "Name taken"}},
)
async def create_tier(body: TierCreate, session: SessionDep) -> RateLimitTier:
    """Define a named limit for API keys, e.g. `{"name": "partner", "limit": "5000/minute"}`."""
    if body.name == EXEMPT_TIER:
        raise invalid_field(("body", "name"), f"'{EXEMPT_TIER}' is built in", "reserved_name")
    return await TierRepository(session).create(RateLimitTier(name=body.name, limit=body.limit))


@router.get("/rate-limit-tiers", response_model=PageOut[TierRead])
async def list_tiers(session: SessionDep, page: PageDep) -> object:
    return await TierRepository(session).list(limit=page.limit, offset=page.offset)
