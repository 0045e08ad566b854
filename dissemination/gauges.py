"""The gauges a scrape reads but must not wait for, refreshed by a periodic job: queue depths
(inbound, dead letter, each delivery queue this process consumes), ledger rows pending and
stuck in `sending` per channel, and the dissemination record's length."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta

import aio_pika
from aio_pika.abc import AbstractRobustChannel
from prometheus_client import Gauge
from sqlalchemy import func, select

from core.clock import Clock
from dissemination.controls import record
from dissemination.metrics import Metrics
from dissemination.store.database import Database
from dissemination.store.rows import DeliveryState
from dissemination.store.tables import deliveries

log = logging.getLogger(__name__)
QUEUE_TIMEOUT_SECONDS = 5.0


@dataclass(frozen=True, slots=True)
class Queues:
    """The names of the queues whose depth this process reports, delivery queues by channel
    (its queue and its urgent queue, reported together; a delivery-only process has no
    intake)."""

    delivery: Mapping[str, Sequence[str]] = field(default_factory=dict)
    inbound: str | None = None
    dead_letter: str | None = None


class GaugeSampler:
    """Reads what the gauges show from the broker and the store (`refresh`, run by a
    `PeriodicTask`). Queues are read by passive declares on an AMQP channel of the sampler's
    own: a refresh cancelled mid-call (at shutdown) must not upset a channel that consumes. A
    queue that cannot be read keeps its last value, and the broker's trouble is logged; a
    store outage ends this refresh (the task retries next time)."""

    def __init__(
        self,
        metrics: Metrics,
        database: Database,
        channel: AbstractRobustChannel,
        queues: Queues,
        stuck_after_seconds: float,
        clock: Clock,
    ) -> None:
        self.metrics = metrics
        self.database = database
        self.channel = channel
        self.queues = queues
        self.stuck_after = timedelta(seconds=stuck_after_seconds)
        self.clock = clock

    async def refresh(self) -> None:
        metrics, queues = self.metrics, self.queues
        if queues.inbound is not None:
            await self._depth(metrics.inbound_queue, queues.inbound)
        if queues.dead_letter is not None:
            await self._depth(metrics.dead_letter_queue, queues.dead_letter)
        for channel, names in queues.delivery.items():
            await self._depth(metrics.delivery_queue.labels(channel), *names)
        await self._rows()
        seq, _ = await record.head(self.database)
        metrics.record_entries.set(seq)
        metrics.gauges_refreshed_at.set(time.time())

    async def _rows(self) -> None:
        """Pending rows, and rows in `sending` longer than the stuck-row limit, per channel."""
        channels = list(self.queues.delivery)
        if not channels:
            return
        cutoff = self.clock() - self.stuck_after
        by_channel = select(deliveries.c.channel, func.count()).group_by(deliveries.c.channel)
        in_channels = deliveries.c.channel.in_(channels)
        async with self.database.reading() as conn:
            pending = {
                str(channel): int(n)
                for channel, n in await conn.execute(
                    by_channel.where(in_channels, deliveries.c.state == DeliveryState.PENDING.value)
                )
            }
            stuck = {
                str(channel): int(n)
                for channel, n in await conn.execute(
                    by_channel.where(
                        in_channels,
                        deliveries.c.state == DeliveryState.SENDING.value,
                        deliveries.c.updated_at < cutoff,
                    )
                )
            }
        for channel in channels:
            self.metrics.pending_rows.labels(channel).set(pending.get(channel, 0))
            self.metrics.stuck_rows.labels(channel).set(stuck.get(channel, 0))

    async def _depth(self, gauge: Gauge, *names: str) -> None:
        """Set `gauge` to the messages waiting on the queues `names`, if all could be read."""
        depths = [await self._queue_depth(name) for name in names]
        if None not in depths:
            gauge.set(sum(d for d in depths if d is not None))

    async def _queue_depth(self, name: str) -> int | None:
        """The messages waiting on queue `name`; None (logged) when it cannot be read."""
        try:
            # not robust: neither kept for redeclaring nor answered from a cache
            queue = await self.channel.declare_queue(
                name, passive=True, robust=False, timeout=QUEUE_TIMEOUT_SECONDS
            )
        except (aio_pika.exceptions.AMQPError, ConnectionError, RuntimeError, TimeoutError) as err:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                # aiormq reports an RPC cancelled mid-call as a channel error: the job is
                # being stopped, and swallowing this would keep it running
                raise asyncio.CancelledError from err
            log.warning("could not read the depth of queue %s: %r", name, err)
            return None
        return queue.declaration_result.message_count or 0
