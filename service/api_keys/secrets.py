"""API key format: `bpk_<prefix>_<secret>`. The prefix finds the row; only a SHA-256 of the
secret is stored. A fast hash is right here (unlike passwords): the secret is 256 random bits,
so there is nothing to brute-force, and the check runs on every request."""

from __future__ import annotations

import hashlib
import hmac
import secrets

SCHEME = "bpk"
PREFIX_MAX = 16  # the column's width
SECRET_MIN = 32  # characters: a key made elsewhere must be as hard to guess as ours


def new_key() -> tuple[str, str, str]:
    """(full key shown once, prefix, secret hash)."""
    prefix = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    return f"{SCHEME}_{prefix}_{secret}", prefix, hash_secret(secret)


def from_key(key: str) -> tuple[str, str, str]:
    """(key, prefix, secret hash) of a key made elsewhere; ValueError unless well formed."""
    parts = split_key(key)
    if parts is None or len(parts[0]) > PREFIX_MAX or len(parts[1]) < SECRET_MIN:
        raise ValueError(
            f"an API key looks like {SCHEME}_<prefix of 1-{PREFIX_MAX}>_<secret of {SECRET_MIN}+>"
        )
    prefix, secret = parts
    return key, prefix, hash_secret(secret)


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def split_key(key: str) -> tuple[str, str] | None:
    scheme, _, rest = key.partition("_")
    prefix, _, secret = rest.partition("_")
    if scheme != SCHEME or not prefix or not secret or len(key) > 200:
        return None
    return prefix, secret


def secret_matches(secret: str, stored_hash: str) -> bool:
    return hmac.compare_digest(hash_secret(secret), stored_hash)
