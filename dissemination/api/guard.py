"""The HTTP server's defence against clients that hold connections without finishing requests
(slowloris): a cap on open connections, a deadline for a connection to send a complete
request head once it is open or idle, and a deadline for a request's body.

aiohttp's server has neither a header nor a body read timeout of its own. The guard wraps
the server's protocol factory (`GuardedRunner`), so it sees every connection: one over the
cap is closed at once, and a sweep closes those with no request under way that have been
idle longer than the head deadline. `guard_middleware` marks a request as under way, and
reads its body within the body deadline (408 `body_timeout` otherwise) before the handler
runs; handlers then read the body already in memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import structlog
from aiohttp import web
from aiohttp.web_server import Server

from dissemination.api.errors import ApiError

log = structlog.stdlib.get_logger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(slots=True)
class ConnectionState:
    """One open connection: requests under way, and since when it has been idle."""

    transport: asyncio.BaseTransport
    idle_since: float
    active: int = 0


@dataclass(slots=True)
class ConnectionGuard:
    """Open connections, capped, and the deadlines they are held to."""

    max_connections: int
    head_timeout: float
    body_timeout: float
    clock: Callable[[], float] = time.monotonic
    connections: dict[int, ConnectionState] = field(default_factory=dict)
    refused: int = 0
    closed_idle: int = 0

    def opened(self, transport: asyncio.BaseTransport) -> bool:
        """Track a new connection; False (and it is closed) when the cap is reached."""
        if len(self.connections) >= self.max_connections:
            self.refused += 1
            transport.close()
            return False
        self.connections[id(transport)] = ConnectionState(transport, self.clock())
        return True

    def closed(self, transport: asyncio.BaseTransport) -> None:
        self.connections.pop(id(transport), None)

    def request_started(self, transport: asyncio.BaseTransport | None) -> ConnectionState | None:
        state = self.connections.get(id(transport)) if transport is not None else None
        if state is not None:
            state.active += 1
        return state

    def request_ended(self, state: ConnectionState | None) -> None:
        if state is not None:
            state.active -= 1
            state.idle_since = self.clock()

    def sweep(self) -> int:
        """Close the connections idle past the head deadline; returns how many."""
        deadline = self.clock() - self.head_timeout
        stale = [
            state
            for state in self.connections.values()
            if state.active == 0 and state.idle_since < deadline
        ]
        for state in stale:
            self.closed(state.transport)
            state.transport.close()
        self.closed_idle += len(stale)
        return len(stale)

    async def run(self) -> None:
        """Sweep now and then until cancelled."""
        interval = max(0.05, min(1.0, self.head_timeout / 4))
        while True:
            await asyncio.sleep(interval)
            if self.sweep():
                log.info("idle_connections_closed")


GUARD = web.AppKey("connection_guard", ConnectionGuard)


class GuardedProtocol(asyncio.Protocol):
    """aiohttp's protocol for one connection, seen by the guard when it opens and closes; a
    connection over the cap never reaches aiohttp."""

    def __init__(self, inner: asyncio.Protocol, guard: ConnectionGuard) -> None:
        self.inner = inner
        self.guard = guard
        self.transport: asyncio.BaseTransport | None = None
        self.accepted = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.accepted = self.guard.opened(transport)
        if self.accepted:
            self.inner.connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.transport is not None:
            self.guard.closed(self.transport)
        if self.accepted:
            self.inner.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.accepted:
            self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received() if self.accepted else None

    def pause_writing(self) -> None:
        if self.accepted:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        if self.accepted:
            self.inner.resume_writing()


class GuardedServer:
    """aiohttp's protocol factory, wrapped so that every connection passes the guard."""

    def __init__(self, inner: Server, guard: ConnectionGuard) -> None:
        self._inner = inner
        self._guard = guard

    def __call__(self) -> GuardedProtocol:
        return GuardedProtocol(self._inner(), self._guard)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class GuardedRunner(web.AppRunner):
    """An AppRunner whose sites accept connections through the guard."""

    def __init__(self, app: web.Application, guard: ConnectionGuard, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self.guard = guard
        app[GUARD] = guard

    async def _make_server(self) -> Server:
        server = await super()._make_server()
        return GuardedServer(server, self.guard)  # type: ignore[return-value]


@web.middleware
async def guard_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Mark the request as under way on its connection, and read its body within the body
    deadline (multipart bodies, which no route takes, are left to the handler)."""
    guard = request.app.get(GUARD)
    if guard is None:
        return await handler(request)
    state = guard.request_started(request.transport)
    try:
        if request.body_exists and not request.content_type.startswith("multipart/"):
            try:
                async with asyncio.timeout(guard.body_timeout):
                    await request.read()
            except TimeoutError:
                raise ApiError(
                    408,
                    "body_timeout",
                    f"the request body did not arrive within {guard.body_timeout:g} s",
                ) from None
        return await handler(request)
    finally:
        guard.request_ended(state)


async def guarding(guard: ConnectionGuard) -> Callable[[], Awaitable[None]]:
    """Start the guard's sweep; returns what stops it."""
    task = asyncio.create_task(guard.run(), name="http-connection-guard")

    async def stop() -> None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    return stop
