"""The limiter's storage: the GCRA script on Redis (shared by every worker and pod), or the
same algorithm in this process (the embedded default), behind a circuit breaker.

Every request still has its own atomic check-and-charge, but the requests one worker has
waiting at the same moment share one script call: `run` queues its request and the batch goes
out at the end of the event loop's current pass, so a busy worker makes one round trip (one
connection checkout, one reply to parse) for several requests. A batch waits for nothing else:
it adds no latency, and under light load each batch is one request. Hand-written because
redis-py has no automatic pipelining (docs/benchmarks.md has the measured cost per request).

Leases (`lease=True`: the front door's budgets, not the password budgets). A busy caller's
worker asks Redis for several requests at once (what the caller's rate would bring in half a
lease lifetime, at most twice the last ask, RATE_LIMIT_LEASE_MAX and a sixteenth of the
tightest window) and admits them one by one
without a round trip for RATE_LIMIT_LEASE_SECONDS, asking for the next lease in the background
once half is spent. A first request or an occasional caller asks for one, as before. Redis
counts a lease when it grants it, so a budget is never overdrawn. What changes is when: a
request can be admitted up to two lease lifetimes after it was counted, so a span can admit up
to that much of the sustained rate more than exact GCRA, and what a worker holds when its
caller stops stays counted (that caller's refusal comes that much early). Hand-written for the
same reason as the batches: waiting for any reply, even from a store that answers at once,
costs a request more than the 10 % the limiter may cost (docs/benchmarks.md).
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
# One request's keys, (interval, capacity) args and how many requests it asks for.
Request = tuple[Sequence[str], Sequence[int], int]
# A lease holds at most this fraction (1/LEASE_SHARE) of any of its windows' requests.
LEASE_SHARE: Final = 16


class Lease:
    """What one worker holds for one set of keys: requests Redis granted (and counted), to be
    admitted here until `expires`, and the last grant's figures for the headers."""

    __slots__ = ("asked", "credits", "expires", "pending", "reply", "seen", "since")

    def __init__(self, clock: float) -> None:
        self.credits = 0
        self.expires = 0.0
        self.reply: list[int] = []
        self.pending: asyncio.Future[object] | None = None  # the next lease, when asked for
        self.asked = 0  # the size of the last lease asked for (0: none yet, so the first is 1)
        self.seen = 0  # requests since the last ask
        self.since = clock  # the last ask (time.monotonic)

    def spend(self) -> list[int]:
        """One granted request: the grant's figures, with what this worker still holds counted
        as remaining."""
        self.credits -= 1
        reply = self.reply.copy()
        reply[0] = 1
        for at in range(1, len(reply), 3):
            reply[at] += self.credits
        return reply


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
        self.lease_max = settings.rate_limit_lease_max
        self.lease_seconds = settings.rate_limit_lease_seconds
        self._leases: dict[tuple[str, ...], Lease] = {}
        self._prune_leases_at = 1024
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
        self,
        keys: Sequence[str],
        args: Sequence[int],
        now: int | None = None,
        *,
        lease: bool = False,
    ) -> list[int] | None:
        """SCRIPT's reply for these keys and (interval, capacity) args; `now` (µs) defaults to
        the storage's clock; `lease`: this worker may hold granted requests for these keys
        (module docstring). None when there is nothing to enforce: limits are off, or the
        storage is down and the fail mode is open. Raises ServiceUnavailable when it is down
        and the fail mode is closed."""
        if not self.enabled:
            return None
        if self.redis is None:
            return self.memory.run(keys, args, time.time_ns() // 1000 if now is None else now)
        if lease and now is None and self.lease_max > 1:
            reply = await self._leased(keys, args)
        elif not self.breaker.allow():
            reply = STORAGE_DOWN
        elif now is None:
            reply = await self._queue((keys, args, 1))
        else:
            reply = (await self.run_batch([(keys, args, 1)], now))[0]
        if reply is STORAGE_DOWN:
            self._storage_down()
            return None
        return reply  # type: ignore[return-value]

    async def _leased(self, keys: Sequence[str], args: Sequence[int]) -> object:
        held = self._lease(tuple(keys))
        held.seen += 1
        while True:
            clock = time.monotonic()
            if held.credits and clock < held.expires:
                if held.pending is None and held.credits <= held.asked // 2:
                    self._ask(held, keys, args, clock)  # the next lease, in the background
                return held.spend()
            pending = held.pending or self._ask(held, keys, args, clock)
            if pending is None:
                return STORAGE_DOWN
            # Shielded: a waiter whose client is gone must not cancel the others' lease.
            reply = await asyncio.shield(pending)
            self._granted(held, pending)
            if reply is STORAGE_DOWN or not reply[0]:  # type: ignore[index]
                return reply
            # Granted: take one of them (if others waiting took them all, ask again).

    def _lease(self, keys: tuple[str, ...]) -> Lease:
        held = self._leases.get(keys)
        if held is None:
            if len(self._leases) >= self._prune_leases_at:
                clock = time.monotonic()
                self._leases = {
                    k: v for k, v in self._leases.items() if v.pending or v.expires > clock
                }
                self._prune_leases_at = max(1024, 2 * len(self._leases))
            held = self._leases[keys] = Lease(time.monotonic())
        return held

    def _ask(
        self, held: Lease, keys: Sequence[str], args: Sequence[int], clock: float
    ) -> asyncio.Future[object] | None:
        """Ask for the next lease: the requests the rate since the last ask would bring in half
        a lifetime, at most twice the last ask (a short burst is not a rate) and `lease_max`."""
        if not self.breaker.allow():
            return None
        rate = held.seen / max(clock - held.since, 1e-6)
        wanted = min(2 * held.asked, int(rate * self.lease_seconds / 2))
        # Never more than a share of the tightest window: what a worker holds is what a caller
        # moving to another worker may find spent, so a tight budget (5/minute) is charged one
        # request at a time and its caller is never refused early.
        share = min(args[i + 1] // args[i] for i in range(0, len(args), 2)) // LEASE_SHARE
        held.asked = max(1, min(self.lease_max, share, wanted))
        held.seen, held.since = 0, clock
        pending = held.pending = self._queue((keys, args, held.asked))
        pending.add_done_callback(lambda done: self._granted(held, done))
        return pending

    def _granted(self, held: Lease, pending: asyncio.Future[object]) -> None:
        """Add a grant to what the worker holds, once (the reply's callback and its first
        waiter both call this; whichever runs first applies it)."""
        if held.pending is not pending:
            return
        held.pending = None
        if pending.cancelled() or pending.exception() is not None:
            return
        reply = pending.result()
        if reply is STORAGE_DOWN or not reply[0]:  # type: ignore[index]
            return
        clock = time.monotonic()
        if clock >= held.expires:
            held.credits = 0  # what an expired lease left stays counted, unused
        held.credits += reply[0]  # type: ignore[index]
        held.expires = clock + self.lease_seconds
        held.reply = reply  # type: ignore[assignment]

    async def run_batch(self, batch: Sequence[Request], now: int | None = None) -> list[object]:
        """One script call for these requests, charged in order: each one's reply, or
        STORAGE_DOWN for all when the call failed (the breaker counts one failure)."""
        keys: list[str] = []
        argv: list[int | str] = ["" if now is None else now]
        for request_keys, request_args, wanted in batch:
            keys += request_keys
            argv += (len(request_keys), wanted)
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
        for request_keys, _, _ in batch:
            size = 1 + 3 * len(request_keys)
            replies.append(flat[at : at + size])
            at += size
        return replies

    def _queue(self, request: Request) -> asyncio.Future[object]:
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[object] = loop.create_future()
        if not self._waiting:
            loop.call_soon(self._send)
        self._waiting.append((request, waiter))
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
