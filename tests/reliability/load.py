"""Bounded load from inside the test: httpx.AsyncClient, a fixed number of concurrent loops,
for a fixed time (or until told to stop). Every request is recorded with the phase it started
in, its status (or the transport error's name) and its latency, so a test can assert on a
phase and write the figures down."""

from __future__ import annotations

import asyncio
import statistics
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

PROBLEM_MEDIA_TYPE = "application/problem+json"


@dataclass(frozen=True, slots=True)
class Sample:
    phase: str
    method: str
    route: str
    status: str  # "201", or the transport error's class name ("ReadTimeout")
    started: float  # time.monotonic()
    elapsed: float
    content_type: str = ""
    code: str | None = None  # the problem+json `code` of an error response

    @property
    def is_http(self) -> bool:
        return self.status.isdigit()

    @property
    def status_code(self) -> int:
        return int(self.status) if self.is_http else 0


def histogram(samples: list[Sample]) -> dict[str, int]:
    return dict(sorted(Counter(s.status for s in samples).items()))


def summarize(samples: list[Sample]) -> dict[str, Any]:
    """Requests, errors by status and latency percentiles (ms) of some samples."""
    latencies = sorted(s.elapsed for s in samples)
    if not latencies:
        return {"requests": 0}

    def pct(q: float) -> float:
        return round(latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000, 1)

    span = max(s.started + s.elapsed for s in samples) - min(s.started for s in samples)
    return {
        "requests": len(samples),
        "by_status": histogram(samples),
        "rps": round(len(samples) / span, 1) if span > 0 else None,
        "latency_ms": {
            "p50": pct(0.50),
            "p95": pct(0.95),
            "p99": pct(0.99),
            "max": round(latencies[-1] * 1000, 1),
            "mean": round(statistics.fmean(latencies) * 1000, 1),
        },
    }


@dataclass
class Load:
    """Records every request made through `request`; `run` drives concurrent loops."""

    client: httpx.AsyncClient
    phase: str = "load"
    samples: list[Sample] = field(default_factory=list)

    async def request(
        self, method: str, url: str, *, route: str | None = None, **kwargs: Any
    ) -> httpx.Response | None:
        """One request; None when it failed below HTTP (the failure is recorded)."""
        phase, started = self.phase, time.monotonic()
        try:
            response = await self.client.request(method, url, **kwargs)
        except httpx.HTTPError as exc:
            self.samples.append(
                Sample(phase, method, route or url, type(exc).__name__, started, _since(started))
            )
            return None
        content_type = response.headers.get("content-type", "")
        code = None
        if response.status_code >= 400 and content_type == PROBLEM_MEDIA_TYPE:
            code = response.json().get("code")
        self.samples.append(
            Sample(
                phase,
                method,
                route or url,
                str(response.status_code),
                started,
                _since(started),
                content_type,
                code,
            )
        )
        return response

    async def run(
        self,
        step: Callable[[Load, int], Awaitable[None]],
        *,
        concurrency: int,
        duration: float | None = None,
        stop: asyncio.Event | None = None,
    ) -> None:
        """`concurrency` loops calling `step(load, loop_index)` until `duration` seconds have
        passed or `stop` is set (a step already started always finishes)."""
        assert duration is not None or stop is not None
        deadline = time.monotonic() + duration if duration is not None else float("inf")
        stop = stop or asyncio.Event()

        async def loop(index: int) -> None:
            while not stop.is_set() and time.monotonic() < deadline:
                await step(self, index)

        await asyncio.gather(*(loop(i) for i in range(concurrency)))

    def in_phase(self, *phases: str) -> list[Sample]:
        return [s for s in self.samples if s.phase in phases]


def _since(started: float) -> float:
    return time.monotonic() - started


def server_errors(samples: list[Sample]) -> list[Sample]:
    """5xx responses and transport failures (a hung or dropped request counts as an error)."""
    return [s for s in samples if not s.is_http or s.status_code >= 500]


def not_problem_json(samples: list[Sample]) -> list[Sample]:
    return [s for s in samples if s.status_code >= 400 and s.content_type != PROBLEM_MEDIA_TYPE]


async def wait_until(
    probe: Callable[[], Awaitable[bool]], *, timeout: float, interval: float = 0.1
) -> float | None:
    """Seconds until `probe()` is true, or None if it was not within `timeout`."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        try:
            if await probe():
                return time.monotonic() - started
        except httpx.HTTPError:
            pass
        await asyncio.sleep(interval)
    return None
