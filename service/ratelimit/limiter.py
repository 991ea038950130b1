"""The limiter's storage: the GCRA script on Redis (shared by every worker and pod), or the
same algorithm in this process (the embedded default), behind a circuit breaker.

Every request still has its own atomic check-and-charge, but the requests one worker has
waiting at the same moment share one script call: `run` queues its request and the batch goes
out at the end of the event loop's current pass, so a busy worker makes one round trip (one
connection checkout, one reply to parse) for several requests. A batch waits for nothing else:
it adds no latency, and under light load each batch is one request. Hand-written because
redis-py has no automatic pipelining (docs/benchmarks.md has the measured cost per request).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Sequence
from typing import Final

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
STORAGE_DOWN: Final = object()  # a batch's outcome when its call failed
Request = tuple[Sequence[str], Sequence[int]]  # one request's keys and (interval, capacity) args


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
        self._waiting: list[tuple[Request, asyncio.Future[object]]] = []
        self._batches: set[asyncio.Future[None]] = set()
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
        if now is None:
            reply = await self._queue(keys, args)
        else:
            reply = (await self.run_batch([(keys, args)], now))[0]
        if reply is STORAGE_DOWN:
            self._storage_down()
            return None
        return reply  # type: ignore[return-value]

    async def run_batch(self, batch: Sequence[Request], now: int | None = None) -> list[object]:
        """One script call for these requests, charged in order: each one's reply, or
        STORAGE_DOWN for all when the call failed (the breaker counts one failure)."""
        keys: list[str] = []
        argv: list[int | str] = ["" if now is None else now]
        for request_keys, request_args in batch:
            keys += request_keys
            argv.append(len(request_keys))
            argv += request_args
        try:
            flat: list[int] = await self.script(keys, argv)
        except STORAGE_ERRORS as exc:
            # At most `threshold` of these per cooldown reach here, so each can be logged.
            opened = self.breaker.record_failure()
            log.warning(
                "rate-limit storage error%s: %s: %s",
                ", breaker open" if opened else "",
                type(exc).__name__,
                exc,
            )
            return [STORAGE_DOWN] * len(batch)
        self.breaker.record_success()
        replies: list[object] = []
        at = 0
        for request_keys, _ in batch:
            size = 1 + 3 * len(request_keys)
            replies.append(flat[at : at + size])
            at += size
        return replies

    def _queue(self, keys: Sequence[str], args: Sequence[int]) -> asyncio.Future[object]:
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[object] = loop.create_future()
        if not self._waiting:
            loop.call_soon(self._send)
        self._waiting.append(((keys, args), waiter))
        return waiter

    def _send(self) -> None:
        waiting, self._waiting = self._waiting, []
        task = asyncio.ensure_future(self._settle(waiting))
        self._batches.add(task)  # held until done: the loop keeps only weak references
        task.add_done_callback(self._batches.discard)

    async def _settle(self, waiting: list[tuple[Request, asyncio.Future[object]]]) -> None:
        try:
            replies = await self.run_batch([request for request, _ in waiting])
        except asyncio.CancelledError:  # the loop is closing: so is every waiting request
            for _, waiter in waiting:
                waiter.cancel()
            raise
        except Exception as exc:  # not a storage error: each waiting request raises it
            for _, waiter in waiting:
                if not waiter.done():
                    waiter.set_exception(exc)
            return  # raised where it is awaited, not again in this task (asyncio would log it)
        for (_, waiter), reply in zip(waiting, replies, strict=True):
            if not waiter.done():  # its request may have been cancelled (client gone)
                waiter.set_result(reply)

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
