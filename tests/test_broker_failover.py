"""The broker connection over several addresses (`broker.failover_urls`): the first that
answers is used, a lost node's connection moves on to the next address and restores its
channels there, and when none answers the error names every address, passwords masked.

A node is stood in for by a TCP relay to the local RabbitMQ that the test can shut: the
relay's address first, the broker's own second."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import replace

import aio_pika
import pytest

from channels.base import CHANNEL_NAMES
from dissemination.broker.dispatch import (
    DeliveryDispatcher,
    declare_deliveries,
    delivery_queue,
    retry_queue,
    retry_queues,
    urgent_queue,
)
from dissemination.broker.failover import FailoverConnection
from dissemination.broker.topology import connect
from dissemination.errors import BrokerUnavailable
from dissemination.settings import Settings
from testbed.ports import free_port


class Relay:
    """Forwards TCP connections from a port of its own to 127.0.0.1:5672 until shut."""

    def __init__(self) -> None:
        self.server: asyncio.Server | None = None
        self.writers: list[asyncio.StreamWriter] = []
        self.port = 0

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", 5672)
        self.writers += [writer, up_writer]

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError):
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            sink.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    async def shut(self) -> None:
        """The node goes away: no new connections, the open ones cut."""
        assert self.server is not None
        self.server.close()
        for writer in self.writers:
            writer.transport.abort()
        await self.server.wait_closed()


@pytest.fixture
async def relay() -> AsyncIterator[Relay]:
    relay = Relay()
    await relay.start()
    yield relay
    if relay.server is not None and relay.server.is_serving():
        await relay.shut()


def with_nodes(settings: Settings, first: str, *others: str) -> Settings:
    broker = replace(settings.broker, url=first, failover_urls=others)
    return replace(settings, broker=broker)


def vhost_of(settings: Settings) -> str:
    return settings.broker.url.rsplit("/", 1)[1]


async def test_a_lost_node_moves_the_connection_to_the_next_address(
    settings: Settings, relay: Relay
) -> None:
    vhost = vhost_of(settings)
    nodes = with_nodes(
        settings, f"amqp://127.0.0.1:{relay.port}/{vhost}", f"amqp://127.0.0.1:5672/{vhost}"
    )
    connection = await connect(nodes.broker, "test-failover")
    assert isinstance(connection, FailoverConnection)
    try:
        assert connection.address.port == relay.port
        channel = await connection.channel()
        queue = await channel.declare_queue(exclusive=True)
        reconnected = asyncio.Event()
        connection.reconnect_callbacks.add(lambda *_: reconnected.set())
        await relay.shut()
        await asyncio.wait_for(reconnected.wait(), 30)
        assert connection.address.port == 5672
        # the channel and its (exclusive, so re-declared) queue are restored on the other node
        await channel.default_exchange.publish(aio_pika.Message(b"after"), queue.name)
        message = await queue.get(timeout=10)
        assert message.body == b"after"
        await message.ack()
    finally:
        await connection.close()


async def test_the_first_address_that_answers_is_used(settings: Settings) -> None:
    vhost = vhost_of(settings)
    nobody = f"amqp://127.0.0.1:{free_port()}/{vhost}"
    nodes = with_nodes(settings, nobody, f"amqp://127.0.0.1:5672/{vhost}")
    connection = await connect(nodes.broker, "test-failover")
    try:
        assert isinstance(connection, FailoverConnection)
        assert connection.address.port == 5672
        assert connection.addresses[0].port == 5672  # tried first from now on
    finally:
        await connection.close()


async def test_no_node_answering_names_every_address_without_passwords(
    settings: Settings,
) -> None:
    ports = [free_port(), free_port()]
    nodes = with_nodes(
        settings, f"amqp://127.0.0.1:{ports[0]}/", f"amqp://ops:s3cret@127.0.0.1:{ports[1]}/"
    )
    with pytest.raises(BrokerUnavailable) as raised:
        await connect(nodes.broker, "test-failover")
    message = str(raised.value)
    assert f"RabbitMQ is not reachable at amqp://127.0.0.1:{ports[0]}/ (" in message
    assert f"; amqp://ops:***@127.0.0.1:{ports[1]}/ (" in message
    assert "s3cret" not in message


def test_a_failover_url_is_checked_like_the_url(settings: Settings) -> None:
    from core.errors import ConfigError
    from dissemination.settings import load_settings

    with pytest.raises(ConfigError) as raised:
        load_settings({"DISSEMINATION_BROKER_FAILOVER_URLS": "amqp://a/,http://b/"})
    assert "broker.failover_urls" in str(raised.value)
    assert "scheme must be one of amqp, amqps" in str(raised.value)
    nodes = load_settings(
        {"DISSEMINATION_BROKER_FAILOVER_URLS": "amqp://127.0.0.1:5701/, amqp://127.0.0.1:5702/"}
    )
    assert nodes.broker.failover_urls == ("amqp://127.0.0.1:5701/", "amqp://127.0.0.1:5702/")


async def test_on_a_cluster_the_retry_queues_are_quorum_queues_and_a_delayed_task_returns(
    settings: Settings,
) -> None:
    """A classic queue lives on one node, and while that node is down no node will declare
    it, so a service whose connection moved on could not restore its channels. With
    `failover_urls` the retry and urgent queues are quorum queues under names of their own (a broker
    holding the classic ones from a single-node past keeps them, and they drain), and a
    delayed task still comes back onto the channel's queue through one."""
    vhost = vhost_of(settings)
    single = replace(settings.broker, delivery_queue_prefix="fo-deliveries.")
    cluster = replace(single, failover_urls=(f"amqp://127.0.0.1:5672/{vhost}",))
    assert retry_queue(single, "webhook", 1.0) == "fo-deliveries.webhook.retry.1000ms"
    assert retry_queue(cluster, "webhook", 1.0) == "fo-deliveries.webhook.retry.1000ms.quorum"
    assert (
        retry_queue(cluster, "webhook", 1.0, urgent=True)
        == "fo-deliveries.webhook.urgent.retry.1000ms.quorum"
    )
    connection = await connect(cluster, "test-failover")
    try:
        channel = await connection.channel(publisher_confirms=True)
        await declare_deliveries(channel, single)  # the single-node past
        await declare_deliveries(channel, cluster)
        listing = await asyncio.create_subprocess_exec(
            "rabbitmqctl",
            "-q",
            "list_queues",
            "-p",
            vhost,
            "name",
            "type",
            "--formatter",
            "json",
            stdout=asyncio.subprocess.PIPE,
        )
        out, _ = await listing.communicate()
        types = json.loads(out)
        kinds = {queue["name"]: queue["type"] for queue in types}
        for name in CHANNEL_NAMES:
            assert kinds[delivery_queue(cluster, name)] == "quorum"
            assert {kinds[q] for q in retry_queues(cluster, name)} == {"quorum"}
            assert {kinds[q] for q in retry_queues(single, name)} == {"classic"}
            assert kinds[urgent_queue(cluster, name)] == "quorum"
            assert kinds[urgent_queue(single, name)] == "classic"
        await DeliveryDispatcher(channel, channel.default_exchange, cluster).delay(
            "webhook", ["row-1"], 0.2
        )
        queue = await channel.get_queue(delivery_queue(cluster, "webhook"), ensure=False)
        async with queue.iterator() as arriving:
            message = await asyncio.wait_for(anext(arriving), 30)
        assert json.loads(message.body) == {"deliveries": ["row-1"]}
        await message.ack()
        dispatcher = DeliveryDispatcher(channel, channel.default_exchange, cluster)
        await dispatcher.dispatch({"webhook": ["row-2"]}, urgent=True)
        await dispatcher.delay("webhook", ["row-3"], 0.2, urgent=True)
        queue = await channel.get_queue(urgent_queue(cluster, "webhook"), ensure=False)
        async with queue.iterator() as arriving:
            for expected in (["row-2"], ["row-3"]):  # now, then back from its retry tier
                message = await asyncio.wait_for(anext(arriving), 30)
                assert json.loads(message.body)["deliveries"] == expected
                await message.ack()
        for broker in (single, cluster):
            for name in CHANNEL_NAMES:
                for queue_name in (
                    delivery_queue(broker, name),
                    urgent_queue(broker, name),
                    *retry_queues(broker, name),
                ):
                    await channel.queue_delete(queue_name)
    finally:
        await connection.close()
