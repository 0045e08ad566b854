"""Delivery tasks on RabbitMQ: the ids of pending ledger rows, in batches, on one queue per
channel (`deliveries.email`, `deliveries.sms`, `deliveries.webhook`), published with
confirms. A fan-out to 100,000 addresses costs about 100,000 / batch_size messages.

A task only names rows; the ledger says what to do with them. Publishing a task twice is
harmless, because a worker sends a row only after claiming it from `pending`. Tasks that must
wait (a retry's backoff, quiet hours, an open circuit) go through the channel's retry queues
(see `dissemination.retrying`). An urgent alert's tasks (`Alert.urgent`) go onto the
channel's urgent queue (`deliveries.webhook.urgent`, ...), which workers take ahead of the
rest, and wait through retry queues of its own: an imminent threat does not wait behind a
large fan-out queued before it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractExchange, ExchangeType

from channels.base import CHANNEL_NAMES
from dissemination.broker.topology import fresh_id
from dissemination.errors import PublishFailed
from dissemination.retrying import RetrySchedule
from dissemination.settings import BrokerSettings


def delivery_queue(settings: BrokerSettings, channel: str) -> str:
    return f"{settings.delivery_queue_prefix}{channel}"


def retry_schedule(settings: BrokerSettings) -> RetrySchedule:
    return RetrySchedule(
        settings.retry_delay_seconds, settings.retry_max_delay_seconds, settings.max_attempts
    )


def retry_queue(
    settings: BrokerSettings, channel: str, tier_seconds: float, urgent: bool = False
) -> str:
    """The retry queue whose messages wait up to `tier_seconds`, then dead-letter back onto
    the channel's queue (its urgent queue, for an `urgent` one). The TTL and the queue type
    are in the name, so changing the schedule or joining a cluster declares new queues
    instead of clashing with the old ones' arguments (old ones drain themselves: their
    messages still expire back onto the channel's queues)."""
    ms = round(tier_seconds * 1000)
    replicated = ".quorum" if replicated_side_queues(settings) else ""
    lane = ".urgent" if urgent else ""
    return f"{settings.delivery_queue_prefix}{channel}{lane}.retry.{ms}ms{replicated}"


def urgent_queue(settings: BrokerSettings, channel: str) -> str:
    """The queue of the channel's urgent tasks (`Alert.urgent`), which its workers take ahead
    of the channel's other tasks. Its type is in its name, as a retry queue's is."""
    replicated = ".quorum" if replicated_side_queues(settings) else ""
    return f"{settings.delivery_queue_prefix}{channel}.urgent{replicated}"


def replicated_side_queues(settings: BrokerSettings) -> bool:
    """Retry and urgent queues are quorum queues on a cluster (`failover_urls` set) and
    classic on one node. A classic queue lives on one node, and while that node is down every
    node refuses to declare it, so a service on a surviving node could not restore its
    channels. On one node a quorum queue buys nothing: a task lost with a classic one is a
    row the ledger's stuck-row sweep publishes again, and nine more Raft groups per service
    made a busy test broker stop answering."""
    return bool(settings.failover_urls)


def side_queue_arguments(settings: BrokerSettings) -> dict[str, Any]:
    return {"x-queue-type": "quorum"} if replicated_side_queues(settings) else {}


def retry_queues(settings: BrokerSettings, channel: str) -> list[str]:
    """Every retry queue of the channel: its own tiers, then its urgent queue's."""
    tiers = retry_schedule(settings).tiers()
    return [retry_queue(settings, channel, t, urgent) for urgent in (False, True) for t in tiers]


async def declare_deliveries(
    channel: AbstractChannel, settings: BrokerSettings
) -> AbstractExchange:
    """Declare the deliveries exchange, one durable quorum queue per channel, and its urgent
    and retry queues (`replicated_side_queues`)."""
    exchange = await channel.declare_exchange(
        settings.delivery_exchange, ExchangeType.DIRECT, durable=True
    )
    side_arguments = side_queue_arguments(settings)
    for name in CHANNEL_NAMES:
        queue = await channel.declare_queue(
            delivery_queue(settings, name), durable=True, arguments={"x-queue-type": "quorum"}
        )
        await queue.bind(exchange, routing_key=name)
        await channel.declare_queue(
            urgent_queue(settings, name), durable=True, arguments=side_arguments
        )
        # back onto the channel's queue through the exchange, or onto its urgent queue by
        # name through the default exchange ("")
        back: dict[bool, tuple[str, str]] = {
            False: (settings.delivery_exchange, name),
            True: ("", urgent_queue(settings, name)),
        }
        for urgent, (dead_letter_exchange, dead_letter_key) in back.items():
            for tier in retry_schedule(settings).tiers():
                await channel.declare_queue(
                    retry_queue(settings, name, tier, urgent),
                    durable=True,
                    arguments=side_arguments
                    | {
                        "x-message-ttl": round(tier * 1000),
                        "x-dead-letter-exchange": dead_letter_exchange,
                        "x-dead-letter-routing-key": dead_letter_key,
                        # at-most-once dead-lettering (a quorum queue's default too): a task
                        # lost on the way back is a row the stuck-row sweep publishes again
                    },
                )
    return exchange


def task_body(delivery_ids: Sequence[str], published_at: float | None = None) -> bytes:
    """A task's JSON: the row ids, and for a task due now the wall-clock time it was
    published, so the worker that takes it can time its wait in the queue (on one clock:
    instances on other machines see their clocks' difference too)."""
    task: dict[str, Any] = {"deliveries": list(delivery_ids)}
    if published_at is not None:
        task["published_at"] = published_at
    return json.dumps(task).encode()


class DeliveryDispatcher:
    """Publishes row ids as confirmed tasks, `batch_size` ids per message: now, onto the
    channel's queue, or after a delay, through its retry queues."""

    def __init__(
        self,
        channel: AbstractChannel,
        exchange: AbstractExchange,
        settings: BrokerSettings,
        timeout_seconds: float = 10.0,
    ) -> None:
        self.channel = channel
        self.exchange = exchange
        self.settings = settings
        self.schedule = retry_schedule(settings)
        self.batch_size = settings.task_batch_size
        self.urgent = {name: urgent_queue(settings, name) for name in CHANNEL_NAMES}
        self.timeout_seconds = timeout_seconds
        self.published = 0

    async def dispatch(self, pending: Mapping[str, Sequence[str]], urgent: bool = False) -> None:
        """Publish every pending id (onto the channel's urgent queue if `urgent`); raise
        PublishFailed unless the broker confirmed all."""
        for channel, ids in pending.items():
            exchange, routing_key = self.exchange, channel
            if urgent:  # by name: no binding to leave behind if the queue's type changes
                exchange, routing_key = self.channel.default_exchange, self.urgent[channel]
            for start in range(0, len(ids), self.batch_size):
                await self._publish(
                    exchange, routing_key, ids[start : start + self.batch_size], None
                )

    async def delay(
        self, channel: str, ids: Sequence[str], seconds: float, urgent: bool = False
    ) -> None:
        """Publish `ids` to come back onto `channel`'s queue (its urgent one if `urgent`)
        after about `seconds`."""
        tier = self.schedule.tier_for(seconds)
        queue = retry_queue(self.settings, channel, tier, urgent)
        expiration = max(0.001, min(seconds, tier))
        for start in range(0, len(ids), self.batch_size):
            await self._publish(
                self.channel.default_exchange,
                queue,
                ids[start : start + self.batch_size],
                expiration,
            )

    async def _publish(
        self,
        exchange: AbstractExchange,
        routing_key: str,
        ids: Sequence[str],
        expiration: float | None,
    ) -> None:
        message = aio_pika.Message(
            task_body(ids, time.time() if expiration is None else None),
            content_type="application/json",
            message_id=fresh_id(),
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            expiration=expiration,
        )
        try:
            await exchange.publish(
                message, routing_key=routing_key, mandatory=True, timeout=self.timeout_seconds
            )
        except (aio_pika.exceptions.AMQPError, ConnectionError, TimeoutError) as error:
            raise PublishFailed(f"delivery task not confirmed: {error!r}") from error
        self.published += 1
