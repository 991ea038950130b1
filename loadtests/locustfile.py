"""Open-loop Locust load for the blueprint service: requests start on a schedule, not on replies.

Locust has no arrival-rate mode, so this file adds one (small on purpose). Each Locust user is a
*scheduler*: it draws start times (constant or Poisson) at its share of LOADTEST_RATE and hands
each start to a bounded pool of greenlets. A start that finds no free slot is counted as
"dropped"; one that begins more than LOADTEST_LATE_MS after its scheduled time is counted as
"late" (the client, not the server, fell behind). Every request's time is measured from its
*scheduled* start, so a stalled server shows in the latency instead of slowing the load
(no coordinated omission). Both counts appear in Locust's statistics as "SCHED late" and
"SCHED dropped" entries, so they aggregate across --processes like any request.

Self-contained (locust and the standard library only) so the in-cluster load test ships this one
file in a ConfigMap. Run one scheduler per Locust process: `-u` equals the process count.

    LOADTEST_PASSWORD    password of the seeded accounts (`python -m service seed-loadtest`)
    LOADTEST_USERS       how many accounts were seeded (loadtest-0 ... -(N-1)@example.com); 20
    LOADTEST_API_KEY     an API key on a *limited* rate-limit tier, for the API-key client
    LOADTEST_RATE        total arrival rate, requests/s over all schedulers; 10
    LOADTEST_SCHEDULERS  how many schedulers share it (= -u, one per process); 1
    LOADTEST_ARRIVALS    poisson | constant; poisson
    LOADTEST_SLOTS       requests in flight per scheduler at most; 256
    LOADTEST_LATE_MS     a start later than this is "late"; 50
    LOADTEST_MIX         op=fraction,...; DEFAULT_MIX (loadtests/sizing/mix.py builds it)
    LOADTEST_WARMUP      seconds after the start whose statistics are discarded; 0
    LOADTEST_PROBES      1: the first scheduler also sends liveness/readiness probes every
                         PROBE_PERIOD_S each (the kubelet's rate; not load, reported apart); 1
    LOADTEST_MAX_FAIL_RATIO  the run exits 1 above this share of failed requests; 0.001
    LOADTEST_MAX_P95_MS  ... or when an operation's p95 is above this; 0 (no latency threshold)

Accounts are partitioned: scheduler i of S uses the accounts j with j % S == i, so two processes
never share a token or an item. 429 answers are recorded as "429 <op>" failures and the account
waits out Retry-After before it is used again.
"""

from __future__ import annotations

import itertools
import logging
import os
import random
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlencode

import gevent
from gevent.pool import Pool
from locust import FastHttpUser, constant, events, task
from locust.env import Environment
from locust.runners import WorkerRunner

API = "/api/v1"
PAGE = 20
DEFAULT_MIX = (
    "me=0.15,list_items=0.3,read_item=0.2,list_users_api_key=0.05,"
    "create_item=0.1,update_item=0.1,delete_item=0.1"
)
PROBE_PERIOD_S = 10.0
SETUP_ITEMS = 3  # items each account starts with, so reads, updates and deletes have targets
RATE_LIMITED = "429 "
SCHED = "SCHED"  # request type of the schedule's own entries: "late" and "dropped"


def _env(name: str, default: str) -> str:
    return os.environ.get(name, default) or default


PASSWORD = os.environ.get("LOADTEST_PASSWORD", "")
ACCOUNTS = max(1, int(_env("LOADTEST_USERS", "20")))
API_KEY = os.environ.get("LOADTEST_API_KEY", "")
RATE = float(_env("LOADTEST_RATE", "10"))
SCHEDULERS = max(1, int(_env("LOADTEST_SCHEDULERS", "1")))
ARRIVALS = _env("LOADTEST_ARRIVALS", "poisson")
SLOTS = max(1, int(_env("LOADTEST_SLOTS", "256")))
# A shared 2-core machine deschedules the client for tens of milliseconds now and then; later
# than this and the arrival process is visibly burstier than the one asked for.
LATE_S = float(_env("LOADTEST_LATE_MS", "50")) / 1000
WARMUP_SECONDS = float(_env("LOADTEST_WARMUP", "0"))
PROBES = _env("LOADTEST_PROBES", "1") == "1"
MAX_FAIL_RATIO = float(_env("LOADTEST_MAX_FAIL_RATIO", "0.001"))
MAX_LATE_RATIO = 0.001  # late or dropped starts: above this the schedule was not kept
MAX_P95_MS = float(_env("LOADTEST_MAX_P95_MS", "0"))
log = logging.getLogger("loadtest")
_local_index = itertools.count()


def parse_mix(text: str) -> dict[str, float]:
    mix = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        op, _, value = part.partition("=")
        mix[op.strip()] = float(value)
    return mix


MIX = parse_mix(_env("LOADTEST_MIX", DEFAULT_MIX))


def gaps(rate: float, kind: str, rng: random.Random) -> Any:
    """Seconds between scheduled starts: exponential (Poisson arrivals) or fixed."""
    if rate <= 0:
        raise ValueError("LOADTEST_RATE must be positive")
    if kind == "constant":
        return itertools.repeat(1 / rate)
    if kind == "poisson":
        return (rng.expovariate(rate) for _ in itertools.count())
    raise ValueError(f"LOADTEST_ARRIVALS is {kind!r}, not poisson or constant")


def my_accounts(index: int, schedulers: int, accounts: int) -> list[str]:
    return [f"loadtest-{j}@example.com" for j in range(index % schedulers, accounts, schedulers)]


@events.init.add_listener
def _check_config(environment: Environment, **_: Any) -> None:
    if not PASSWORD and not isinstance(environment.runner, WorkerRunner):
        log.warning("LOADTEST_PASSWORD is not set: logins will fail (seed with the same password)")


@events.test_start.add_listener
def _schedule_warmup_reset(environment: Environment, **_: Any) -> None:
    # Threads are greenlets under Locust's monkey-patching; the master (or local runner) owns stats.
    if WARMUP_SECONDS > 0 and not isinstance(environment.runner, WorkerRunner):
        threading.Timer(WARMUP_SECONDS, environment.stats.reset_all).start()


def threshold_problems(environment: Environment) -> list[str]:
    """Why the run failed its thresholds (empty: it passed)."""
    entries = list(environment.stats.entries.values())
    sent = [e for e in entries if e.method != SCHED and not e.name.startswith("setup_")]
    schedule = {e.name: e.num_requests for e in entries if e.method == SCHED}
    requests = sum(e.num_requests for e in sent)
    if not requests:
        return ["no requests were made"]
    problems = []
    failed = sum(e.num_failures for e in sent) / requests
    if failed > MAX_FAIL_RATIO:
        problems.append(f"{failed:.2%} of requests failed (threshold {MAX_FAIL_RATIO:.2%})")
    dropped = schedule.get("dropped", 0)
    off = (schedule.get("late", 0) + dropped) / (requests + dropped)
    if off > MAX_LATE_RATIO:
        problems.append(f"{off:.2%} of starts were late or dropped: the schedule was not kept")
    for entry in sent:
        p95 = entry.get_response_time_percentile(0.95) if entry.num_requests else 0
        if MAX_P95_MS and p95 > MAX_P95_MS:
            problems.append(f"{entry.name} p95 {p95:.0f} ms is over {MAX_P95_MS:.0f} ms")
    return problems


@events.quitting.add_listener
def _thresholds(environment: Environment, **_: Any) -> None:
    # The master (or local runner) holds the totals; a Job's pod then exits non-zero.
    if isinstance(environment.runner, WorkerRunner):
        return
    if problems := threshold_problems(environment):
        log.error("thresholds failed: %s", "; ".join(problems))
        environment.process_exit_code = 1


class Account:
    def __init__(self, email: str) -> None:
        self.email = email
        self.headers: dict[str, str] = {}
        self.items: list[str] = []
        # Items requests in flight use, with how many use each: never deleted meanwhile. A count,
        # not a set: when two reads hold one item, the first to finish must not free it.
        self.busy: Counter[str] = Counter()
        self.until = 0.0  # rate-limited until (monotonic)

    @contextmanager
    def using(self, item: str) -> Iterator[None]:
        self.busy[item] += 1
        try:
            yield
        finally:
            self.busy[item] -= 1
            if not self.busy[item]:
                del self.busy[item]

    def free_items(self) -> list[str]:
        """The items no request in flight uses: the ones a delete may take."""
        return [item for item in self.items if not self.busy[item]]


class Arrivals(FastHttpUser):
    """One scheduler: open-loop starts at RATE / SCHEDULERS through at most SLOTS in flight."""

    wait_time = constant(0)
    concurrency = SLOTS  # the HTTP client's connection pool matches the in-flight bound

    def on_start(self) -> None:
        runner = self.environment.runner
        index = runner.worker_index if isinstance(runner, WorkerRunner) else next(_local_index)
        self.index = index
        self.rng = random.Random(index)
        self.accounts = [Account(e) for e in my_accounts(index, SCHEDULERS, ACCOUNTS)]
        if not self.accounts:
            raise ValueError(f"scheduler {index} has no account: seed more than {SCHEDULERS}")
        self.ops = [op for op in MIX if MIX[op] > 0]
        self.weights = list(itertools.accumulate(MIX[op] for op in self.ops))
        self.pool = Pool(SLOTS)
        self.setup()
        self.probes = gevent.spawn(self.probe_loop) if PROBES and index == 0 else None

    def setup(self) -> None:
        """Log every account in and give it a few items, one request at a time, before the
        schedule starts (inside the warm-up): a new Locust process must not open with a login
        storm that no steady state has."""
        for account in self.accounts:
            self.login(account, time.perf_counter(), name="setup_login")
            for _ in range(SETUP_ITEMS):
                self.create_item(account, time.perf_counter(), name="setup_create")

    def on_stop(self) -> None:
        self.pool.kill(block=False)
        if self.probes is not None:
            self.probes.kill(block=False)

    def record(self, name: str, started: float, exception: Exception | None = None) -> None:
        self.environment.events.request.fire(
            request_type=SCHED,
            name=name,
            response_time=(time.perf_counter() - started) * 1000,
            response_length=0,
            exception=exception,
            context={},
        )

    @task
    def schedule(self) -> None:
        due = time.perf_counter()
        for gap in gaps(RATE / SCHEDULERS, ARRIVALS, self.rng):
            due += gap
            delay = due - time.perf_counter()
            if delay > 0:
                gevent.sleep(delay)
            if time.perf_counter() - due > LATE_S:
                self.record("late", due)
            if self.pool.full():
                self.record("dropped", due, RuntimeError("no free slot"))
                continue
            op = self.rng.choices(self.ops, cum_weights=self.weights)[0]
            self.pool.spawn(self.send, op, due)

    def probe_loop(self) -> None:
        while True:
            for name, path in (("probe_live", "/health/live"), ("probe_ready", "/health/ready")):
                self.call(name, time.perf_counter(), "GET", path, check=_status_ok)
            gevent.sleep(PROBE_PERIOD_S)

    # --- one request ----------------------------------------------------------------------

    def call(
        self,
        name: str,
        due: float,
        method: str,
        path: str,
        account: Account | None = None,
        expect: int = 200,
        check: Any = None,
        **kwargs: Any,
    ) -> Any:
        """Send one request timed from `due`; return the parsed body when it passes `check`."""
        headers = {**(account.headers if account else {}), **kwargs.pop("headers", {})}
        with self.client.request(
            method, path, name=name, headers=headers, catch_response=True, **kwargs
        ) as response:
            response.request_meta["response_time"] = (time.perf_counter() - due) * 1000
            status = response.status_code
            if status == 429:
                response.request_meta["name"] = RATE_LIMITED + name
                retry = response.headers.get("Retry-After") or "1"
                if account is not None:
                    account.until = time.monotonic() + float(retry)
                response.failure(f"rate limited (Retry-After: {retry})")
                return None
            if status != expect:
                response.failure(f"HTTP {status}, expected {expect}: {(response.text or '')[:200]}")
                if status == 401 and account is not None:
                    account.headers = {}
                return None
            body = response.json() if response.content else None
            problem = check(body) if check else None
            if problem:
                response.failure(f"invalid response: {problem}")
                return None
            response.success()
            return body if body is not None else True

    def account(self, with_items: bool = False) -> Account | None:
        now = time.monotonic()
        ready = [a for a in self.accounts if a.until <= now and (not with_items or a.items)]
        return self.rng.choice(ready) if ready else None

    def send(self, op: str, due: float) -> None:
        account = self.account(with_items=op in ("read_item", "update_item", "delete_item"))
        if account is None:  # no account has an item yet (the warm-up) or all are waiting
            op, account = "create_item", self.account()
            if account is None:
                self.record("dropped", due, RuntimeError("every account is rate-limited"))
                return
        if op == "login":
            self.login(account, due)
            return
        if not account.headers:  # first use, or the token expired: log in, then the request
            self.login(account, due)
            due = time.perf_counter()  # timed on its own: it could not start before the login
        getattr(self, op)(account, due)

    def login(self, account: Account, due: float, name: str = "login") -> None:
        body = self.call(
            name,
            due,
            "POST",
            f"{API}/auth/token",
            data=urlencode({"username": account.email, "password": PASSWORD}),
            headers={"Content-Type": "application/x-www-form-urlencoded"},
            check=lambda b: None if _has(b, "access_token", "token_type") else "no access_token",
        )
        if isinstance(body, dict):
            account.headers = {"Authorization": f"Bearer {body['access_token']}"}

    def me(self, account: Account, due: float) -> None:
        email = account.email
        self.call(
            "me",
            due,
            "GET",
            f"{API}/users/me",
            account,
            check=lambda b: None if _has(b, "email") and b["email"] == email else "not my account",
        )

    def list_items(self, account: Account, due: float) -> None:
        self.call(
            "list_items", due, "GET", f"{API}/items?limit={PAGE}&offset=0", account, check=_page
        )

    def read_item(self, account: Account, due: float) -> None:
        item = self.rng.choice(account.items)
        with account.using(item):
            self.call("read_item", due, "GET", f"{API}/items/{item}", account, check=_item(item))

    def create_item(self, account: Account, due: float, name: str = "create_item") -> None:
        title = f"load item {self.rng.randrange(1_000_000)}"
        body = self.call(
            name,
            due,
            "POST",
            f"{API}/items",
            account,
            expect=201,
            json={"title": title, "description": "created by the Locust schedule"},
            check=lambda b: None if _has(b, "id") and b.get("title") == title else "not created",
        )
        if isinstance(body, dict):
            account.items.append(body["id"])

    def update_item(self, account: Account, due: float) -> None:
        item = self.rng.choice(account.items)
        text = f"updated {self.rng.randrange(1_000_000)}"
        with account.using(item):
            self.call(
                "update_item",
                due,
                "PATCH",
                f"{API}/items/{item}",
                account,
                json={"description": text},
                check=lambda b: (
                    None if _has(b, "description") and b["description"] == text else "not updated"
                ),
            )

    def delete_item(self, account: Account, due: float) -> None:
        free = account.free_items()
        if not free:  # every item is in use by a request in flight: read instead of racing it
            self.list_items(account, due)
            return
        item = self.rng.choice(free)
        account.items.remove(item)
        self.call("delete_item", due, "DELETE", f"{API}/items/{item}", account, expect=204)

    def list_users_api_key(self, account: Account, due: float) -> None:
        # The API-key client (an integration on a limited tier), not the account's token.
        self.call(
            "list_users_api_key",
            due,
            "GET",
            f"{API}/users?limit={PAGE}&offset=0",
            headers={"X-API-Key": API_KEY},
            check=_page,
        )


def _has(body: Any, *keys: str) -> bool:
    return isinstance(body, dict) and all(k in body for k in keys)


def _status_ok(body: Any) -> str | None:
    return None if isinstance(body, dict) else "not a JSON object"


def _page(body: Any) -> str | None:
    if not _has(body, "items", "total", "limit", "offset") or not isinstance(body["items"], list):
        return "not a page (items, total, limit, offset)"
    return None if len(body["items"]) <= body["limit"] else "more items than the limit"


def _item(item: str) -> Any:
    return lambda b: None if _has(b, "id", "title") and b["id"] == item else "not the item asked"
