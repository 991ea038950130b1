"""Security headers on every response (pure ASGI)."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

_COMMON = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
]
_CSP = b"content-security-policy"
# The API serves JSON only: a browser that renders a response must load and run nothing.
API_CSP = b"default-src 'none'; frame-ancestors 'none'"
_HSTS = (b"strict-transport-security", b"max-age=31536000; includeSubDomains")


class SecurityHeaders:
    """Adds the common headers, and the API's content security policy to every response that
    does not bring its own: only the HTML pages of service/docs/ do, each with the narrow policy
    its page needs (Swagger UI, ReDoc, the front and error pages), written beside its HTML."""

    def __init__(self, app: ASGIApp, *, hsts: bool) -> None:
        self.app = app
        self.extra = _COMMON + ([_HSTS] if hsts else [])

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = message.setdefault("headers", [])
                if not any(name.lower() == _CSP for name, _ in headers):
                    headers.append((_CSP, API_CSP))
                headers.extend(self.extra)
            await send(message)

        await self.app(scope, receive, send_with_headers)
