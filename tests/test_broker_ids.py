"""Every message the service publishes and every consumer it starts has an id of the
service's own: left unset, the AMQP client draws them from the `random` module's shared
generator, and the conformance test's property-based generation, running beside the service
in one process, warned that something else had moved it."""

from __future__ import annotations

import asyncio
import random

from aio_pika.abc import AbstractIncomingMessage

from dissemination.broker.dispatch import DeliveryDispatcher, declare_deliveries, urgent_queue
from dissemination.broker.publisher import AlertPublisher
from dissemination.broker.topology import connect, fresh_id
from dissemination.settings import Settings


async def test_publishing_and_consuming_leave_the_shared_generator_alone(
    settings: Settings,
) -> None:
    connection = await connect(settings.broker, "test-ids")
    try:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await declare_deliveries(channel, settings.broker)
        queue = await channel.get_queue(urgent_queue(settings.broker, "webhook"), ensure=False)
        arrived: asyncio.Queue[str | None] = asyncio.Queue()

        async def take(message: AbstractIncomingMessage) -> None:
            await message.ack()
            await arrived.put(message.message_id)

        before = random.getstate()
        dispatcher = DeliveryDispatcher(channel, exchange, settings.broker)
        await dispatcher.dispatch({"webhook": ["row-1"]}, urgent=True)
        await dispatcher.delay("webhook", ["row-2"], 0.05, urgent=True)
        publisher = AlertPublisher(channel.default_exchange)
        await publisher.publish(b"{}", "application/json", queue.name)
        tag = await queue.consume(take, consumer_tag=fresh_id())
        ids = [await asyncio.wait_for(arrived.get(), 30) for _ in range(3)]
        await queue.cancel(tag)
        assert random.getstate() == before
        assert all(ids)
        assert len(set(ids)) == 3  # each message has an id of its own
    finally:
        await connection.close()
