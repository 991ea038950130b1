from __future__ import annotations

import uuid

from fastapi import APIRouter, Depends

from service.api_keys import service as api_key_service
from service.api_keys.models import RateLimitTier
from service.api_keys.repository import ApiKeyRepository, TierRepository
from service.api_keys.schemas import ApiKeyCreate, ApiKeyCreated, ApiKeyRead, TierCreate, TierRead
from service.frontdoor import AdminUser, require_admin
from service.kit.database import SessionDep
from service.kit.pagination import PageDep, PageOut

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
    """Create a key for a service client. The secret is in this response only. The key acts as
    its own service account, never as you, and never with more than your current role."""
    api_key, secret = await api_key_service.mint_key(
        session,
        creator_id=admin.user.id,
        minted_by_key=admin.api_key_id is not None,
        name=body.name,
        role=body.role,
        tier=body.tier,
    )
    shown = ApiKeyRead.model_validate(api_key, from_attributes=True)
    return ApiKeyCreated(**shown.model_dump(), key=secret)


@router.get("/api-keys", response_model=PageOut[ApiKeyRead])
async def list_api_keys(session: SessionDep, page: PageDep) -> object:
    return await ApiKeyRepository(session).list(limit=page.limit, offset=page.offset)


@router.delete(
    "/api-keys/{key_id:uuid}", status_code=204, responses={404: {"description": "No such key"}}
)
async def revoke_api_key(key_id: uuid.UUID, session: SessionDep) -> None:
    await api_key_service.revoke_key(session, key_id)


@router.post(
    "/rate-limit-tiers",
    response_model=TierRead,
    status_code=201,
    responses={409: {"description": "Name taken"}},
)
async def create_tier(body: TierCreate, session: SessionDep) -> RateLimitTier:
    """Define a named limit for API keys, e.g. `{"name": "partner", "limit": "5000/minute"}`."""
    return await api_key_service.create_tier(session, name=body.name, limit=body.limit)


@router.get("/rate-limit-tiers", response_model=PageOut[TierRead])
async def list_tiers(session: SessionDep, page: PageDep) -> object:
    return await TierRepository(session).list(limit=page.limit, offset=page.offset)
