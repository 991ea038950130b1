"""A small per-worker cache of verified principals, so most requests skip the token check and
the database lookup. An entry lives AUTH_CACHE_TTL_SECONDS at most (bounded by 1 s in the
settings), which bounds how long a demotion, a deactivation or a key revocation can go unseen by
a worker; AUTH_CACHE_MAX_ENTRIES bounds its memory.

Concurrent misses for one credential share one lookup (`get_or_load`): when an entry expires
under load, every request in flight with that credential would otherwise read the database at
once and queue for the pool, and that queue set the p99 (docs/benchmarks.md). A request that
joins a lookup gets a result at most that lookup's duration older than itself, far inside the
TTL's bound.

Hand-written rather than cachetools' TTLCache (not a dependency): it is a dict in insertion
order, a dozen lines, and a lookup is one dict get and one clock read.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Awaitable, Callable
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
        self._loading: dict[bytes, asyncio.Future[tuple[T, float | None]]] = {}

    async def get_or_load(
        self, key: bytes, load: Callable[[], Awaitable[tuple[T, float | None]]]
    ) -> T:
        """The cached value, or `load()`'s (value, epoch seconds it stops being valid or None),
        stored. One `load` at a time per key; its failure is every waiting caller's."""
        if (hit := self.get(key)) is not None:
            return hit
        if self.ttl <= 0:  # no cache: every request looks up for itself
            return (await load())[0]
        loading = self._loading.get(key)
        if loading is None:
            loading = self._loading[key] = asyncio.ensure_future(self._load(key, load))
            # Read even when every caller has gone, so asyncio does not log it as lost.
            loading.add_done_callback(lambda done: done.cancelled() or done.exception())
        # Shielded: a caller that goes away (client disconnect) must not cancel the others'.
        value, _ = await asyncio.shield(loading)
        return value

    async def _load(
        self, key: bytes, load: Callable[[], Awaitable[tuple[T, float | None]]]
    ) -> tuple[T, float | None]:
        try:
            value, expires_at = await load()
        finally:
            del self._loading[key]
        self.put(key, value, max_age=None if expires_at is None else expires_at - time.time())
        return value, expires_at

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
