"""Locust journeys for the blueprint service: anonymous visitors, regular users and admins.

Self-contained (locust and the standard library only) so the Pulumi in-cluster load test can ship
this one file in a ConfigMap. Configured by environment variables:

    LOADTEST_PASSWORD  password of the seeded users (`python -m service seed-loadtest`); required
    LOADTEST_USERS     how many users were seeded (loadtest-0 ... loadtest-(N-1)@example.com); 20
    LOADTEST_API_KEY   the exempt-tier API key the seed printed, for the admin journey; without it
                       the admin logs in as loadtest-admin@example.com
    LOADTEST_WAIT      think time between tasks in seconds, "MIN-MAX" or "S"; "1-3"
    LOADTEST_WARMUP    seconds after the start whose statistics are discarded; 0

Run it against a local server or a deployed URL:

    locust -f loadtests/locustfile.py --host https://api.example.com \
        --headless -u 50 -r 10 -t 2m --csv build/locust

429 answers are not folded into the journeys' numbers: each one is recorded as a failure under
its own entry, "429 <name>", so rate limits never masquerade as capacity (or as errors of the
route itself).
"""

from __future__ import annotations

import itertools
import logging
import os
import random
import threading
from typing import Any
from urllib.parse import urlencode

from locust import FastHttpUser, between, events, task
from locust.env import Environment
from locust.runners import WorkerRunner

API = "/api/v1"
PASSWORD = os.environ.get("LOADTEST_PASSWORD", "")
SEEDED_USERS = max(1, int(os.environ.get("LOADTEST_USERS", "20")))
API_KEY = os.environ.get("LOADTEST_API_KEY", "")
WARMUP_SECONDS = float(os.environ.get("LOADTEST_WARMUP", "0"))
RATE_LIMITED = "429 "  # prefix of the entries that count rate-limited requests
MAX_ITEMS = 10  # items a user keeps at most, so list sizes stay steady over a long run
PAGE = 20

_wait_min, _, _wait_max = os.environ.get("LOADTEST_WAIT", "1-3").partition("-")
WAIT_TIME = between(float(_wait_min), float(_wait_max or _wait_min))
_accounts = itertools.count()  # spreads the simulated users over the seeded accounts
log = logging.getLogger("loadtest")


@events.init.add_listener
def _check_config(environment: Environment, **_: Any) -> None:
    if not PASSWORD and not isinstance(environment.runner, WorkerRunner):
        log.warning("LOADTEST_PASSWORD is not set: logins will fail (seed with the same password)")


@events.test_start.add_listener
def _schedule_warmup_reset(environment: Environment, **_: Any) -> None:
    # Threads are greenlets under Locust's monkey-patching; the master (or local runner) owns stats.
    if WARMUP_SECONDS > 0 and not isinstance(environment.runner, WorkerRunner):
        threading.Timer(WARMUP_SECONDS, environment.stats.reset_all).start()


class Journey(FastHttpUser):
    """A user whose every call is judged by `call`: 429s apart, unexpected statuses as failures."""

    abstract = True
    wait_time = WAIT_TIME
    headers: dict[str, str]
    email = ""  # the account to log in as; none for anonymous visitors

    def on_start(self) -> None:
        self.headers = {}

    def call(self, method: str, path: str, name: str, expect: int = 200, **kwargs: Any) -> Any:
        """Send one request; return the parsed JSON body (True for an empty body) or None."""
        headers = {**self.headers, **kwargs.pop("headers", {})}
        with self.client.request(
            method, path, name=name, headers=headers, catch_response=True, **kwargs
        ) as response:
            status = response.status_code
            if status == 429:
                response.request_meta["name"] = RATE_LIMITED + name
                retry = response.headers.get("Retry-After", "?")
                response.failure(f"rate limited (Retry-After: {retry})")
                return None
            if status != expect:
                response.failure(f"HTTP {status}, expected {expect}: {(response.text or '')[:200]}")
                self.on_unexpected(status)
                return None
            response.success()
            return response.json() if response.content else True

    def on_unexpected(self, status: int) -> None:
        if status == 401:  # the token expired (or the key was revoked): log in at the next task
            self.headers = {}

    def signed_in(self) -> bool:
        """Whether the user holds credentials, logging in (once, then reusing the token) if not."""
        if self.headers or not self.email:
            return bool(self.headers)
        body = self.call(
            "POST",
            f"{API}/auth/token",
            f"{API}/auth/token",
            data=urlencode({"username": self.email, "password": PASSWORD}),
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        if isinstance(body, dict) and "access_token" in body:
            self.headers = {"Authorization": f"Bearer {body['access_token']}"}
        return bool(self.headers)


class AnonymousVisitor(Journey):
    """Probes and documentation readers: no credentials."""

    weight = 2

    @task(3)
    def live(self) -> None:
        self.call("GET", "/health/live", "/health/live")

    @task(2)
    def ready(self) -> None:
        self.call("GET", "/health/ready", "/health/ready")

    @task(1)
    def openapi(self) -> None:
        self.call("GET", "/openapi.json", "/openapi.json")


class RegularUser(Journey):
    """Logs in once, reuses the token, and works on its own items."""

    weight = 10

    def on_start(self) -> None:
        super().on_start()
        self.email = f"loadtest-{next(_accounts) % SEEDED_USERS}@example.com"
        self.items: list[int | str] = []

    @task(2)
    def me(self) -> None:
        if self.signed_in():
            self.call("GET", f"{API}/users/me", f"{API}/users/me")

    @task(4)
    def list_items(self) -> None:
        if self.signed_in():
            self.call("GET", f"{API}/items?limit={PAGE}&offset=0", f"{API}/items")

    @task(2)
    def read_item(self) -> None:
        if self.signed_in() and self.items:
            item = random.choice(self.items)
            self.call("GET", f"{API}/items/{item}", f"{API}/items/[id]")

    @task(2)
    def create_or_delete(self) -> None:
        if not self.signed_in():
            return
        if len(self.items) >= MAX_ITEMS:
            self.delete_item()
            return
        n = random.randrange(1_000_000)
        body = {"title": f"load item {n}", "description": "created by the Locust journey"}
        created = self.call("POST", f"{API}/items", f"{API}/items", expect=201, json=body)
        if isinstance(created, dict) and "id" in created:
            self.items.append(created["id"])

    @task(1)
    def update_item(self) -> None:
        if self.signed_in() and self.items:
            item = random.choice(self.items)
            body = {"description": f"updated {random.randrange(1_000_000)}"}
            self.call("PATCH", f"{API}/items/{item}", f"{API}/items/[id]", json=body)

    @task(1)
    def delete_item(self) -> None:
        if self.signed_in() and self.items:
            item = self.items.pop(random.randrange(len(self.items)))
            self.call("DELETE", f"{API}/items/{item}", f"{API}/items/[id]", expect=204)


class Admin(Journey):
    """Lists users with the exempt API key (or, without one, a token of loadtest-admin)."""

    weight = 1

    def on_start(self) -> None:
        super().on_start()
        self.email = "loadtest-admin@example.com"
        if API_KEY:
            self.headers = {"X-API-Key": API_KEY}

    @task
    def list_users(self) -> None:
        if self.signed_in():
            offset = random.randrange(0, SEEDED_USERS, PAGE)
            self.call("GET", f"{API}/users?limit={PAGE}&offset={offset}", f"{API}/users")
