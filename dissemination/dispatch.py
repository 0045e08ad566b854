"""Delivery tasks on RabbitMQ: the ids of pending ledger rows, in batches, on one queue per
channel (`deliveries.email`, `deliveries.sms`, `deliveries.webhook`), published with
confirms. A fan-out to 100,000 addresses costs about 100,000 / batch_size messages.

A task only names rows; the ledger says what to do with them. Publishing a task twice is
harmless, because a worker sends a row only after claiming it from `pending`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractExchange, ExchangeType

from dissemination.publisher import PublishFailed
from dissemination.settings import BrokerSettings

CHANNELS = ("email", "sms", "webhook")


def delivery_queue(settings: BrokerSettings, channel: str) -> str:
    return f"{settings.delivery_queue_prefix}{channel}"


def retry_queue(settings: BrokerSettings, channel: str) -> str:
    """Where a channel's transient failures wait `retry_delay_seconds` before their ids
    dead-letter back onto the channel's queue."""
    return f"{settings.delivery_queue_prefix}{channel}.retry"


async def declare_deliveries(
    channel: AbstractChannel, settings: BrokerSettings
) -> AbstractExchange:
    """Declare the deliveries exchange and one durable quorum queue per channel."""
    exchange = await channel.declare_exchange(
        settings.delivery_exchange, ExchangeType.DIRECT, durable=True
    )
    for name in CHANNELS:
        queue = await channel.declare_queue(
            delivery_queue(settings, name), durable=True, arguments={"x-queue-type": "quorum"}
        )
        await queue.bind(exchange, routing_key=name)
        await channel.declare_queue(
            retry_queue(settings, name),
            durable=True,
            arguments={
                "x-message-ttl": int(settings.retry_delay_seconds * 1000),
                "x-dead-letter-exchange": settings.delivery_exchange,
                "x-dead-letter-routing-key": name,
            },
        )
    return exchange


def task_body(delivery_ids: Sequence[str]) -> bytes:
    return json.dumps({"deliveries": list(delivery_ids)}).encode()


class DeliveryDispatcher:
    """Publishes pending rows as confirmed tasks, `batch_size` ids per message."""

    def __init__(self, exchange: AbstractExchange, batch_size: int, timeout_seconds: float = 10.0):
        self.exchange = exchange
        self.batch_size = batch_size
        self.timeout_seconds = timeout_seconds
        self.published = 0

    async def dispatch(self, pending: Mapping[str, Sequence[str]]) -> None:
        """Publish every pending id; raise PublishFailed unless the broker confirmed all."""
        for channel, ids in pending.items():
            for start in range(0, len(ids), self.batch_size):
                batch = ids[start : start + self.batch_size]
                message = aio_pika.Message(
                    task_body(batch),
                    content_type="application/json",
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                )
                try:
                    await self.exchange.publish(
                        message, routing_key=channel, mandatory=True, timeout=self.timeout_seconds
                    )
                except (aio_pika.exceptions.AMQPError, ConnectionError, TimeoutError) as error:
                    raise PublishFailed(f"delivery task not confirmed: {error!r}") from error
                self.published += 1
