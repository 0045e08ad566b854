"""RabbitMQ connection and the intake topology, declared idempotently at start:

exchange "alerts" (topic) ──#──> queue "alerts.inbound" (quorum, delivery limit,
                                      dead-letter at-least-once)
                                          │ dead-lettered, or rejected by intake
                                          v
exchange "alerts.dead" (fanout) ──────> queue "alerts.dead" (quorum)
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from urllib.parse import quote, urlsplit, urlunsplit

import aio_pika
from aio_pika.abc import (
    AbstractChannel,
    AbstractExchange,
    AbstractQueue,
    AbstractRobustConnection,
    ExchangeType,
)

from core.masking import mask_text, mask_url
from dissemination.errors import BrokerUnavailable
from dissemination.settings import BrokerSettings

START_BROKER_HINT = (
    "start RabbitMQ with `rabbitmq-server -detached` (or `systemctl start rabbitmq-server`), "
    "or point DISSEMINATION_BROKER_URL at a running broker"
)


def broker_url(settings: BrokerSettings) -> str:
    """The AMQP URL with credentials from settings (the password comes from the environment)."""
    parts = urlsplit(settings.url)
    host = parts.hostname or "127.0.0.1"
    netloc = f"{quote(settings.username, safe='')}:{quote(settings.password, safe='')}@{host}"
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path or "/", parts.query, ""))


def redacted_url(settings: BrokerSettings) -> str:
    """The configured URL as messages may show it: no query, any password masked."""
    parts = urlsplit(settings.url)
    shown = urlunsplit((parts.scheme, parts.netloc, parts.path or "/", "", ""))
    return mask_url(shown)


async def connect(settings: BrokerSettings, name: str) -> AbstractRobustConnection:
    """A robust connection (reconnects and restores channels and consumers by itself).
    The first connect must succeed within the timeout, or BrokerUnavailable says what to do."""
    try:
        return await asyncio.wait_for(
            aio_pika.connect_robust(
                broker_url(settings),
                client_properties={"connection_name": name},
                heartbeat=settings.heartbeat_seconds,
                reconnect_interval=1,
            ),
            timeout=settings.connect_timeout_seconds,
        )
    except (OSError, TimeoutError, aio_pika.exceptions.AMQPError) as error:
        # the driver's message may quote the URL it was given, password and all
        reason = mask_text(
            str(error) or "timed out", settings.password, urlsplit(settings.url).password
        )
        raise BrokerUnavailable(
            f"RabbitMQ is not reachable at {redacted_url(settings)} "
            f"({type(error).__name__}: {reason}); {START_BROKER_HINT}"
        ) from None


@dataclass(frozen=True, slots=True)
class IntakeTopology:
    """The declared exchanges and queues that intake uses."""

    exchange: AbstractExchange
    inbound: AbstractQueue
    dead_exchange: AbstractExchange
    dead_queue: AbstractQueue


async def declare_intake(channel: AbstractChannel, settings: BrokerSettings) -> IntakeTopology:
    """Declare (or confirm) the intake exchanges, queues and bindings."""
    exchange = await channel.declare_exchange(settings.exchange, ExchangeType.TOPIC, durable=True)
    dead_exchange = await channel.declare_exchange(
        settings.dead_letter_exchange, ExchangeType.FANOUT, durable=True
    )
    dead_queue = await channel.declare_queue(
        settings.dead_letter_queue, durable=True, arguments={"x-queue-type": "quorum"}
    )
    await dead_queue.bind(dead_exchange)
    inbound = await channel.declare_queue(
        settings.inbound_queue,
        durable=True,
        arguments={
            "x-queue-type": "quorum",
            "x-dead-letter-exchange": settings.dead_letter_exchange,
            "x-delivery-limit": settings.delivery_limit,
            # at-least-once dead-lettering needs reject-publish overflow; without it a message
            # that exhausts the delivery limit could vanish instead of reaching alerts.dead.
            "x-dead-letter-strategy": "at-least-once",
            "x-overflow": "reject-publish",
        },
    )
    await inbound.bind(exchange, routing_key=settings.routing_key_pattern)
    return IntakeTopology(exchange, inbound, dead_exchange, dead_queue)
