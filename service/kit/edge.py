"""The service's edge: what every HTTP request gets on its way in and out, in one ASGI pass.

Request id, metrics, the access log, security headers, the body-size limit, the response
headers a scope key's object brings (the front door's rate-limit figures) and the catch-all
500. Each used to be its own pure-ASGI middleware; together they cost a coroutine frame, a
send-wrapper closure and an await per ASGI message per layer, most of what `/health/live` costs
above the floor app (docs/benchmarks.md). Here: one frame, one wrapper, one pass over the
request's headers, and the response headers prepared once, in __init__.
"""

from __future__ import annotations

import time
from random import getrandbits
from typing import Protocol

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.kit.error_handlers import internal_error
from service.kit.observability import (
    REQUEST_ID,
    SAFE_REQUEST_ID,
    UNLOGGED_PATHS,
    AccessLog,
    RequestMetrics,
)
from service.kit.problems import problem
from service.kit.security_headers import CSP, response_headers


class HeaderSource(Protocol):
    """What the edge finds under `header_source_key` in a request's scope."""

    def headers(self) -> list[tuple[bytes, bytes]]: ...


class Edge:
    """Pure ASGI, outermost (inside ProxyHeaders only), for every HTTP request:

    * the request id: the client's X-Request-ID when short and plain, else a new one; in a
      context variable for the logs and problem bodies, echoed in the response;
    * metrics by route template (RequestMetrics, written in batches), and the JSON access log
      (AccessLog; not the kubelet's probes);
    * security headers: the common ones, HSTS outside development, and the API's content
      security policy on every response that brings none (only service/docs' HTML pages do,
      each with the narrow policy its page needs);
    * the body limit: 413 problem+json when Content-Length is over `max_body_bytes`, before a
      byte is read; a chunked body is read up to the limit, then replayed to the app (hand
      written: Starlette's limit answers text/plain, and an error while FastAPI reads a body
      becomes a 400; either breaks the one-error-schema rule);
    * `header_source_key`: if the scope holds an object there when the response starts, its
      `headers()` are added, to every response, errors included. The front door leaves its
      rate-limit Quota there. A scope key rather than a registered callback: the front door
      already writes the scope, a missing key costs one dict lookup, and kit knows nothing
      of the front door (create_app passes the key);
    * the catch-all: an exception nothing mapped becomes a generic 500 problem (detail in the
      log only) if the response has not started, else it is re-raised. With CORS on,
      error_handlers.CatchUnhandled sits inside CORSMiddleware so that 500 carries CORS headers
      too; this one then only sees what escapes CORS itself.

    Also flushes the access log and the metrics at the lifespan's shutdown (Uvicorn ends the
    process right after, before any exit hook).
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        access_log_enabled: bool,
        metrics_enabled: bool,
        access_log_flush_seconds: float = 1.0,
        metrics_flush_seconds: float = 1.0,
        hsts: bool = False,
        max_body_bytes: int | None = None,
        header_source_key: str | None = None,
    ) -> None:
        self.app = app
        self.access_log = AccessLog(flush_seconds=access_log_flush_seconds)
        self.access_log_enabled = access_log_enabled
        self.metrics_enabled = metrics_enabled
        self.metrics = RequestMetrics(flush_seconds=metrics_flush_seconds)
        self.max_bytes = max_body_bytes
        self.header_source_key = header_source_key
        self._security_with_csp = response_headers(hsts=hsts)
        self._security = self._security_with_csp[1:]  # for a page with a policy of its own

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            if scope["type"] == "lifespan":
                send = self._flushing_at_shutdown(send)
            await self.app(scope, receive, send)
            return
        # One pass for what the edge reads; the last of a repeated header counts, as in a dict.
        raw_id = b""
        declared: bytes | None = None
        chunked = False
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                raw_id = value
            elif name == b"content-length":
                declared = value
            elif name == b"transfer-encoding":
                chunked = True
        request_id = raw_id.decode("latin-1")
        if not SAFE_REQUEST_ID.match(request_id):
            # 32 hex digits, as uuid4().hex, without a UUID object (about a third of the edge's
            # own cost) and from the process's generator, not os.urandom (a getrandom(2) system
            # call per request, benchmarks/syscalls.py). Each forked worker reseeds it. A
            # request id correlates log lines; it is no secret: clients may send their own.
            request_id = f"{getrandbits(128):032x}"
            raw_id = request_id.encode()
        token = REQUEST_ID.set(request_id)
        id_header = (b"x-request-id", raw_id)
        status = 500  # if nothing is sent
        responded = False
        started = time.perf_counter()

        async def edge_send(message: Message) -> None:
            nonlocal status, responded
            if message["type"] == "http.response.start":
                responded = True
                status = message["status"]
                headers = message.setdefault("headers", [])
                if type(headers) is not list:
                    headers = message["headers"] = list(headers)
                self._add_headers(scope, headers)
                headers.append(id_header)
            await send(message)

        try:
            if self.max_bytes is not None and (declared is not None or chunked):
                limited = await self._limit_body(scope, receive, edge_send, declared)
                if limited is None:
                    return  # answered 413, or the client went away
                receive = limited
            await self.app(scope, receive, edge_send)
        except Exception as exc:
            if responded:
                raise
            await internal_error(scope["path"], exc)(scope, receive, edge_send)
        finally:
            elapsed = time.perf_counter() - started
            if self.metrics_enabled:
                # The template as OpenAPI shows it (/items/{item_id}): bounded label values.
                route = getattr(scope.get("route"), "path_format", "unmatched")
                self.metrics.count(scope["method"], route, status, elapsed)
            if self.access_log_enabled and scope["path"] not in UNLOGGED_PATHS:
                client = scope.get("client")
                self.access_log.write(
                    {
                        "method": scope["method"],
                        "path": scope["path"],
                        "status": status,
                        "duration_ms": round(elapsed * 1000, 2),
                        "client": client[0] if client else None,
                    }
                )
            REQUEST_ID.reset(token)

    def _add_headers(self, scope: Scope, headers: list[tuple[bytes, bytes]]) -> None:
        """The security headers, then the header source's (before the request id)."""
        headers += self._security if _has_csp(headers) else self._security_with_csp
        if self.header_source_key is not None:
            source: HeaderSource | None = scope.get(self.header_source_key)
            if source is not None:
                headers += source.headers()

    async def _limit_body(
        self, scope: Scope, receive: Receive, send: Send, declared: bytes | None
    ) -> Receive | None:
        """The receive to hand the app, or None once a 413 is sent (or the client left).

        Only requests with a body get here: a GET costs no extra frame."""
        assert self.max_bytes is not None
        if declared is not None:
            # Refused before a byte is read; the server enforces the declared length.
            if declared.isdigit() and int(declared) > self.max_bytes:
                await self._too_large(scope, receive, send)
                return None
            return receive
        # Chunked, of unknown length: read it up to the limit first, then replay it.
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return None  # the client went away
            body += message.get("body", b"")
            if len(body) > self.max_bytes:
                await self._too_large(scope, receive, send)
                return None
            if not message.get("more_body", False):
                return _replay(bytes(body), receive)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        detail = f"The request body exceeds {self.max_bytes} bytes."
        await problem("request.too_large", detail, instance=scope["path"])(scope, receive, send)

    def _flushing_at_shutdown(self, send: Send) -> Send:
        # Uvicorn shuts the app down once the last request is answered, then re-raises the
        # SIGTERM it caught, and that ends the process before any exit hook could run.
        async def send_after_flush(message: Message) -> None:
            if message["type"].startswith("lifespan.shutdown."):
                self.access_log.flush()
                self.metrics.flush()
            await send(message)

        return send_after_flush


def _has_csp(headers: list[tuple[bytes, bytes]]) -> bool:
    # A loop, not any(): no generator object on every response.
    for name, _ in headers:  # noqa: SIM110
        if name.lower() == CSP:
            return True
    return False


def _replay(body: bytes, receive: Receive) -> Receive:
    delivered = False

    async def replay() -> Message:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()  # afterwards: disconnect notifications

    return replay
