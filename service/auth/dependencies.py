"""FastAPI wiring for the auth singletons. The caller (CurrentUser, AdminUser) comes from the
front door: service/frontdoor."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from service.auth.passwords import PasswordHasher
from service.auth.tokens import TokenIssuer


def get_hasher(request: Request) -> PasswordHasher:
    hasher: PasswordHasher = request.app.state.hasher
    return hasher


def get_token_issuer(request: Request) -> TokenIssuer:
    issuer: TokenIssuer = request.app.state.token_issuer
    return issuer


HasherDep = Annotated[PasswordHasher, Depends(get_hasher)]
IssuerDep = Annotated[TokenIssuer, Depends(get_token_issuer)]
