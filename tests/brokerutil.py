"""Test-side RabbitMQ helpers: publish with confirms, read dead letters, await conditions."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aio_pika
import pytest
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractRobustConnection

from dissemination.broker.topology import broker_url, connect, declare_intake
from dissemination.settings import Settings


async def open_connection(settings: Settings) -> AbstractRobustConnection:
    return await aio_pika.connect_robust(broker_url(settings.broker))


async def publish(
    channel: AbstractChannel,
    settings: Settings,
    body: bytes,
    content_type: str | None = "application/json",
    routing_key: str = "test.alert",
    message_id: str | None = None,
) -> None:
    """Publish to the alerts exchange of `settings` and wait for the broker's confirm."""
    exchange = await channel.get_exchange(settings.broker.exchange)
    await exchange.publish(
        aio_pika.Message(
            body,
            content_type=content_type,
            message_id=message_id,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            user_id=settings.broker.username,
        ),
        routing_key=routing_key,
        mandatory=True,
    )


async def get_all(
    channel: AbstractChannel, queue_name: str, expected: int, timeout: float = 15
) -> list[AbstractIncomingMessage]:
    """Take `expected` messages from a queue (acking them), waiting up to `timeout` seconds."""
    queue = await channel.get_queue(queue_name)
    messages: list[AbstractIncomingMessage] = []
    deadline = time.monotonic() + timeout
    while len(messages) < expected and time.monotonic() < deadline:
        message = await queue.get(fail=False, timeout=5)
        if message is None:
            await asyncio.sleep(0.02)
            continue
        await message.ack()
        messages.append(message)
    return messages


def rejection_of(message: AbstractIncomingMessage) -> tuple[str, list[dict[str, Any]]]:
    headers = message.headers
    reason = headers["x-rejection-reason"]
    errors = headers["x-rejection-errors"]
    assert isinstance(reason, str)
    assert isinstance(errors, str | bytes)
    return reason, json.loads(errors)


async def queue_depth(channel: AbstractChannel, queue_name: str) -> int:
    """Messages ready in a queue, asked of the broker now (a robust channel's passive declare
    would answer from its cache)."""
    underlay = await channel.get_underlay_channel()
    result = await underlay.queue_declare(queue_name, passive=True)
    return int(result.message_count or 0)


async def wait_until(
    condition: Callable[[], Awaitable[bool]], timeout: float = 20, what: str = "condition"
) -> None:
    """Poll `condition` until it holds; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not await condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.02)


def close_connections(vhost: str) -> None:
    """Close every client connection to `vhost` from the broker's side."""
    subprocess.run(
        ["rabbitmqctl", "-q", "close_all_connections", "--vhost", vhost, "closed by test"],
        check=True,
        capture_output=True,
        timeout=60,
    )


@pytest.fixture(name="channel")
async def intake_channel_fixture(settings: Settings) -> AsyncIterator[AbstractChannel]:
    """A channel with the intake topology declared, so messages can wait for the service."""
    connection = await connect(settings.broker, "test-publisher")
    channel = await connection.channel(publisher_confirms=True)
    await declare_intake(channel, settings.broker)
    yield channel
    await connection.close()
