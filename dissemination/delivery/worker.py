"""Delivery workers: one per channel, consuming `deliveries.<channel>` and its urgent queue.
For each task (a batch of row ids) a worker claims the rows that are due in chunks, sends them
concurrently (bounded in all and per destination host, behind that host's circuit breaker),
records every outcome in one transaction, and only then acks the task. Urgent tasks go by a
lane of their own (`SendLane`: room to claim, and send slots), so their rows never queue
behind a fan-out's.

- sent: the provider accepted it; its id (Message-ID, Twilio SID, HTTP status) is kept.
- transient failure: the row goes back to `pending` with `not_before` set by the backoff and
  its id onto a retry queue; after `broker.max_attempts` tries it fails.
- permanent failure (or an SMS opt-out): the row fails (or is suppressed) and the
  subscription's next channel gets a row, if the stakeholder has a contact there.
- a row left in `sending` (its worker died mid-send, so whether it went is unknown) is, after
  `broker.stuck_after_seconds`, resent once and flagged `resent`; stuck again, it fails.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import aio_pika
import structlog
from aio_pika.abc import AbstractIncomingMessage, AbstractQueue

from channels.base import DeliveryChannel, Outcome, SendResult
from core.clock import Clock
from core.errors import StoreUnavailable
from dissemination.broker.dispatch import DeliveryDispatcher
from dissemination.broker.topology import fresh_id
from dissemination.controls.sendcheck import send_time_refusal
from dissemination.delivery.breaker import CircuitBreakers
from dissemination.delivery.claims import DeliveryStore, Settlement, SettleResult
from dissemination.delivery.lanes import SendLane
from dissemination.delivery.messages import MessageBuilder
from dissemination.delivery.outcomes import log_settled, outcome_label, settlement
from dissemination.delivery.sweep import StuckRowSweeper
from dissemination.errors import PublishFailed
from dissemination.failpoints import failpoint
from dissemination.metrics import Metrics
from dissemination.retrying import Backoff, RetrySchedule
from dissemination.store.rows import ClaimedRow, DeliveryState

log = structlog.stdlib.get_logger(__name__)
CLAIM_CHUNK = 64
"""Rows claimed at once: bounds what a crash leaves in `sending` (and so may resend)."""
SETTLE_RETRY_DELAYS = (0.5, 1.0, 2.0, 4.0)
SETTLE_INTERVAL = 0.05
"""Sends that finished within this long of each other are recorded in one transaction; a
slow destination's rows are recorded when they finish, never holding up the others'."""


class DeliveryWorker:
    """Sends one channel's rows named by tasks on its queue: each row made into a message by
    `builder`, sent by `channel`."""

    def __init__(
        self,
        channel: DeliveryChannel,
        builder: MessageBuilder,
        store: DeliveryStore,
        queue: AbstractQueue,
        urgent_queue: AbstractQueue,
        dispatcher: DeliveryDispatcher,
        schedule: RetrySchedule,
        breakers: CircuitBreakers,
        clock: Clock,
        *,
        concurrency: int = 128,
        per_host_concurrency: int = 32,
        stuck_after_seconds: float = 300.0,
        metrics: Metrics | None = None,
        outage_backoff: Backoff | None = None,
    ) -> None:
        self.delivery_channel = channel
        self.builder = builder
        self.channel = channel.name
        self.store = store
        self.queue = queue
        self.urgent_queue = urgent_queue
        self.dispatcher = dispatcher
        self.schedule = schedule
        self.breakers = breakers
        self.clock = clock
        self.metrics = metrics or Metrics()
        self.outage_backoff = outage_backoff or Backoff(0.5, 30.0)
        """How long a task that met a store or broker outage waits before it is handed back."""
        self.metrics.watch_breakers(self.channel, breakers.open_hosts)
        self.urgent_lane = SendLane(concurrency, per_host_concurrency)
        self.lane = SendLane(concurrency, per_host_concurrency, yields_to=self.urgent_lane)
        self._in_flight: set[str] = set()  # row ids this worker holds in `sending`
        self._consumer_tags: list[tuple[AbstractQueue, str]] = []
        self.sweeper = StuckRowSweeper(
            self.channel,
            store,
            (queue, urgent_queue),
            dispatcher,
            clock,
            self.metrics,
            stuck_after_seconds,
            self._in_flight,
        )
        self._sweeper: asyncio.Task[None] | None = None
        self._handlers: set[asyncio.Task[Any]] = set()  # tasks being handled, for `stop`

    async def start(self) -> None:
        await self.sweep()
        self._consumer_tags = [
            (
                self.urgent_queue,
                await self.urgent_queue.consume(self._on_urgent_task, consumer_tag=fresh_id()),
            ),
            (self.queue, await self.queue.consume(self._on_task, consumer_tag=fresh_id())),
        ]
        self._sweeper = asyncio.create_task(
            self.sweeper.run(), name=f"{self.channel}-stuck-row-sweeper"
        )

    async def stop(self) -> None:
        """Stop taking tasks, then end the sweeper and the tasks still being handled (their
        rows stay pending or sending for the next start), so that none of them outlives the
        store and broker connections they hold: the service closes those next."""
        for queue, tag in self._consumer_tags:
            try:
                await queue.cancel(tag)
            except (aio_pika.exceptions.AMQPError, ConnectionError, RuntimeError) as error:
                log.warning("consumer_cancel_failed", channel=self.channel, error=repr(error))
        running = [t for t in (self._sweeper, *self._handlers) if t is not None and not t.done()]
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)
        await self.delivery_channel.close()

    async def sweep(self) -> list[str]:
        """Sweep the channel's stuck rows and lost tasks now (`StuckRowSweeper.sweep`)."""
        return await self.sweeper.sweep()

    async def _on_urgent_task(self, message: AbstractIncomingMessage) -> None:
        await self._on_task(message, urgent=True)

    async def _on_task(self, message: AbstractIncomingMessage, urgent: bool = False) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._handlers.add(task)
            task.add_done_callback(self._handlers.discard)
        structlog.contextvars.bind_contextvars(channel=self.channel)  # this task's lines
        try:
            body = json.loads(message.body)
            ids = [str(i) for i in body["deliveries"]]
        except (ValueError, KeyError, TypeError):
            log.error(
                "malformed_task_rejected", channel=self.channel, message_id=message.message_id
            )
            await message.reject(requeue=False)
            return
        published_at = body.get("published_at")
        if isinstance(published_at, float):
            self.metrics.in_stage("queued", time.time() - published_at)
        try:
            outcomes = await self.deliver(ids, self.urgent_lane if urgent else self.lane)
        except (StoreUnavailable, PublishFailed) as error:
            # Settled rows stay settled; the rest are pending (redelivered with the task) or
            # sending (the stuck-row policy resolves them). Handed back only after a backoff
            # shared by the worker's tasks: at once, every task span through the broker as
            # fast as the store failed, for the whole outage, and where a requeue counts
            # against a delivery limit (RabbitMQ 4.0-4.2's default of 20 on quorum queues)
            # a few seconds' outage dropped the task, its rows left for the sweep.
            delay = self.outage_backoff.next_delay()
            log.warning(
                "task_requeued",
                channel=self.channel,
                rows=len(ids),
                reason=str(error),
                after=round(delay, 2),
            )
            await asyncio.sleep(delay)
            await message.nack(requeue=True)
            return
        except Exception:
            # A bug, not an outage: the task is dropped rather than requeued (it would only fail
            # again, for ever), and rather than left unsettled (it would hold a prefetch slot
            # until the connection closed). Its rows are not lost: the sweep republishes
            # overdue pending rows and resends stuck ones.
            log.exception("task_failed", channel=self.channel, rows=len(ids))
            await message.reject(requeue=False)
            return
        self.outage_backoff.reset()
        await message.ack()
        log.info("task_done", channel=self.channel, rows=len(ids), **dict(sorted(outcomes.items())))

    async def deliver(self, ids: Sequence[str], lane: SendLane | None = None) -> Counter[str]:
        """Claim the rows in chunks while there is room in `lane` (the ordinary one by
        default), send them concurrently, and record outcomes in waves as sends finish;
        returns how many rows ended in which state."""
        lane = lane or self.lane
        outcomes: Counter[str] = Counter()
        sending: set[asyncio.Task[Settlement]] = set()
        claimed: set[str] = set()
        try:
            for start in range(0, len(ids), CLAIM_CHUNK):
                while lane.full():
                    if sending:  # record our own finished sends while we wait for room
                        await self._settle_finished(sending, lane, SETTLE_INTERVAL, outcomes)
                        continue
                    async with lane.room:
                        await lane.room.wait_for(lambda: not lane.full())
                await failpoint("before_claim")
                claiming = time.perf_counter()
                claim = await self.store.claim(ids[start : start + CLAIM_CHUNK], self.clock())
                self.metrics.in_stage("claim", time.perf_counter() - claiming)
                await self._delay(claim.held, lane)
                if claim.expired:
                    outcomes[DeliveryState.SUPPRESSED.value] += claim.expired
                    self.metrics.delivered(self.channel, "expired", claim.expired)
                    log.info("expired_rows_suppressed", channel=self.channel, count=claim.expired)
                lane.unsettled += len(claim.rows)
                new_ids = {row.id for row in claim.rows}
                claimed |= new_ids
                self._in_flight |= new_ids
                sending |= {asyncio.create_task(self._attempt(row, lane)) for row in claim.rows}
                await self._settle_finished(sending, lane, 0, outcomes)
            while sending:
                await self._settle_finished(sending, lane, SETTLE_INTERVAL, outcomes)
            return outcomes
        finally:
            if sending:  # only on a store or broker failure: unsettled rows are redone
                for task in sending:
                    task.cancel()
                self._in_flight.difference_update(claimed)  # left for the stuck-row policy
                await lane.release(len(sending))

    async def _settle_finished(
        self,
        sending: set[asyncio.Task[Settlement]],
        lane: SendLane,
        wait: float,
        outcomes: Counter[str],
    ) -> None:
        """Record the sends that have finished (waiting up to `wait` for more to finish, and
        for at least one), taking them out of `sending`."""
        if wait > 0:
            done, _ = await asyncio.wait(sending, timeout=wait)
            if not done:
                done, _ = await asyncio.wait(sending, return_when=asyncio.FIRST_COMPLETED)
        else:
            done = {task for task in sending if task.done()}
        if done:
            sending.difference_update(done)
            settlements = [task.result() for task in done]
            await self._settle(settlements, lane)
            outcomes.update(s.state.value for s in settlements)

    async def _settle(self, settlements: list[Settlement], lane: SendLane) -> None:
        try:
            settling = time.perf_counter()
            settled = await self._settle_with_retries(settlements)
            self.metrics.in_stage("settle", time.perf_counter() - settling)
            log_settled(settlements)
        finally:
            self._in_flight.difference_update(s.row.id for s in settlements)
            await lane.release(len(settlements))
        self._count(settlements, settled)
        await self._delay(
            [
                (s.row.id, s.not_before)
                for s in settlements
                if s.state is DeliveryState.PENDING and s.not_before is not None
            ],
            lane,
        )
        if settled.fallbacks:  # the same alerts' rows: urgent if these were
            await self.dispatcher.dispatch(settled.fallbacks, lane is self.urgent_lane)

    def _count(self, settlements: list[Settlement], settled: SettleResult) -> None:
        for outcome, count in Counter(map(outcome_label, settlements)).items():
            self.metrics.delivered(self.channel, outcome, count)
        for seconds in settled.first_deliveries:
            self.metrics.first_delivery(self.channel, seconds)

    async def _settle_with_retries(self, settlements: list[Settlement]) -> SettleResult:
        """The outcomes are known here and nowhere else: a busy or briefly unavailable store
        gets a few more tries before the rows are left to the stuck-row policy."""
        for delay in SETTLE_RETRY_DELAYS:
            try:
                return await self.store.settle(settlements, self.clock())
            except StoreUnavailable as error:
                log.warning("settle_retrying", rows=len(settlements), reason=str(error))
                await asyncio.sleep(delay)
        return await self.store.settle(settlements, self.clock())

    async def _delay(self, waiting: Sequence[tuple[str, datetime]], lane: SendLane) -> None:
        """One delayed task per retry tier, due when the earliest of its rows is, back onto
        the queue of `lane`; a row that comes back before its own time is delayed again."""
        now = self.clock()
        by_tier: dict[float, tuple[float, list[str]]] = {}
        for row_id, not_before in waiting:
            seconds = max(0.0, (not_before - now).total_seconds())
            tier = self.schedule.tier_for(seconds)
            earliest, ids = by_tier.get(tier, (seconds, []))
            ids.append(row_id)
            by_tier[tier] = (min(earliest, seconds), ids)
        urgent = lane is self.urgent_lane
        for seconds, ids in by_tier.values():
            await self.dispatcher.delay(self.channel, ids, seconds, urgent)

    async def _attempt(self, row: ClaimedRow, lane: SendLane) -> Settlement:
        """Send one row and say how it ends. Never raises (but when cancelled): a bug in
        handling one row fails that row alone rather than the task, which would strand in
        `sending` every other row sent with it."""
        structlog.contextvars.bind_contextvars(  # this row's own task: its lines name it
            alert_id=row.alert_id, delivery_id=row.id, channel=row.channel
        )
        try:
            return await self._send(row, lane)
        except Exception as error:
            log.exception("attempt_failed")
            return Settlement(
                row, DeliveryState.FAILED, f"internal error: {type(error).__name__}", fall_back=True
            )

    async def _send(self, row: ClaimedRow, lane: SendLane) -> Settlement:
        now = self.clock()
        refusal = send_time_refusal(row)
        if refusal is not None:
            code, detail = refusal
            return Settlement(row, DeliveryState.WITHHELD, code, detail=detail)
        if row.opted_out:
            return Settlement(row, DeliveryState.SUPPRESSED, "opted_out", fall_back=True)
        try:
            message = self.builder.build(row)
        except Exception as error:  # a bug in making the message must not strand the row
            log.exception("message_not_made")
            result = SendResult(Outcome.TRANSIENT, f"internal error: {type(error).__name__}")
            return settlement(row, result, now, self.schedule)
        host = self.delivery_channel.host(message)
        if not self.breakers.allow(host, now):
            return Settlement(
                row,
                DeliveryState.PENDING,
                "circuit open for this destination",
                not_before=self.breakers.retry_at(host, now),
                uncount_attempt=True,
            )
        trial = self.breakers.is_open(host)  # allowed through an open circuit: the trial
        try:
            async with lane.host(host), lane.slots:  # the host's first: hold no shared slot
                started = time.perf_counter()
                try:
                    result = await self.delivery_channel.send(message)
                except Exception as error:  # a bug in a channel must not strand the row
                    log.exception("send_raised")
                    result = SendResult(
                        Outcome.TRANSIENT, f"internal error: {type(error).__name__}"
                    )
                self.metrics.sent_in(self.channel, time.perf_counter() - started)
        except BaseException:
            # Cancelled (the task failed on a store or broker outage) before an outcome: a
            # trial left taken would keep the circuit half-open, refusing its host, for ever.
            if trial:
                self.breakers.abandon(host)
            raise
        now = self.clock()
        self.breakers.record(host, failed=result.outcome is Outcome.TRANSIENT, now=now)
        return settlement(row, result, now, self.schedule)
