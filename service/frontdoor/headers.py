"""RateLimit headers (draft-ietf-httpapi-ratelimit-headers-11: `RateLimit-Policy` and
`RateLimit`, Structured Field lists) on every response of a request whose budget was charged,
the error responses included (a 401, 403, 404, 422 or 500 built after the charge)."""

from __future__ import annotations

import math

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.frontdoor.budgets import Charge
from service.ratelimit.gcra import MICROS

# Where the front door leaves the figures for this request's response.
SCOPE_KEY = "frontdoor.quota"


class Quota:
    """The charged policies of one request and the script's figures for each window."""

    __slots__ = ("policies", "states")

    def __init__(self) -> None:
        self.policies: list[str] = []
        self.states: list[str] = []

    def add(self, charges: tuple[Charge, ...], reply: list[int]) -> None:
        at = 1
        for charge in charges:
            policy = charge.policy
            self.policies.append(policy.policy_header())
            for item in policy.items:
                # r: remaining requests; t: seconds until the window is full again.
                self.states.append(f"{item};r={reply[at]};t={math.ceil(reply[at + 1] / MICROS)}")
                at += 3

    def headers(self) -> list[tuple[bytes, bytes]]:
        return [
            (b"ratelimit-policy", ", ".join(self.policies).encode()),
            (b"ratelimit", ", ".join(self.states).encode()),
        ]


class RateLimitHeaders:
    """Adds the request's Quota (if the front door left one) to the response's headers."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_quota(message: Message) -> None:
            if message["type"] == "http.response.start" and SCOPE_KEY in scope:
                message["headers"] = [*message.get("headers", ()), *scope[SCOPE_KEY].headers()]
            await send(message)

        await self.app(scope, receive, send_with_quota)
