"""Rate limits shared by every worker and pod: `limits.aio` on Redis (redis-py), or in memory
on the embedded default."""

from __future__ import annotations

import ipaddress
import logging
import math
import time
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from limits import RateLimitItem, parse_many
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.strategies import (
    MovingWindowRateLimiter,
    RateLimiter,
    SlidingWindowCounterRateLimiter,
)
from limits.errors import StorageError
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from service.kit.observability import RATE_LIMIT_STORAGE_ERRORS
from service.kit.problems import ServiceUnavailable
from service.ratelimit.breaker import CircuitBreaker
from service.settings import Settings

log = logging.getLogger("service.ratelimit")

STORAGE_ERRORS = (RedisError, StorageError, OSError, TimeoutError)


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    limit: int
    remaining: int
    reset_after: int  # seconds until the window has room again

    def headers(self) -> dict[str, str]:
        return {
            "RateLimit-Limit": str(self.limit),
            "RateLimit-Remaining": str(self.remaining),
            "RateLimit-Reset": str(self.reset_after),
        }


@lru_cache(maxsize=256)
def parse_limits(text: str) -> tuple[RateLimitItem, ...]:
    return tuple(parse_many(text))


class Limiter:
    def __init__(self, settings: Settings) -> None:
        self.storage: Storage
        if settings.redis_url is not None:
            # redis-py connection options (limits types them narrower than redis-py does).
            client_options: dict[str, Any] = {
                "socket_timeout": settings.redis_timeout,
                "socket_connect_timeout": settings.redis_timeout,
                # Once Redis is back, each pooled connection to the old server fails once
                # ("Connection closed by server"); one immediate retry on a new connection
                # hides that (fail-closed would answer it with a 503). Timeouts are not
                # retried: a hung Redis must cost one timeout, not two. A retry after a reply
                # was lost can count a hit twice, which a limiter can afford.
                "retry": Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
            }
            self.storage = RedisStorage(
                "async+" + settings.redis_url.get_secret_value(),
                implementation="redispy",
                key_prefix=f"{settings.app_name}:rl",
                **client_options,
            )
        else:
            self.storage = MemoryStorage()
        strategy_class = (
            MovingWindowRateLimiter
            if settings.rate_limit_strategy == "moving-window"
            else SlidingWindowCounterRateLimiter
        )
        self.strategy: RateLimiter = strategy_class(self.storage)
        self.enabled = settings.rate_limit_enabled
        self.uses_redis = settings.redis_url is not None
        self.fail_open = settings.rate_limit_fail_mode == "open"
        self.send_headers = settings.rate_limit_headers
        self.breaker = CircuitBreaker(
            settings.rate_limit_breaker_threshold, settings.rate_limit_breaker_cooldown
        )
        self.trusted_proxies = [
            ipaddress.ip_network(n, strict=False) for n in settings.trusted_proxies
        ]

    async def check(self, limit_text: str, *identifiers: str) -> Decision | None:
        """Count one hit against every limit in `limit_text` for these identifiers.

        None when there is nothing to report: limits are off, or the storage is down and the
        fail mode is open. Raises ServiceUnavailable when the storage is down and it is closed.
        """
        if not self.enabled:
            return None
        if not self.breaker.allow():
            self._storage_down()
            return None
        try:
            decision = await self._hit(parse_limits(limit_text), identifiers)
        except STORAGE_ERRORS as exc:
            # At most `threshold` of these per cooldown reach here, so each can be logged.
            opened = self.breaker.record_failure()
            log.warning(
                "rate-limit storage error%s: %s: %s",
                ", breaker open" if opened else "",
                type(exc).__name__,
                exc,
            )
            self._storage_down()
            return None
        self.breaker.record_success()
        return decision

    async def _hit(self, items: tuple[RateLimitItem, ...], ids: tuple[str, ...]) -> Decision | None:
        for item in items:
            if not await self.strategy.hit(item, *ids):
                return await self._decision(item, ids, allowed=False)
        # Headers describe the first (conventionally the tightest) limit.
        return await self._decision(items[0], ids, allowed=True) if self.send_headers else None

    async def _decision(
        self, item: RateLimitItem, ids: tuple[str, ...], *, allowed: bool
    ) -> Decision:
        stats = await self.strategy.get_window_stats(item, *ids)
        reset_after = max(1, math.ceil(stats.reset_time - time.time()))
        return Decision(allowed, item.amount, max(0, stats.remaining), reset_after)

    def _storage_down(self) -> None:
        """Apply the fail mode: count, then serve (open) or raise 503 (closed)."""
        RATE_LIMIT_STORAGE_ERRORS.labels("allowed" if self.fail_open else "rejected").inc()
        if not self.fail_open:
            raise ServiceUnavailable(
                "Rate limiting is unavailable.",
                code="rate_limit.unavailable",
                headers={"Retry-After": str(math.ceil(self.breaker.cooldown))},
            )

    async def storage_ok(self) -> bool:
        try:
            return bool(await self.storage.check())
        except STORAGE_ERRORS:
            return False

    def client_ip(self, peer: str, forwarded_for: str | None) -> str:
        """The socket's peer, unless it is a trusted proxy: then the right-most address in
        X-Forwarded-For that is not itself a trusted proxy. Anyone else's header is ignored."""
        if not forwarded_for or not self._trusted(peer):
            return peer
        for hop in reversed([h.strip() for h in forwarded_for.split(",") if h.strip()]):
            if not self._trusted(hop):
                return hop
        return peer

    def _trusted(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in self.trusted_proxies)
