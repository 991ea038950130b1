"""The limiter's storage: one GCRA script call on Redis (shared by every worker and pod), or the
same algorithm in this process (the embedded default), behind a circuit breaker."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from service.kit.observability import RATE_LIMIT_STORAGE_ERRORS
from service.kit.problems import ServiceUnavailable
from service.ratelimit.breaker import CircuitBreaker
from service.ratelimit.gcra import SCRIPT, MemoryStore
from service.settings import Settings

log = logging.getLogger("service.ratelimit")

STORAGE_ERRORS = (RedisError, OSError, TimeoutError)


class Limiter:
    def __init__(self, settings: Settings) -> None:
        self.enabled = settings.rate_limit_enabled
        self.uses_redis = settings.limiter_storage == "redis"
        self.fail_open = settings.rate_limit_fail_mode == "open"
        self.breaker = CircuitBreaker(
            settings.rate_limit_breaker_threshold, settings.rate_limit_breaker_cooldown
        )
        self.memory = MemoryStore()
        self.redis: Redis | None = None
        if self.uses_redis:
            assert settings.redis_url is not None  # Settings guarantees it
            self.redis = Redis.from_url(
                settings.redis_url.get_secret_value(),
                socket_timeout=settings.redis_timeout,
                socket_connect_timeout=settings.redis_timeout,
                # Once Redis is back, each pooled connection to the old server fails once
                # ("Connection closed by server"); one immediate retry on a new connection
                # hides that (fail-closed would answer it with a 503). Timeouts are not
                # retried: a hung Redis must cost one timeout, not two. A retry after a reply
                # was lost can count a hit twice, which a limiter can afford.
                retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
            )
            # EVALSHA, and EVAL + retry when the server has not seen the script (a restart).
            self.script = self.redis.register_script(SCRIPT)

    async def run(
        self, keys: Sequence[str], args: Sequence[int], now: int | None = None
    ) -> list[int] | None:
        """SCRIPT's reply for these keys and (interval, capacity) args; `now` (µs) defaults to
        the storage's clock. None when there is nothing to enforce: limits are off, or the
        storage is down and the fail mode is open. Raises ServiceUnavailable when it is down
        and the fail mode is closed."""
        if not self.enabled:
            return None
        if self.redis is None:
            return self.memory.run(keys, args, time.time_ns() // 1000 if now is None else now)
        if not self.breaker.allow():
            self._storage_down()
            return None
        try:
            reply: list[int] = await self.script(keys, ("" if now is None else now, *args))
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
        return reply

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
        if self.redis is None:
            return True
        try:
            return bool(await self.redis.ping())
        except STORAGE_ERRORS:
            return False

    async def aclose(self) -> None:
        if self.redis is not None:
            await self.redis.aclose()
