"""The security headers the edge adds to every response (service/kit/edge.py).

A module of its own, with no imports, so benchmarks/floor_app.py can send the same headers
without importing the service.
"""

from __future__ import annotations

COMMON = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
]
CSP = b"content-security-policy"
# The API serves JSON only: a browser that renders a response must load and run nothing.
API_CSP = b"default-src 'none'; frame-ancestors 'none'"
HSTS = (b"strict-transport-security", b"max-age=31536000; includeSubDomains")


def response_headers(*, hsts: bool) -> list[tuple[bytes, bytes]]:
    """The headers the edge adds to a JSON response: the API's policy, then the common ones."""
    return [(CSP, API_CSP), *COMMON, *([HSTS] if hsts else [])]
