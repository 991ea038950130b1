"""Our own token issuer: HS256 with JWT_SECRET, or RS256/EdDSA with JWT_PRIVATE_KEY.

Each path accepts exactly one algorithm, the configured one; the identity-provider path
(jwks.py) has its own asymmetric-only list. The two never share an allow-list, which is what
keeps a token signed with HS256 and a public key (algorithm confusion) out.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import jwt
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from jwt.algorithms import OKPAlgorithm, RSAAlgorithm

from service.settings import Settings

REQUIRED_CLAIMS = ["iss", "aud", "sub", "exp", "iat", "nbf", "jti"]


class TokenIssuer:
    def __init__(self, settings: Settings) -> None:
        self.algorithm = settings.jwt_algorithm
        self.issuer = settings.jwt_issuer
        self.audience = settings.jwt_audience
        self.ttl = settings.access_token_ttl_seconds
        self.leeway = settings.jwt_leeway_seconds
        self.key_id = settings.jwt_key_id
        self._public_jwk: dict[str, Any] | None = None
        if self.algorithm == "HS256":
            self._signing_key: Any = settings.jwt_secret.get_secret_value()
            self._verifying_key: Any = self._signing_key
        else:
            assert settings.jwt_private_key is not None  # Settings validated this
            pem = settings.jwt_private_key.get_secret_value().encode()
            self._signing_key = load_pem_private_key(pem, password=None)
            self._verifying_key = self._signing_key.public_key()
            to_jwk = RSAAlgorithm.to_jwk if self.algorithm == "RS256" else OKPAlgorithm.to_jwk
            jwk = json.loads(to_jwk(self._verifying_key))
            self._public_jwk = jwk | {"kid": self.key_id, "alg": self.algorithm, "use": "sig"}

    def issue(self, subject: str, roles: list[str]) -> str:
        now = int(time.time())
        claims = {
            "iss": self.issuer,
            "aud": self.audience,
            "sub": subject,
            "iat": now,
            "nbf": now,
            "exp": now + self.ttl,
            "jti": uuid.uuid4().hex,
            "roles": roles,
        }
        headers = {"kid": self.key_id}
        return jwt.encode(claims, self._signing_key, algorithm=self.algorithm, headers=headers)

    def decode(self, token: str) -> dict[str, Any]:
        """Verified claims; raises jwt.InvalidTokenError for anything wrong."""
        return jwt.decode(
            token,
            self._verifying_key,
            algorithms=[self.algorithm],
            audience=self.audience,
            issuer=self.issuer,
            leeway=self.leeway,
            options={"require": REQUIRED_CLAIMS},
        )

    def jwks(self) -> dict[str, list[dict[str, Any]]]:
        """The public keys (none for HS256: a shared secret is never published)."""
        return {"keys": [self._public_jwk] if self._public_jwk else []}
