"""The stuck-row sweep of one channel: rows left in `sending` by a worker that died mid-send
are resent once and flagged `resent` (stuck again, they fail), and, when the channel's queues
are empty, overdue pending rows whose task was lost are published again."""

from __future__ import annotations

import asyncio
from collections.abc import Set
from datetime import timedelta

import aio_pika
import structlog
from aio_pika.abc import AbstractQueue

from core.clock import Clock
from core.errors import StoreUnavailable
from dissemination.broker.dispatch import DeliveryDispatcher
from dissemination.delivery.claims import DeliveryStore
from dissemination.errors import PublishFailed
from dissemination.failpoints import failpoint
from dissemination.metrics import Metrics

log = structlog.stdlib.get_logger(__name__)


class StuckRowSweeper:
    """Sweeps one channel's rows, now (`sweep`) or every `stuck_after_seconds` (`run`); rows
    the worker itself holds in `sending` (`in_flight`, the worker's own set, which it keeps
    current) are never taken for stuck."""

    def __init__(
        self,
        channel: str,
        store: DeliveryStore,
        queues: tuple[AbstractQueue, ...],
        dispatcher: DeliveryDispatcher,
        clock: Clock,
        metrics: Metrics,
        stuck_after_seconds: float,
        in_flight: Set[str],
    ) -> None:
        self.channel = channel
        self.store = store
        self.queues = queues
        self.dispatcher = dispatcher
        self.clock = clock
        self.metrics = metrics
        self.stuck_after_seconds = stuck_after_seconds
        self.in_flight = in_flight

    async def run(self) -> None:
        """Sweep every `stuck_after_seconds` for as long as the worker runs: a sweep that fails
        is logged and the next one runs on time, since a sweeper that died would leave stuck
        rows stuck for good. Losing the broker node mid-sweep (the channel is being restored
        on another) is an outage like the store's; anything else is logged as a bug."""
        while True:
            await asyncio.sleep(self.stuck_after_seconds)
            try:
                await failpoint("periodic_sweep")
                await self.sweep()
            except (
                StoreUnavailable,
                PublishFailed,
                aio_pika.exceptions.AMQPError,
                aio_pika.exceptions.ChannelInvalidStateError,
            ) as error:
                log.warning("sweep_failed", channel=self.channel, error=str(error))
            except Exception:
                log.exception("sweep_failed", channel=self.channel)

    async def sweep(self) -> list[str]:
        """Apply the resend-once policy to rows stuck in `sending`, and, when the channel's
        queues are empty, republish overdue pending rows (their task was lost); returns the
        ids published. Provider statuses that matched no send for a day are forgotten."""
        now = self.clock()
        forgotten = await self.store.forget_unmatched_statuses(self.channel, now)
        if forgotten:
            log.info("provider_statuses_forgotten", channel=self.channel, count=forgotten)
        older_than = now - timedelta(seconds=self.stuck_after_seconds)
        ids = await self.store.resend_stuck(self.channel, older_than, now, set(self.in_flight))
        if ids:
            log.warning("stuck_rows_resent", channel=self.channel, count=len(ids))
            self.metrics.delivered(self.channel, "resent", len(ids))
        if not await self._queued_tasks():
            resent = set(ids)
            overdue = [
                i
                for i in await self.store.overdue_pending(self.channel, older_than)
                if i not in resent
            ]
            if overdue:
                log.warning("lost_tasks_republished", channel=self.channel, count=len(overdue))
            ids += overdue
        if ids:
            await self.dispatcher.dispatch({self.channel: ids})
        return ids

    async def _queued_tasks(self) -> int:
        """Tasks waiting on the channel's queues (the urgent one's included)."""
        declared = [await queue.declare() for queue in self.queues]
        return sum(each.message_count or 0 for each in declared)
