"""Uvicorn, as the service runs it: a deadline for reading each request's headers.

Uvicorn has no such timeout: its keep-alive timer starts only after a response and any byte
cancels it, so a connection that sends nothing, or a header a byte at a time (slowloris), stays
open for ever. This protocol closes a connection whose request headers are not complete within
REQUEST_HEADER_TIMEOUT seconds of the connection opening or of the request's first byte.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn_worker import UvicornWorker as BaseUvicornWorker

from service.settings import get_settings

PROTOCOL = "service.http_server:HeaderTimeoutProtocol"


class HeaderTimeoutProtocol(HttpToolsProtocol):
    _header_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm()

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._disarm()
        timeout = get_settings().request_header_timeout
        self._header_deadline = self.loop.call_later(timeout, self._headers_too_slow)

    def _disarm(self) -> None:
        if self._header_deadline is not None:
            self._header_deadline.cancel()
            self._header_deadline = None

    def _headers_too_slow(self) -> None:
        self._header_deadline = None
        if not self.transport.is_closing():
            self.transport.close()


class UvicornWorker(BaseUvicornWorker):
    """Gunicorn's worker class: uvicorn_worker's, with the header deadline and no Server
    header (it only advertises the stack)."""

    CONFIG_KWARGS: dict[str, Any] = {
        **BaseUvicornWorker.CONFIG_KWARGS,
        "http": PROTOCOL,
        "server_header": False,
        # X-Forwarded-For is handled in one place: the app (main.py, TRUSTED_PROXIES).
        "proxy_headers": False,
    }
