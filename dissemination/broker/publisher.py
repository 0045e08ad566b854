"""Publishing alerts onto the `alerts` exchange with publisher confirms: a publish returns only
once the broker has taken responsibility for the message (for a quorum queue, a majority of
replicas hold it), and raises otherwise."""

from __future__ import annotations

import aio_pika
from aio_pika.abc import AbstractExchange, AbstractRobustConnection, FieldValue

from dissemination.broker.topology import fresh_id
from dissemination.errors import PublishFailed
from dissemination.settings import BrokerSettings


class AlertPublisher:
    """Confirmed, persistent publishes to an exchange: mandatory (unroutable is a failure) for
    the alerts exchange, optional for outbound notifications nobody may be bound to yet."""

    def __init__(
        self, exchange: AbstractExchange, timeout_seconds: float = 10.0, mandatory: bool = True
    ) -> None:
        self.exchange = exchange
        self.timeout_seconds = timeout_seconds
        self.mandatory = mandatory

    @classmethod
    async def open(
        cls, connection: AbstractRobustConnection, settings: BrokerSettings
    ) -> AlertPublisher:
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        exchange = await channel.declare_exchange(
            settings.exchange, aio_pika.ExchangeType.TOPIC, durable=True
        )
        return cls(exchange)

    async def publish(
        self,
        body: bytes,
        content_type: str,
        routing_key: str,
        message_id: str | None = None,
        *,
        headers: dict[str, FieldValue] | None = None,
        user_id: str | None = None,
    ) -> None:
        """Publish and wait for the broker's confirm; raise PublishFailed if none comes.
        `user_id`, when given, must be the connection's user: the broker checks it."""
        message = aio_pika.Message(
            body,
            content_type=content_type,
            message_id=message_id or fresh_id(),
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            headers=headers,
            user_id=user_id,
        )
        try:
            await self.exchange.publish(
                message,
                routing_key=routing_key,
                mandatory=self.mandatory,
                timeout=self.timeout_seconds,
            )
        except aio_pika.exceptions.DeliveryError as error:
            raise PublishFailed(f"broker refused the message: {error}") from error
        except (
            aio_pika.exceptions.AMQPError,
            ConnectionError,
            TimeoutError,
            RuntimeError,
        ) as error:
            raise PublishFailed(f"no confirm from the broker: {error!r}") from error
