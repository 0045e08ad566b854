"""The HTTP server against clients that hold connections without finishing requests: a
connection that does not send a complete request head in time is closed, one over the
connection cap is closed at once, and a body that does not arrive in time gets 408
`body_timeout`; the service keeps answering everyone else throughout. Real sockets against
the real service on loopback."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest

from dissemination.api.guard import GUARD
from dissemination.service import Service
from dissemination.settings import load_settings
from tests.brokerutil import wait_until

pytestmark = pytest.mark.slow

HEAD = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: trickle\r\n"


async def guarded_service(env: dict[str, str]) -> AsyncIterator[tuple[Service, str, int]]:
    service = Service(load_settings(env))
    await service.start()
    host, port = service.http.addresses[0][:2]
    try:
        yield service, host, port
    finally:
        await service.stop()


@pytest.fixture
async def short_deadlines(service_env: dict[str, str]) -> AsyncIterator[tuple[Service, str, int]]:
    env = service_env | {
        "DISSEMINATION_HTTP_HEADER_TIMEOUT_SECONDS": "0.5",
        "DISSEMINATION_HTTP_BODY_TIMEOUT_SECONDS": "0.5",
        "DISSEMINATION_HTTP_MAX_CONNECTIONS": "64",
    }
    async for running in guarded_service(env):
        yield running


@pytest.fixture
async def small_cap(service_env: dict[str, str]) -> AsyncIterator[tuple[Service, str, int]]:
    env = service_env | {"DISSEMINATION_HTTP_MAX_CONNECTIONS": "5"}
    async for running in guarded_service(env):
        yield running


async def healthy(host: str, port: int) -> bool:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://{host}:{port}/healthz") as response,
    ):
        return response.status == 200


async def closed_by_server(reader: asyncio.StreamReader, within: float) -> bool:
    """Whether the server closes the connection (EOF, or a reset) within `within` seconds."""
    try:
        async with asyncio.timeout(within):
            while await reader.read(1024):
                pass
    except TimeoutError:
        return False
    except ConnectionError:
        return True
    return True


async def test_connections_that_trickle_their_head_are_closed(
    short_deadlines: tuple[Service, str, int],
) -> None:
    _service, host, port = short_deadlines
    started = time.monotonic()
    trickling = [await asyncio.open_connection(host, port) for _ in range(20)]
    for _reader, writer in trickling:
        writer.write(HEAD)  # never the blank line that ends the head
        await writer.drain()
    assert await healthy(host, port)  # everyone else is still served meanwhile
    results = await asyncio.gather(*(closed_by_server(reader, 5.0) for reader, _ in trickling))
    assert all(results)
    assert time.monotonic() - started >= 0.5  # held to the deadline, not refused at once
    for _reader, writer in trickling:
        writer.close()
    assert await healthy(host, port)


async def test_a_body_that_does_not_arrive_in_time_gets_408(
    short_deadlines: tuple[Service, str, int],
) -> None:
    _service, host, port = short_deadlines
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(
        b"POST /api/v1/alerts HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: 100\r\n\r\n{"
    )
    await writer.drain()
    async with asyncio.timeout(5):
        status_line = await reader.readline()
        head = await reader.readuntil(b"\r\n\r\n")
    assert status_line.split()[1] == b"408"
    length = next(
        int(line.split(b":")[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    body = json.loads(await reader.readexactly(length))
    assert body["error"]["code"] == "body_timeout"
    writer.close()


async def test_connections_over_the_cap_are_closed_at_once(
    small_cap: tuple[Service, str, int],
) -> None:
    service, host, port = small_cap
    held = [await asyncio.open_connection(host, port) for _ in range(5)]

    async def all_held() -> bool:
        return len(service.http.app[GUARD].connections) == 5

    await wait_until(all_held, timeout=5, what="five connections held")
    reader, writer = await asyncio.open_connection(host, port)
    assert await closed_by_server(reader, 2.0)
    writer.close()
    for _reader, held_writer in held:
        held_writer.close()
        await held_writer.wait_closed()

    async def room_again() -> bool:
        return len(service.http.app[GUARD].connections) < 5

    await wait_until(room_again, timeout=5, what="the held connections to close")
    assert await healthy(host, port)
    assert service.http.app[GUARD].refused == 1
