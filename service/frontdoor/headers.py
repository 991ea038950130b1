"""RateLimit headers (draft-ietf-httpapi-ratelimit-headers-11: `RateLimit-Policy` and
`RateLimit`, Structured Field lists) on every response of a request whose budget was charged,
the error responses included (a 401, 403, 404, 422 or 500 built after the charge): the front
door leaves a Quota under SCOPE_KEY, and service/kit/edge.py's Edge, given that key by
create_app, adds its headers() to the response."""

from __future__ import annotations

import math

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
            self.policies.append(policy.header)
            for item in policy.items:
                # r: remaining requests; t: seconds until the window is full again.
                self.states.append(f"{item};r={reply[at]};t={math.ceil(reply[at + 1] / MICROS)}")
                at += 3

    def headers(self) -> list[tuple[bytes, bytes]]:
        return [
            (b"ratelimit-policy", ", ".join(self.policies).encode()),
            (b"ratelimit", ", ".join(self.states).encode()),
        ]
