"""Rate-limit dependencies per route group: login, anonymous, authenticated."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request, Response
from fastapi.security import OAuth2PasswordRequestForm

from service.auth.dependencies import CurrentUser
from service.kit.problems import TooManyRequests
from service.ratelimit.limiter import Limiter


def _limiter(request: Request) -> Limiter:
    limiter: Limiter = request.app.state.limiter
    return limiter


def client_ip(request: Request) -> str:
    peer = request.client.host if request.client else "unknown"
    return _limiter(request).client_ip(peer, request.headers.get("x-forwarded-for"))


async def _enforce(request: Request, response: Response, limit: str, *identifiers: str) -> None:
    limiter = _limiter(request)
    decision = await limiter.check(limit, *identifiers)
    if decision is None:
        return
    headers = decision.headers() if limiter.send_headers else {}
    if not decision.allowed:
        raise TooManyRequests(
            f"Rate limit exceeded: {limit}.",
            headers=headers | {"Retry-After": str(decision.reset_after)},
        )
    response.headers.update(headers)


async def login_rate_limit(
    request: Request,
    response: Response,
    form: Annotated[OAuth2PasswordRequestForm, Depends()],
) -> None:
    """Per client IP and per submitted username: a botnet cannot brute-force one account and
    one address cannot spray many."""
    limit = request.app.state.settings.rate_limit_login
    await _enforce(request, response, limit, "login-ip", client_ip(request))
    await _enforce(request, response, limit, "login-user", form.username.lower())


async def anonymous_rate_limit(request: Request, response: Response) -> None:
    limit = request.app.state.settings.rate_limit_anonymous
    await _enforce(request, response, limit, "anon", client_ip(request))


async def user_rate_limit(request: Request, response: Response, principal: CurrentUser) -> None:
    """Per user, or per API key with the key's tier; the exempt tier skips the check."""
    if principal.exempt:
        return
    settings = request.app.state.settings
    if principal.api_key_id is not None:
        limit = principal.rate_limit or settings.rate_limit_api_key_default
        await _enforce(request, response, limit, "key", str(principal.api_key_id))
    else:
        await _enforce(request, response, settings.rate_limit_user, "user", str(principal.user.id))
