"""GCRA (the generic cell rate algorithm): the limiter's one algorithm, in Lua for Redis and in
Python as its reference model and in-process store.

A limit of `amount` per `seconds` becomes an emission interval T = seconds / amount (rounded up
to a microsecond) and a capacity of amount x T. Each (limit, identity) keeps one number, the
theoretical arrival time (TAT): a request fits when max(TAT, now) + T - now <= capacity, and then
advances the TAT by T (a worker's lease asks for k at once and gets as many as fit, each
advancing it by T). That allows a burst of `amount`, then one request per T. Every window of a
request is checked before any is charged: a request refused by one window costs no other window
anything, and a refused request is never counted. Each key expires when its window is full again.

Written here rather than taken from `limits`: that library needs one Redis call per window to
count and another to read the figures the RateLimit headers need; this script charges every
window of every policy of a request and returns all the figures in one call (docs/reliability.md
has the measured difference).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from limits import parse_many

MICROS = 1_000_000

# One call charges a batch of requests, each in turn, each as if it were alone (the limiter
# coalesces the requests a worker has waiting into one round trip: service/ratelimit/limiter.py).
# KEYS: every request's windows' TATs (µs since the epoch), request after request.
# ARGV[1]: now in microseconds, or "" for the Redis server's clock (one clock for every pod).
# Then per request: its window count n, how many requests it asks for (1, or a worker's lease:
# limiter.py), then n (emission interval, capacity) pairs, in µs.
# Returns, per request: how many were granted (as many as every window has room for, at most
# the number asked; 0 is a refusal), then per window: remaining, µs until full, µs until one
# more request fits. Numbers are doubles in Lua; every value here is an integer below 2^53, so
# they are exact, and "%.0f" writes them back without the exponent form that tostring() uses.
SCRIPT = """
local now = tonumber(ARGV[1])
if not now then
  local time = redis.call('TIME')
  now = tonumber(time[1]) * 1000000 + tonumber(time[2])
end
local out = {}
local k = 0
local a = 2
while a <= #ARGV do
  local n = tonumber(ARGV[a])
  local granted = tonumber(ARGV[a + 1])
  local tats = {}
  for i = 1, n do
    local tat = tonumber(redis.call('GET', KEYS[k + i])) or now
    if tat < now then tat = now end
    tats[i] = tat
    local interval = tonumber(ARGV[a + 2 * i])
    local room = math.floor((tonumber(ARGV[a + 2 * i + 1]) - (tat - now)) / interval)
    if room < granted then granted = room end
  end
  if granted < 0 then granted = 0 end
  out[#out + 1] = granted
  for i = 1, n do
    local interval = tonumber(ARGV[a + 2 * i])
    local capacity = tonumber(ARGV[a + 2 * i + 1])
    local tat = tats[i]
    if granted > 0 then
      tat = tat + granted * interval
      local ttl = math.ceil((tat - now) / 1000)
      redis.call('SET', KEYS[k + i], string.format('%.0f', tat), 'PX', ttl)
    end
    out[#out + 1] = math.floor((capacity - (tat - now)) / interval)
    out[#out + 1] = tat - now
    out[#out + 1] = math.max(0, tat + interval - now - capacity)
  end
  k = k + n
  a = a + 2 + 2 * n
end
return out
"""


@dataclass(frozen=True, slots=True)
class Window:
    """One limit: `amount` requests per `seconds`."""

    amount: int
    seconds: int
    interval: int = field(init=False)  # µs between requests at the sustained rate
    capacity: int = field(init=False)  # µs of credit a full window holds

    def __post_init__(self) -> None:
        interval = math.ceil(self.seconds * MICROS / self.amount)
        object.__setattr__(self, "interval", interval)
        object.__setattr__(self, "capacity", interval * self.amount)


def parse_windows(text: str) -> tuple[Window, ...]:
    """The `limits` notation ("10/minute;100/hour", "5 per second") as windows."""
    return tuple(Window(item.amount, item.get_expiry()) for item in parse_many(text))


def gcra(
    tats: Sequence[int | None], now: int, windows: Sequence[tuple[int, int]], wanted: int = 1
) -> tuple[list[int], list[int] | None]:
    """The reference model of SCRIPT: (its reply, the new TATs or None when nothing changed).

    `tats` are the stored TATs (None: no key), `windows` (interval, capacity) pairs, `wanted`
    the requests asked for. The same operations in the same order as the Lua, so the figures
    agree exactly.
    """
    current = [now if tat is None or tat < now else tat for tat in tats]
    granted = wanted
    for tat, (interval, capacity) in zip(current, windows, strict=True):
        granted = min(granted, math.floor((capacity - (tat - now)) / interval))
    granted = max(granted, 0)
    if granted:
        current = [
            tat + granted * interval for tat, (interval, _) in zip(current, windows, strict=True)
        ]
    reply = [granted]
    for tat, (interval, capacity) in zip(current, windows, strict=True):
        reply += [
            math.floor((capacity - (tat - now)) / interval),
            tat - now,
            max(0, tat + interval - now - capacity),
        ]
    return reply, current if granted else None


class MemoryStore:
    """SCRIPT's semantics in this process: the embedded default (no REDIS_URL)."""

    def __init__(self) -> None:
        self._tats: dict[str, int] = {}
        self._prune_at = 1024

    def run(self, keys: Sequence[str], args: Sequence[int], now: int, wanted: int = 1) -> list[int]:
        windows = [(args[i], args[i + 1]) for i in range(0, len(args), 2)]
        reply, tats = gcra([self._tats.get(key) for key in keys], now, windows, wanted)
        if tats is not None:
            self._tats.update(zip(keys, tats, strict=True))
            if len(self._tats) >= self._prune_at:
                self._prune(now)
        return reply

    def _prune(self, now: int) -> None:
        # A TAT in the past is a full window, the same as no key (Redis's TTL, here).
        self._tats = {key: tat for key, tat in self._tats.items() if tat > now}
        self._prune_at = max(1024, 2 * len(self._tats))
