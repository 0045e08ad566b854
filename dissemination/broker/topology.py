"""RabbitMQ connection and the intake topology, declared idempotently at start:

exchange "alerts" (topic) ──#──> queue "alerts.inbound" (quorum, delivery limit,
                                      dead-letter at-least-once)
                                          │ dead-lettered, or rejected by intake
                                          v
exchange "alerts.dead" (fanout) ──────> queue "alerts.dead" (quorum)

The delivery limit is for poison messages: one whose delivery keeps ending with the
consumer's channel, because it kills the process or its connection. Before RabbitMQ 4.3 a
nack with requeue counts against it too, so intake never hands a message back for a
failure of its own (a store outage): it holds it and tries again (`intake.consumer`).
"""

from __future__ import annotations

import asyncio
import uuid
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
from dissemination.broker.failover import FailoverConnection
from dissemination.errors import BrokerUnavailable
from dissemination.settings import BrokerSettings

START_BROKER_HINT = (
    "start RabbitMQ with `rabbitmq-server -detached` (or `systemctl start rabbitmq-server`), "
    "or point DISSEMINATION_BROKER_URL at a running broker"
)


def fresh_id() -> str:
    """A new message id or consumer tag, for every message and consumer the service makes.
    Left unset, the AMQP client draws one from the `random` module's shared generator, which
    code running beside the service in the same process (property-based tests) may rely on
    no one else moving; a UUID4 comes from the operating system's source instead."""
    return uuid.uuid4().hex


def broker_url(settings: BrokerSettings, url: str | None = None) -> str:
    """The AMQP URL (`url`, else `settings.url`) with credentials from settings (the password
    comes from the environment)."""
    parts = urlsplit(settings.url if url is None else url)
    host = parts.hostname or "127.0.0.1"
    netloc = f"{quote(settings.username, safe='')}:{quote(settings.password, safe='')}@{host}"
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path or "/", parts.query, ""))


def redacted_url(settings: BrokerSettings, url: str | None = None) -> str:
    """The configured URL (`url`, else `settings.url`) as messages may show it: no query, any
    password masked."""
    parts = urlsplit(settings.url if url is None else url)
    shown = urlunsplit((parts.scheme, parts.netloc, parts.path or "/", "", ""))
    return mask_url(shown)


async def connect(settings: BrokerSettings, name: str) -> AbstractRobustConnection:
    """A robust connection (reconnects and restores channels and consumers by itself) to the
    first node that answers of `url` and then `failover_urls`, moving on round that list
    whenever its node is lost. The first connect must succeed within the timeout, or
    BrokerUnavailable says what to do."""
    configured = (settings.url, *settings.failover_urls)
    addresses = [broker_url(settings, url) for url in configured]
    problems = []
    for first in range(len(addresses)):
        connection = FailoverConnection(
            addresses[first:] + addresses[:first],
            client_properties={"connection_name": name},
            heartbeat=settings.heartbeat_seconds,
            reconnect_interval=1,
        )
        try:
            await asyncio.wait_for(connection.connect(), timeout=settings.connect_timeout_seconds)
        except (OSError, TimeoutError, aio_pika.exceptions.AMQPError) as error:
            await connection.close()
            # the driver's message may quote the URL it was given, password and all
            secrets = (settings.password, *(urlsplit(url).password for url in configured))
            reason = mask_text(str(error) or "timed out", *secrets)
            problems.append(
                f"{redacted_url(settings, configured[first])} ({type(error).__name__}: {reason})"
            )
        else:
            return connection
    raise BrokerUnavailable(
        f"RabbitMQ is not reachable at {'; '.join(problems)}; {START_BROKER_HINT}"
    )


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
            # poison messages only: intake holds a message through an outage, never requeues
            "x-delivery-limit": settings.delivery_limit,
            # at-least-once dead-lettering needs reject-publish overflow; without it a message
            # that exhausts the delivery limit could vanish instead of reaching alerts.dead.
            "x-dead-letter-strategy": "at-least-once",
            "x-overflow": "reject-publish",
        },
    )
    await inbound.bind(exchange, routing_key=settings.routing_key_pattern)
    return IntakeTopology(exchange, inbound, dead_exchange, dead_queue)
