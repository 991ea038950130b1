"""Argon2 password hashing, off the event loop and bounded in concurrency."""

from __future__ import annotations

import contextlib
import os
import secrets
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import anyio
from pwdlib import PasswordHash
from pwdlib.hashers.argon2 import Argon2Hasher

from service.settings import Settings

T = TypeVar("T")
# Added to the hashing threads' nice value: they get the CPU after everything else.
NICE = 10


class PasswordHasher:
    def __init__(self, settings: Settings) -> None:
        self._hash = PasswordHash(
            (
                Argon2Hasher(
                    time_cost=settings.argon2_time_cost,
                    memory_cost=settings.argon2_memory_cost,
                    parallelism=settings.argon2_parallelism,
                ),
            )
        )
        self._limiter = anyio.CapacityLimiter(settings.password_hash_concurrency)
        # Verified against when the email is unknown, so both cases cost one Argon2 run and a
        # response time does not reveal which accounts exist.
        self._decoy = self._hash.hash(secrets.token_urlsafe(16))

    async def hash(self, password: str) -> str:
        return await anyio.to_thread.run_sync(
            _niced(self._hash.hash), password, limiter=self._limiter
        )

    async def verify(self, password: str, hashed: str | None) -> tuple[bool, str | None]:
        """(valid, new hash when the stored one used older parameters, else None)."""
        valid, updated = await anyio.to_thread.run_sync(
            _niced(self._hash.verify_and_update),
            password,
            hashed or self._decoy,
            limiter=self._limiter,
        )
        return valid and hashed is not None, updated


_thread_state = threading.local()


def _niced(work: Callable[..., T]) -> Callable[..., T]:
    """Run `work` in a thread of lower CPU priority (Linux schedules threads on their own),
    so a login flood yields the CPU to the event loop and every other request."""

    def run(*args: Any) -> T:
        if not getattr(_thread_state, "niced", False) and hasattr(os, "setpriority"):
            with contextlib.suppress(OSError):
                os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), NICE)
            _thread_state.niced = True
        return work(*args)

    return run
