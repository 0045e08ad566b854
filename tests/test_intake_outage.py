"""Intake through a store outage longer than the inbound queue's delivery limit: nothing the
service never processed reaches alerts.dead. On RabbitMQ before 4.3 every requeue counts
against `x-delivery-limit`, so a held message is retried in the service, unacked, instead of
being handed back; while the store is out the broker keeps what the prefetch window cannot
hold; a shutdown hands the held messages back at once; a held message whose channel closed is
left to the broker, which delivers it again. The delivery limit here is 2 (three deliveries)."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aio_pika
import pytest
from aio_pika.abc import AbstractChannel, AbstractRobustConnection

from core.errors import StoreUnavailable
from dissemination.broker.topology import IntakeTopology, broker_url, declare_intake
from dissemination.controls.authority import SERVICE, Submitter
from dissemination.intake.consumer import IntakeConsumer
from dissemination.intake.pipeline import AlertPipeline, IntakeResult
from dissemination.ledger.alerts import Payload
from dissemination.metrics import Metrics
from dissemination.retrying import Backoff
from dissemination.service import Service
from dissemination.settings import Settings, load_settings
from testbed.alerts import cap_json_bytes
from tests.brokerutil import close_connections, queue_depth, wait_until
from tests.conftest import delete_topology, emptied_pg, settings_env
from tests.pg import psql

pytestmark = pytest.mark.slow

DELIVERY_LIMIT = 2
BEYOND_THE_LIMIT = DELIVERY_LIMIT + 2
"""Tries of one message that three deliveries could not have made."""
WAIT = 20.0


class StoreThatComesBack:
    """The processor, reduced to its store: out (StoreUnavailable) until `restore`, then
    storing each body. Counts the tries and the stores of each body."""

    def __init__(self) -> None:
        self.metrics = Metrics()
        self.out = True
        self.tries: Counter[bytes] = Counter()
        self.stored: Counter[bytes] = Counter()
        self._changed = asyncio.Condition()

    async def process(
        self,
        payload: Payload,
        submitter: Submitter = SERVICE,
        send_id: str | None = None,
        source: str = "amqp",
    ) -> IntakeResult:
        async with self._changed:
            self.tries[payload.body] += 1
            self._changed.notify_all()
            if self.out:
                raise StoreUnavailable("connection refused")
            self.stored[payload.body] += 1
        return IntakeResult()

    def restore(self) -> None:
        self.out = False

    async def until(self, condition: Callable[[], bool], what: str) -> None:
        """Wait for `condition`, checked at each try; fail after WAIT seconds."""
        try:
            async with asyncio.timeout(WAIT), self._changed:
                await self._changed.wait_for(condition)
        except TimeoutError:
            raise AssertionError(f"timed out waiting for {what}; tries: {self.tries}") from None


@pytest.fixture
async def limited(vhost: str, tmp_path: Path) -> AsyncIterator[Settings]:
    """Intake names of this test's own, with an inbound queue limited to DELIVERY_LIMIT;
    its exchanges and queues are deleted afterwards."""
    env = settings_env(
        vhost,
        f"sqlite+aiosqlite:///{tmp_path / 'unused.db'}",
        tmp_path / "data",
        broker_delivery_limit=str(DELIVERY_LIMIT),
    )
    settings = load_settings(env)
    yield settings
    await delete_topology(settings)


class Rig:
    """A consumer on its own robust connection, with a store that is out until restored."""

    def __init__(
        self,
        connection: AbstractRobustConnection,
        channel: AbstractChannel,
        topology: IntakeTopology,
        consumer: IntakeConsumer,
        store: StoreThatComesBack,
    ) -> None:
        self.connection = connection
        self.channel = channel
        self.topology = topology
        self.consumer = consumer
        self.store = store
        self.reconnected = asyncio.Event()
        """Set once the connection, its channels and the consumer have been restored."""
        connection.reconnect_callbacks.add(lambda *_: self.reconnected.set())

    async def publish(self, *bodies: bytes) -> None:
        for body in bodies:
            await self.topology.exchange.publish(
                aio_pika.Message(
                    body,
                    content_type="application/json",
                    message_id=uuid.uuid4().hex,
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                    user_id="guest",
                ),
                routing_key="test.alert",
            )

    async def depth(self, queue: str) -> int:
        checking = await self.connection.channel()
        try:
            return await queue_depth(checking, queue)
        finally:
            await checking.close()


async def rig(settings: Settings, prefetch: int, concurrency: int) -> Rig:
    connection = await aio_pika.connect_robust(broker_url(settings.broker), reconnect_interval=0.2)
    channel = await connection.channel(publisher_confirms=True)
    await channel.set_qos(prefetch_count=prefetch)
    topology = await declare_intake(channel, settings.broker)
    store = StoreThatComesBack()
    processor: AlertPipeline = store  # type: ignore[assignment]
    consumer = IntakeConsumer(processor, topology, concurrency, Backoff(0.01, 0.02))
    await consumer.start()
    return Rig(connection, channel, topology, consumer, store)


def bodies(count: int) -> list[bytes]:
    return [f'{{"identifier": "OUT-{i}"}}'.encode() for i in range(count)]


async def test_an_outage_longer_than_the_delivery_limit_dead_letters_nothing(
    limited: Settings,
) -> None:
    r = await rig(limited, prefetch=4, concurrency=2)
    try:
        (body,) = bodies(1)
        await r.publish(body)
        await r.store.until(lambda: r.store.tries[body] >= BEYOND_THE_LIMIT, "tries to go on")
        assert await r.depth(limited.broker.dead_letter_queue) == 0
        r.store.restore()

        async def settled() -> bool:
            return r.consumer.processed == 1

        await wait_until(settled, what="the held message to be stored and acked")
        assert r.store.stored == {body: 1}
        assert await r.depth(limited.broker.dead_letter_queue) == 0
        assert await r.depth(limited.broker.inbound_queue) == 0
        await r.consumer.stop(5)
    finally:
        await r.connection.close()


async def test_an_outage_of_thousands_of_tries_keeps_within_the_backoff_cap(
    limited: Settings,
) -> None:
    """Every held message's every try counts as a failure: an hour's outage at the default
    cap and concurrency is a few thousand, where doubling the first delay overflows."""
    r = await rig(limited, prefetch=4, concurrency=2)
    try:
        r.consumer.backoff.failures = 5_000
        (body,) = bodies(1)
        await r.publish(body)
        await r.store.until(lambda: r.store.tries[body] >= BEYOND_THE_LIMIT, "tries to go on")
        r.store.restore()

        async def settled() -> bool:
            return r.consumer.processed == 1

        await wait_until(settled, what="the held message to be stored and acked")
        assert r.store.stored == {body: 1}
        await r.consumer.stop(5)
    finally:
        await r.connection.close()


async def test_while_the_store_is_out_the_broker_keeps_what_the_prefetch_window_cannot(
    limited: Settings,
) -> None:
    """Prefetch 3 and concurrency 2: two messages are tried, one waits for a slot, and the
    broker keeps the other three ready; when the store is back the held ones try at once."""
    r = await rig(limited, prefetch=3, concurrency=2)
    try:
        published = bodies(6)
        await r.publish(*published)
        await r.store.until(lambda: sum(r.store.tries.values()) >= 4 * DELIVERY_LIMIT, "tries")

        async def three_left() -> bool:
            return await r.depth(limited.broker.inbound_queue) == 3

        await wait_until(three_left, what="the broker to keep three messages")
        assert len(r.store.tries) == 2, "only the messages in a processing slot are tried"
        assert await r.depth(limited.broker.dead_letter_queue) == 0

        async def two_held() -> bool:
            return r.consumer.held == 2

        await wait_until(two_held, what="two messages held, the third waiting for a slot")
        r.store.restore()

        async def all_settled() -> bool:
            return r.consumer.processed == len(published)

        await wait_until(all_settled, what="every message to be stored and acked")
        assert r.store.stored == dict.fromkeys(published, 1)
        assert await r.depth(limited.broker.dead_letter_queue) == 0
        assert await r.depth(limited.broker.inbound_queue) == 0
        await r.consumer.stop(5)
    finally:
        await r.connection.close()


async def test_a_shutdown_during_an_outage_hands_the_held_messages_back_at_once(
    limited: Settings,
) -> None:
    r = await rig(limited, prefetch=4, concurrency=2)
    try:
        published = bodies(3)
        await r.publish(*published)
        await r.store.until(
            lambda: sum(n >= BEYOND_THE_LIMIT for n in r.store.tries.values()) == 2,
            "two messages held beyond the limit",
        )
        async with asyncio.timeout(5):  # not the 60 s grace: the store is out
            await r.consumer.stop(60)
        assert r.store.stored == {}
        assert await r.depth(limited.broker.dead_letter_queue) == 0
        inbound = await r.channel.get_queue(limited.broker.inbound_queue)
        returned = []
        for _ in published:
            message = await inbound.get(timeout=5)
            returned.append(message)
            await message.ack()
        assert sorted(m.body for m in returned) == sorted(published)
        # a hand-back counts one delivery on RabbitMQ before 4.3 (a closed channel would too),
        # none from 4.3 on: never one per try
        counts = [int(str((m.headers or {}).get("x-delivery-count", 0))) for m in returned]
        assert max(counts) <= 1, counts
    finally:
        await r.connection.close()


async def test_a_held_message_whose_channel_closed_is_left_to_the_broker(
    limited: Settings, vhost: str
) -> None:
    """The broker took it back with the channel and delivers it on the restored one; the
    stale handler stops holding it and frees its slot (there is one) for the redelivery,
    which is held in turn. Had the stale one kept the slot, it would store the message once
    the store is back and the redelivery a second time, or be left unacked."""
    r = await rig(limited, prefetch=4, concurrency=1)
    try:
        (body,) = bodies(1)
        await r.publish(body)
        await r.store.until(lambda: r.store.tries[body] >= BEYOND_THE_LIMIT, "tries to go on")
        close_connections(vhost)
        async with asyncio.timeout(WAIT):
            await r.reconnected.wait()
        tries = r.store.tries[body]
        await r.store.until(lambda: r.store.tries[body] > tries + 1, "the redelivery's tries")
        r.store.restore()

        async def settled() -> bool:
            return r.consumer.processed == 1

        await wait_until(settled, what="the redelivered message to be stored and acked")
        await r.consumer.stop(5)
        await r.channel.close()  # anything left unacked would be ready again
        assert r.store.stored == {body: 1}
        assert await r.depth(limited.broker.dead_letter_queue) == 0
        assert await r.depth(limited.broker.inbound_queue) == 0
    finally:
        await r.connection.close()


@pytest.fixture
async def pg_service(
    vhost: str, migrated_pg: str, tmp_path: Path
) -> AsyncIterator[tuple[Service, Settings]]:
    """The whole service on the session's PostgreSQL database, its inbound queue limited to
    DELIVERY_LIMIT."""
    env = settings_env(
        vhost, migrated_pg, tmp_path / "data", broker_delivery_limit=str(DELIVERY_LIMIT)
    )
    settings = load_settings(env)
    service = Service(settings)
    await service.start()
    try:
        yield service, settings
    finally:
        await service.stop()
        await delete_topology(settings)
        await emptied_pg(migrated_pg, tmp_path)


async def test_a_postgresql_outage_dead_letters_nothing_whatever_the_delivery_limit(
    pg_service: tuple[Service, Settings],
) -> None:
    service, settings = pg_service
    database_name = settings.store.url.rsplit("/", 1)[1]
    connection = await aio_pika.connect_robust(broker_url(settings.broker))
    try:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.get_exchange(settings.broker.exchange)
        psql(f'ALTER DATABASE "{database_name}" ALLOW_CONNECTIONS false')
        try:
            psql(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                f"WHERE datname = '{database_name}'"
            )
            for i in range(5):
                await exchange.publish(
                    aio_pika.Message(
                        cap_json_bytes(f"PG-OUTAGE-{i}"),
                        content_type="application/json",
                        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                        user_id=settings.broker.username,
                    ),
                    routing_key="test.alert",
                )
            consumer = service.consumer

            dead_letters = settings.broker.dead_letter_queue

            async def beyond_the_limit_or_dead_lettered() -> bool:
                # five messages, tried more often than three deliveries each allow
                tried = consumer.backoff.failures >= 5 * BEYOND_THE_LIMIT
                return tried or await queue_depth(channel, dead_letters) > 0

            await wait_until(beyond_the_limit_or_dead_lettered, what="the outage to go on")
            dead = await queue_depth(channel, dead_letters)
            assert dead == 0, f"{dead} alerts the service never processed went to alerts.dead"
        finally:
            psql(f'ALTER DATABASE "{database_name}" ALLOW_CONNECTIONS true')
        ledger = service.consumer.processor.ledger

        async def stored() -> bool:
            return (await ledger.counts())["alerts"] == 5

        await wait_until(stored, what="the five alerts to be stored")
        assert await ledger.counts() == {"alerts": 5, "rejections": 0, "quarantine": 0}
        assert await queue_depth(channel, settings.broker.dead_letter_queue) == 0
        assert await queue_depth(channel, settings.broker.inbound_queue) == 0
    finally:
        await connection.close()
