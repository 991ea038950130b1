"""Case 6 — abuse, against one production server (2 workers, real PostgreSQL and Redis):
oversized bodies get 413, a login flood for one account gets 429 before the password can be
guessed (and does not lock the owner out of their own address), slow or silent clients are cut
off and cannot starve other requests, security headers are on every answer, and CORS is granted
to the configured origins only."""

from __future__ import annotations

import asyncio
import socket
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.reliability.conftest import (
    PASSWORD,
    Databases,
    Servers,
    login,
    port_of,
    record_figures,
    seed_users,
    user_email,
)
from tests.reliability.load import Load, summarize
from tests.service.conftest import assert_problem
from tests.support.databases import REDIS_URL

MAX_BODY = 65_536
LOGIN_LIMIT = 5  # per address and username
USERNAME_LIMIT = 20  # per username, from anywhere
KEEPALIVE = 3
# Seconds a client gets to finish sending a request's headers.
HEADER_TIMEOUT = 3
ALLOWED_ORIGIN = "https://app.example"
# A connection that has not completed its request headers by then is dropped (or should be).
IDLE_SLACK = 5.0

pytestmark = pytest.mark.timeout(90)


@dataclass(frozen=True)
class Target:
    base_url: str
    port: int
    headers: dict[str, str]


@pytest.fixture(scope="module")
async def target(databases: Databases, module_servers: Servers) -> Target:
    database_url = await databases.create()
    seed_users(database_url, 3)
    server = module_servers.start(
        {
            "DATABASE_URL": database_url,
            "REDIS_URL": REDIS_URL,
            "MAX_BODY_BYTES": str(MAX_BODY),
            "RATE_LIMIT_LOGIN": f"{LOGIN_LIMIT}/minute",
            "RATE_LIMIT_LOGIN_USERNAME": f"{USERNAME_LIMIT}/hour",
            "RATE_LIMIT_USER": "100000/minute",
            "RATE_LIMIT_CLIENT": "100000/minute",
            # The ingress is the trusted proxy; here the test plays it, to show the
            # per-account limit holding against many client addresses.
            "TRUSTED_PROXIES": "127.0.0.1/32",
            "CORS_ORIGINS": ALLOWED_ORIGIN,
            "KEEPALIVE": str(KEEPALIVE),
            "REQUEST_HEADER_TIMEOUT": str(HEADER_TIMEOUT),
        }
    )
    async with httpx.AsyncClient(base_url=server.base_url) as client:
        headers = await login(client, user_email(2))
    return Target(server.base_url, port_of(server), headers)


@pytest.fixture
async def client(target: Target) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=target.base_url, timeout=30) as c:
        yield c


# --- oversized bodies -------------------------------------------------------------------------


async def test_oversized_bodies_get_413(client: httpx.AsyncClient, target: Target) -> None:
    big = b'{"title": "' + b"x" * MAX_BODY + b'"}'
    form = b"username=a&password=" + b"x" * MAX_BODY

    async def chunked(body: bytes) -> AsyncIterator[bytes]:
        for start in range(0, len(body), 8192):
            yield body[start : start + 8192]

    form_headers = {"Content-Type": "application/x-www-form-urlencoded"}

    json_headers = target.headers | {"Content-Type": "application/json"}
    declared = await client.post("/api/v1/items", content=big, headers=json_headers)
    # No Content-Length: the limit counts bytes as they arrive.
    streamed = await client.post("/api/v1/items", content=chunked(big), headers=json_headers)
    anonymous = await client.post("/api/v1/auth/token", content=form, headers=form_headers)
    streamed_form = await client.post(
        "/api/v1/auth/token", content=chunked(form), headers=form_headers
    )
    within = await client.post(
        "/api/v1/items", json={"title": "fits", "description": "y" * 10_000}, headers=target.headers
    )
    record_figures(
        "abuse-body-size",
        {
            "command": "pytest tests/reliability/test_abuse.py -k oversized",
            "max_body_bytes": MAX_BODY,
            "declared_length": declared.status_code,
            "chunked_no_length": streamed.status_code,
            "anonymous_login_form": anonymous.status_code,
            "anonymous_login_form_chunked": streamed_form.status_code,
            "body_within_limit": within.status_code,
        },
    )
    assert "content-length" not in streamed.request.headers
    assert within.status_code == 201
    assert_problem(declared, 413, "request.too_large")
    assert_problem(anonymous, 413, "request.too_large")
    assert_problem(streamed_form, 413, "request.too_large")
    # FastAPI turns any exception raised while it reads a JSON body into a 400, so a 413
    # raised from inside `receive` must not be swallowed on the way.
    assert_problem(streamed, 413, "request.too_large")


# --- login flood --------------------------------------------------------------------------------


async def _flood(
    client: httpx.AsyncClient, email: str, attempts: int, forwarded_for: list[str]
) -> list[httpx.Response]:
    async def attempt(i: int) -> httpx.Response:
        return await client.post(
            "/api/v1/auth/token",
            data={"username": email, "password": f"guess-{i:04d}"},
            headers={"X-Forwarded-For": forwarded_for[i % len(forwarded_for)]},
        )

    return list(await asyncio.gather(*(attempt(i) for i in range(attempts))))


async def test_login_flood_for_one_account_is_stopped_before_it_can_guess(
    client: httpx.AsyncClient,
) -> None:
    attempts = 60
    # One attacker address, then a botnet: a new address for every attempt.
    started = time.monotonic()
    single = await _flood(client, user_email(0), attempts, ["203.0.113.7"])
    single_s = time.monotonic() - started
    botnet = await _flood(
        client, user_email(1), attempts, [f"198.51.100.{i}" for i in range(attempts)]
    )
    botnet_s = time.monotonic() - started - single_s
    # The owner of the account flooded from one address logs in from their own address.
    owner = await client.post(
        "/api/v1/auth/token",
        data={"username": user_email(0), "password": PASSWORD},
        headers={"X-Forwarded-For": "192.0.2.100"},
    )
    # The right password for the account the botnet spent: shut until its window has room.
    right = await client.post(
        "/api/v1/auth/token",
        data={"username": user_email(1), "password": PASSWORD},
        headers={"X-Forwarded-For": "192.0.2.200"},
    )

    def statuses(responses: list[httpx.Response]) -> dict[str, int]:
        return dict(sorted(Counter(str(r.status_code) for r in responses).items()))

    record_figures(
        "abuse-login-flood",
        {
            "command": "pytest tests/reliability/test_abuse.py -k login_flood",
            "rate_limit_login": f"{LOGIN_LIMIT}/minute",
            "rate_limit_login_username": f"{USERNAME_LIMIT}/hour",
            "attempts_per_flood": attempts,
            "concurrent": True,
            "flood_seconds": [round(single_s, 1), round(botnet_s, 1)],
            "one_address": statuses(single),
            "one_address_per_attempt": statuses(botnet),
            "owner_from_own_address_after_flood": owner.status_code,
            "right_password_after_botnet": right.status_code,
        },
    )
    for flood, limit, seconds in (
        (single, _allowed(LOGIN_LIMIT, 60, single_s), single_s),
        (botnet, _allowed(USERNAME_LIMIT, 3600, botnet_s), botnet_s),
    ):
        guessed = [r for r in flood if r.status_code != 429]
        # The budget's burst, plus what it refilled while the flood ran (GCRA), were checked,
        # across both workers (one Redis budget); no more.
        assert len(guessed) <= limit, (statuses(flood), seconds)
        assert {r.status_code for r in guessed} <= {401}
        limited = [r for r in flood if r.status_code == 429]
        assert limited
        for response in limited[:3]:
            assert_problem(response, 429, "rate_limit.exceeded")
            assert int(response.headers["retry-after"]) >= 1
    assert owner.status_code == 200, owner.text
    assert_problem(right, 429, "rate_limit.exceeded")


def _allowed(amount: int, period_s: int, elapsed_s: float) -> int:
    """Requests a GCRA budget of `amount` per `period_s` lets through in `elapsed_s`."""
    return amount + int(elapsed_s / (period_s / amount))


# --- slow clients -------------------------------------------------------------------------------


def _closed_after(sock: socket.socket, limit: float, dribble: bytes = b"") -> float | None:
    """Seconds until the server closes `sock` (None: still open after `limit`). With `dribble`,
    one byte of it is sent every half second meanwhile (a slowloris)."""
    sock.settimeout(0.5)
    started = time.monotonic()
    sent = 0
    while time.monotonic() - started < limit:
        try:
            if sent < len(dribble):
                sock.send(dribble[sent : sent + 1])
                sent += 1
            if sock.recv(4096) == b"":
                return time.monotonic() - started
        except TimeoutError:
            continue
        except OSError:
            return time.monotonic() - started
    return None


@pytest.fixture
def raw_connections(target: Target) -> Iterator[list[socket.socket]]:
    opened: list[socket.socket] = []
    try:
        yield opened
    finally:
        for sock in opened:
            sock.close()


def _connect(target: Target, opened: list[socket.socket]) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", target.port), timeout=5)
    opened.append(sock)
    return sock


async def test_slow_clients_do_not_starve_other_requests(
    client: httpx.AsyncClient, target: Target, raw_connections: list[socket.socket]
) -> None:
    idle, slow = 200, 20
    for _ in range(idle):
        _connect(target, raw_connections)
    for sock in [_connect(target, raw_connections) for _ in range(slow)]:
        sock.send(b"GET /health/live HTTP/1.1\r\nHost: x\r\nX-Slow: ")  # never finished
    load = Load(client)

    async def step(load: Load, _: int) -> None:
        await load.request("GET", "/api/v1/items", params={"limit": 5}, headers=target.headers)

    await load.run(step, concurrency=8, duration=5)
    figures = summarize(load.samples)
    record_figures(
        "abuse-slow-clients-starvation",
        {
            "command": "pytest tests/reliability/test_abuse.py -k starve",
            "idle_connections": idle,
            "half_sent_requests": slow,
            "concurrent_normal_clients": 8,
            **figures,
        },
    )
    assert set(figures["by_status"]) == {"200"}, figures
    assert figures["latency_ms"]["max"] < 5000


async def test_silent_and_slow_clients_are_disconnected(
    target: Target, raw_connections: list[socket.socket]
) -> None:
    limit = max(KEEPALIVE, HEADER_TIMEOUT) + IDLE_SLACK
    # After a complete exchange, an idle keep-alive connection is closed after KEEPALIVE s.
    kept = _connect(target, raw_connections)
    kept.sendall(b"GET /health/live HTTP/1.1\r\nHost: x\r\n\r\n")
    assert kept.recv(4096).startswith(b"HTTP/1.1 200")
    silent = _connect(target, raw_connections)
    slowloris = _connect(target, raw_connections)
    request = b"GET /health/live HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 200 + b"\r\n\r\n"
    results = await asyncio.gather(
        asyncio.to_thread(_closed_after, kept, limit),
        asyncio.to_thread(_closed_after, silent, limit),
        asyncio.to_thread(_closed_after, slowloris, limit, request),
    )
    keepalive_closed, silent_closed, slowloris_closed = results
    figures: dict[str, Any] = {
        "command": "pytest tests/reliability/test_abuse.py -k disconnected",
        "keepalive_s": KEEPALIVE,
        "waited_up_to_s": limit,
        "idle_after_response_closed_after_s": _round(keepalive_closed),
        "silent_connection_closed_after_s": _round(silent_closed),
        "slowloris_closed_after_s": _round(slowloris_closed),
    }
    record_figures("abuse-slow-clients-timeouts", figures)
    assert keepalive_closed is not None, "an idle keep-alive connection was never closed"
    assert silent_closed is not None, (
        f"a connection that sends nothing stays open past {limit} s: no timeout covers the "
        "time before a request's headers arrive"
    )
    assert slowloris_closed is not None, (
        f"a client dribbling its headers (one byte per 0.5 s) stays connected past {limit} s: "
        "no request-header timeout"
    )


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


# --- headers ------------------------------------------------------------------------------------

SECURITY_HEADERS = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "strict-transport-security": "max-age=31536000; includeSubDomains",
}


async def test_security_headers_on_every_kind_of_answer(
    client: httpx.AsyncClient, target: Target
) -> None:
    answers = {
        "200": await client.get("/api/v1/users/me", headers=target.headers),
        "201": await client.post("/api/v1/items", json={"title": "h"}, headers=target.headers),
        "401": await client.get("/api/v1/items"),
        "404": await client.get("/no/such/route"),
        "405": await client.delete("/health/live"),
        "413": await client.post(
            "/api/v1/items",
            content=b"x" * (MAX_BODY + 1),
            headers=target.headers | {"Content-Type": "application/json"},
        ),
        "422": await client.post("/api/v1/items", json={}, headers=target.headers),
    }
    missing: dict[str, list[str]] = {}
    for status, response in answers.items():
        assert str(response.status_code) == status, (status, response.text)
        wanted = SECURITY_HEADERS | {"content-security-policy": "default-src 'none'"}
        missing[status] = [
            name for name, value in wanted.items() if value not in response.headers.get(name, "")
        ]
    record_figures(
        "abuse-security-headers",
        {
            "command": "pytest tests/reliability/test_abuse.py -k security_headers",
            "statuses_checked": sorted(answers),
            "missing": {k: v for k, v in missing.items() if v},
            "server_header": answers["200"].headers.get("server"),
        },
    )
    assert not any(missing.values()), missing


def _acao(response: httpx.Response) -> str | None:
    return response.headers.get("access-control-allow-origin")


async def test_cors_only_for_configured_origins(client: httpx.AsyncClient) -> None:
    def preflight(origin: str) -> dict[str, str]:
        return {"Origin": origin, "Access-Control-Request-Method": "POST"}

    allowed = await client.options("/api/v1/items", headers=preflight(ALLOWED_ORIGIN))
    denied = await client.options("/api/v1/items", headers=preflight("https://evil.example"))
    simple_allowed = await client.get("/health/live", headers={"Origin": ALLOWED_ORIGIN})
    simple_denied = await client.get("/health/live", headers={"Origin": "https://evil.example"})
    record_figures(
        "abuse-cors",
        {
            "command": "pytest tests/reliability/test_abuse.py -k cors",
            "cors_origins": ALLOWED_ORIGIN,
            "preflight_allowed": [
                allowed.status_code,
                allowed.headers.get("access-control-allow-origin"),
            ],
            "preflight_denied": [
                denied.status_code,
                denied.headers.get("access-control-allow-origin"),
            ],
            "preflight_denied_content_type": denied.headers.get("content-type"),
            "simple_denied_acao": _acao(simple_denied),
        },
    )
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == ALLOWED_ORIGIN
    assert "POST" in allowed.headers["access-control-allow-methods"]
    assert simple_allowed.headers["access-control-allow-origin"] == ALLOWED_ORIGIN
    assert "access-control-allow-origin" not in denied.headers
    assert "access-control-allow-origin" not in simple_denied.headers
