"""A small per-worker cache of verified principals, so most requests skip the token check and
the database lookup. An entry lives AUTH_CACHE_TTL_SECONDS at most (bounded by 1 s in the
settings), which bounds how long a demotion, a deactivation or a key revocation can go unseen by
a worker; AUTH_CACHE_MAX_ENTRIES bounds its memory.

Hand-written rather than cachetools' TTLCache (not a dependency): it is a dict in insertion
order, a dozen lines, and a lookup is one dict get and one clock read.
"""

from __future__ import annotations

import hashlib
import time
from typing import Generic, TypeVar

T = TypeVar("T")


def credential_key(kind: str, credential: str) -> bytes:
    """What the cache is keyed by: a digest, so no credential sits in memory longer than the
    request that carried it."""
    return hashlib.sha256(f"{kind}:{credential}".encode()).digest()


class TtlCache(Generic[T]):
    def __init__(self, *, ttl: float, max_entries: int) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._entries: dict[bytes, tuple[float, T]] = {}

    def get(self, key: bytes) -> T | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry[0] <= time.monotonic():
            del self._entries[key]
            return None
        return entry[1]

    def put(self, key: bytes, value: T, *, max_age: float | None = None) -> None:
        ttl = self.ttl if max_age is None else min(self.ttl, max_age)
        if ttl <= 0:
            return
        self._entries.pop(key, None)
        if len(self._entries) >= self.max_entries:
            # Entries are in insertion order and share one TTL: the first is the oldest.
            del self._entries[next(iter(self._entries))]
        self._entries[key] = (time.monotonic() + ttl, value)

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)
