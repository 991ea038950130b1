"""A TCP proxy that can lose its upstream on purpose: 127.0.0.1:<port> -> target.

It runs its own event loop in a background thread, so a test (or a blocking call in it) never
slows the forwarding down. Two ways to lose the database:

- `cut("refuse")`: every connection is reset and the port stops listening (a crashed or
  restarting server: clients fail fast with "connection refused");
- `cut("blackhole")`: connections are accepted and nothing flows either way, on new or
  existing ones (a network partition: only the client's own timeouts end a wait).

`restore()` forwards again; connections that lived through the cut are reset (their peer has
long given up on them).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Coroutine
from typing import Any, Literal

CutMode = Literal["refuse", "blackhole"]


class TcpProxy:
    def __init__(self, target_host: str, target_port: int, *, port: int = 0) -> None:
        self.target = (target_host, target_port)
        self.port = port
        self.mode: CutMode | None = None
        self.connections_total = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._flowing: asyncio.Event | None = None

    # --- control, from any thread -------------------------------------------------------
    def start(self) -> TcpProxy:
        self._thread.start()
        self._call(self._init_flow())
        self._call(self._listen())
        return self

    def cut(self, mode: CutMode = "refuse") -> None:
        self._call(self._cut(mode))

    def restore(self) -> None:
        self._call(self._restore())

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        self._call(self._shutdown())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()

    def _call(self, coro: Coroutine[Any, Any, None]) -> None:
        asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=10)

    # --- inside the proxy's loop -----------------------------------------------------------
    async def _init_flow(self) -> None:
        self._flowing = asyncio.Event()
        self._flowing.set()

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(
            self._handle, "127.0.0.1", self.port, reuse_address=True
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def _cut(self, mode: CutMode) -> None:
        assert self._flowing is not None
        self.mode = mode
        self._flowing.clear()
        if mode == "refuse":
            await self._close_listener()
            self._reset_all()

    async def _restore(self) -> None:
        assert self._flowing is not None
        self._reset_all()
        if self._server is None:
            await self._listen()
        self.mode = None
        self._flowing.set()

    async def _shutdown(self) -> None:
        await self._close_listener()
        self._reset_all()

    async def _close_listener(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    def _reset_all(self) -> None:
        for writer in list(self._writers):
            transport = writer.transport
            if isinstance(transport, asyncio.Transport):
                transport.abort()  # RST, not a polite FIN
        self._writers.clear()

    async def _handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        assert self._flowing is not None
        self.connections_total += 1
        self._writers.add(client_w)
        # In a blackhole, even the upstream connection waits: nothing reaches the server.
        await self._flowing.wait()
        if client_w not in self._writers:  # reset while it waited
            return
        try:
            upstream_r, upstream_w = await asyncio.open_connection(*self.target)
        except OSError:
            client_w.transport.abort()
            self._writers.discard(client_w)
            return
        self._writers.add(upstream_w)
        await asyncio.gather(
            self._pipe(client_r, upstream_w, client_w),
            self._pipe(upstream_r, client_w, upstream_w),
        )

    async def _pipe(
        self, source: asyncio.StreamReader, sink: asyncio.StreamWriter, own: asyncio.StreamWriter
    ) -> None:
        assert self._flowing is not None
        try:
            while data := await source.read(65536):
                await self._flowing.wait()  # a blackhole holds the bytes
                if own not in self._writers or sink not in self._writers:
                    break
                sink.write(data)
                await sink.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            for writer in (sink, own):
                if writer in self._writers:
                    self._writers.discard(writer)
                    with contextlib.suppress(OSError, RuntimeError):
                        writer.close()
