"""What the intake benchmark's legs share: a leg's result, filling an inbound queue with
confirms, asking a queue's depth and the broker's version, and waiting for the ledger to hold
every alert. `bench.intake` runs the legs; `bench.intakeprocesses` runs the service leg as
`dissemination run` with several processes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractExchange

from bench.common import CAP_CONTENT_TYPE, BenchError, Deadline, rate
from dissemination.broker.topology import broker_url, declare_intake
from dissemination.ledger.alerts import Ledger
from dissemination.settings import Settings

POLL_SECONDS = 0.05
PUBLISH_WINDOW = 256
PUBLISH_TIMEOUT_SECONDS = 30.0
ROUTING_KEY = "bench.cap"


@dataclass(slots=True)
class LegRun:
    """One leg of one run: how many messages it finished in how long."""

    run: int
    messages: int
    seconds: float
    complete: bool
    publish_seconds: float
    startup_seconds: float | None = None
    note: str = ""

    @property
    def rate(self) -> float:
        return rate(self.messages, self.seconds)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self) | {"rate": round(self.rate, 1)}


async def publish_all(
    exchange: AbstractExchange, bodies: Sequence[bytes], deadline: Deadline, user_id: str
) -> float:
    """Publish every body with confirms, PUBLISH_WINDOW at a time, as broker user `user_id`;
    return the seconds it took."""
    started = time.perf_counter()
    for start in range(0, len(bodies), PUBLISH_WINDOW):
        if deadline.expired():
            raise BenchError(f"overall timeout while publishing ({start} of {len(bodies)} done)")
        window = bodies[start : start + PUBLISH_WINDOW]
        await asyncio.gather(
            *(
                exchange.publish(
                    aio_pika.Message(
                        body,
                        content_type=CAP_CONTENT_TYPE,
                        message_id=f"bench-{start + offset}",
                        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                        user_id=user_id,
                    ),
                    routing_key=ROUTING_KEY,
                    mandatory=True,
                    timeout=PUBLISH_TIMEOUT_SECONDS,
                )
                for offset, body in enumerate(window)
            )
        )
    return time.perf_counter() - started


async def queue_depth(channel: AbstractChannel, queue_name: str) -> int:
    """Messages ready in `queue_name`, asked of the broker now."""
    underlay = await channel.get_underlay_channel()
    result = await underlay.queue_declare(queue_name, passive=True)
    return int(result.message_count or 0)


async def broker_version(channel: AbstractChannel) -> str:
    underlay = await channel.get_underlay_channel()
    version = underlay.connection.server_properties.get("version", "unknown")
    return version.decode() if isinstance(version, bytes) else str(version)


async def fill_intake_queue(
    settings: Settings, bodies: Sequence[bytes], deadline: Deadline
) -> tuple[aio_pika.abc.AbstractConnection, AbstractChannel, float]:
    """Declare the intake topology of `settings` (as the service would) and publish `bodies` to
    it with confirms; return the open connection, its channel and the publish time."""
    connection = await aio_pika.connect(broker_url(settings.broker), timeout=10)
    try:
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        topology = await declare_intake(channel, settings.broker)
        seconds = await publish_all(topology.exchange, bodies, deadline, settings.broker.username)
        depth = await queue_depth(channel, settings.broker.inbound_queue)
        if depth != len(bodies):
            raise BenchError(f"{settings.broker.inbound_queue} holds {depth}, not {len(bodies)}")
    except BaseException:
        await connection.close()
        raise
    return connection, channel, seconds


async def wait_for_ledger(ledger: Ledger, expected: int, deadline: Deadline) -> tuple[int, str]:
    """Poll the ledger every POLL_SECONDS until it holds `expected` alerts, the deadline passes,
    or a rejection or quarantine shows that it never will; return (alerts, why it stopped)."""
    max_polls = int(deadline.remaining() / POLL_SECONDS) + 2
    alerts = 0
    for _ in range(max_polls):
        counts = await ledger.counts()
        alerts = counts["alerts"]
        if alerts >= expected:
            return alerts, ""
        if counts["rejections"] or counts["quarantine"]:
            return alerts, f"service refused alerts: {counts}"
        if deadline.expired():
            break
        await asyncio.sleep(POLL_SECONDS)
    return alerts, "overall timeout"
