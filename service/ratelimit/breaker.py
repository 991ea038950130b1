"""A minimal circuit breaker for the rate-limit storage.

Written here because `limits` has none and pybreaker's async support is tied to Tornado; the
whole state machine is a dozen lines. After `threshold` consecutive failures the breaker opens:
calls are skipped (so a dead Redis costs no latency) until `cooldown` seconds pass, then one
trial call goes through (half-open) and its outcome closes or re-opens the breaker.
"""

from __future__ import annotations

import time
from collections.abc import Callable


class CircuitBreaker:
    def __init__(
        self, threshold: int, cooldown: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.threshold = threshold
        self.cooldown = cooldown
        self._clock = clock
        self._failures = 0
        self._opened_at: float | None = None

    @property
    def is_open(self) -> bool:
        return self._opened_at is not None

    def allow(self) -> bool:
        """Whether to try the storage now."""
        if self._opened_at is None:
            return True
        if self._clock() - self._opened_at >= self.cooldown:
            self._opened_at = self._clock()  # one trial per cooldown period (half-open)
            return True
        return False

    def record_success(self) -> None:
        self._failures = 0
        self._opened_at = None

    def record_failure(self) -> bool:
        """Count a failure; True when this one opened the breaker."""
        self._failures += 1
        if self._failures >= self.threshold and self._opened_at is None:
            self._opened_at = self._clock()
            return True
        if self._opened_at is not None:
            self._opened_at = self._clock()
        return False
