"""The AMQP side of intake: consumes `alerts.inbound`, hands each message to the processor,
and settles it once.

Settlement happens in one place (`IntakeConsumer._settle`):
  - stored, duplicate or quarantined  -> delivery tasks for its pending rows published
                                         (confirmed), then ack (the ledger holds it durably)
  - RejectedInput (bad input)         -> recorded, republished to the dead-letter exchange with
                                         x-rejection-* headers and who published it
                                         (x-original-*, confirmed), then acked
  - StoreUnavailable, or a task or    -> held: kept unacked and the failed step tried again in
    the dead letter not confirmed        this process after a backoff, until it succeeds
                                         (never rejected, never handed back: ours to fix, and
                                         the message is fine)
  - anything else (a bug)             -> logged with its traceback, then dead-lettered like a
                                         rejection with reason "internal_error", at once

Why a held message is not handed back to the broker (nack with requeue): on RabbitMQ before
4.3 every return counts against the quorum queue's `x-delivery-limit`, so a store outage of
more than `delivery_limit` backoffs would have the broker itself dead-letter alerts nobody
ever processed. While the store is out, the held messages take every processing slot, those
delivered after them wait for a slot, and once the prefetch window is full the broker keeps
the rest in the queue. The first success wakes every held message to try again at once. A
message goes back to the queue only when the service stops (nacked) or its channel closes
(the broker returns it): on RabbitMQ before 4.3 either counts one delivery, which is what the
limit is for, a message that keeps killing the process or its connection.

Why a bug is not retried: decoding and planning are deterministic, so a message that fails
them once fails them on every delivery; the store's transient failures (outages, deadlocks,
serialization failures, timeouts) arrive as StoreUnavailable. A retried bug only loops until
the queue's delivery limit and then reaches alerts.dead without a reason. Dead-lettered, the
message is kept whole, with its reason and its provenance, for republishing once the bug is
fixed (README, "A bug").
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Mapping

import aio_pika
import structlog
from aio_pika.abc import AbstractIncomingMessage

from core.clock import utc_now
from core.errors import RejectedInput, StoreUnavailable
from dissemination.broker.dispatch import DeliveryDispatcher
from dissemination.broker.topology import IntakeTopology, fresh_id
from dissemination.controls.authority import Submitter, grants_for
from dissemination.errors import PublishFailed
from dissemination.intake.pipeline import AlertPipeline
from dissemination.ledger.alerts import Payload
from dissemination.retrying import Backoff

log = structlog.stdlib.get_logger(__name__)

SUBMITTED_BY_HEADER = "x-submitted-by"
SEND_HEADER = "x-send-id"
INTERNAL_ERROR = "internal_error"
MAX_ERRORS_HEADER = 32_768


def submitter_of(
    message: AbstractIncomingMessage,
    own_user: str | None,
    grants: Mapping[str, frozenset[str]],
) -> Submitter:
    """Who published `message`, as the broker vouches for it (it checks `user_id` against
    the connection's user). The service's own user: HTTP ingest, which checked the token's
    senders and names it in x-submitted-by (trusted from this user only), or the CLI. Any
    other user: the senders `broker.publishers` grants it. No user named: unknown."""
    user_id = message.user_id
    if not user_id:
        return Submitter(None, frozenset(), known=False)
    if own_user is not None and user_id == own_user:
        submitted = message.headers.get(SUBMITTED_BY_HEADER)
        return Submitter(submitted if isinstance(submitted, str) and submitted else None)
    return Submitter(f"amqp:{user_id}", grants_for(grants, user_id))


def send_of(message: AbstractIncomingMessage, own_user: str | None) -> str | None:
    """The ad-hoc send a message was released by (x-send-id), trusted from the service's own
    user only, as x-submitted-by is: nobody else can narrow or widen an alert's audience."""
    if own_user is None or not message.user_id or message.user_id != own_user:
        return None
    send_id = message.headers.get(SEND_HEADER)
    return send_id if isinstance(send_id, str) and send_id else None


def source_of(message: AbstractIncomingMessage, own_user: str | None) -> str:
    """The way a message came, as a metrics label: HTTP ingest (the service's own user naming
    a token), the CLI (the service's own user, no token), another broker user, or unknown."""
    user_id = message.user_id
    if not user_id:
        return "unknown"
    if own_user is not None and user_id == own_user:
        return "http" if message.headers.get(SUBMITTED_BY_HEADER) else "cli"
    return "amqp"


class IntakeConsumer:
    """Consumes `alerts.inbound` with bounded concurrency and settles each message once."""

    def __init__(
        self,
        processor: AlertPipeline,
        topology: IntakeTopology,
        concurrency: int,
        backoff: Backoff,
        dispatcher: DeliveryDispatcher | None = None,
        own_user: str | None = None,
        grants: Mapping[str, frozenset[str]] | None = None,
    ) -> None:
        self.processor = processor
        self.own_user = own_user
        self.grants = grants or {}
        self.dispatcher = dispatcher
        self.topology = topology
        self.backoff = backoff
        self._slots = asyncio.Semaphore(concurrency)
        self._inflight: set[asyncio.Task[object]] = set()
        self._stopping = False
        self._consumer_tag: str | None = None
        self._wake = asyncio.Event()
        """Set when held messages should try again now: the store answered, or `stop`."""
        self.held = 0
        """Messages held now, waiting to try again (`_hold`)."""
        self.processed = 0

    async def start(self) -> None:
        self._consumer_tag = await self.topology.inbound.consume(
            self._on_message, no_ack=False, consumer_tag=fresh_id()
        )

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._inflight.add(task)
        try:
            async with self._slots:
                if self._stopping:
                    await self._safely(message.nack(requeue=True))
                    return
                await self._settle(message)
        except asyncio.CancelledError:
            # Shutdown ran out of grace: hand the message back, never drop it.
            await asyncio.shield(self._safely(message.nack(requeue=True)))
            raise
        finally:
            self._inflight.discard(task)

    async def _settle(self, message: AbstractIncomingMessage) -> None:
        payload = Payload(message.body, message.content_type or "")
        structlog.contextvars.bind_contextvars(message_id=message.message_id)  # this task's lines
        while True:
            try:
                submitter = submitter_of(message, self.own_user, self.grants)
                send_id = send_of(message, self.own_user)
                source = source_of(message, self.own_user)
                result = await self.processor.process(payload, submitter, send_id, source)
            except RejectedInput as rejected:
                await self._dead_letter(message, payload, rejected)
                return
            except StoreUnavailable as error:
                if await self._hold(message, f"store unavailable: {error}"):
                    continue
                return
            except Exception as error:
                log.exception("intake_failed_unexpectedly", message_id=message.message_id)
                await self._dead_letter(message, payload, internal_error(error))
                return
            break
        self._store_answered()
        for alert_id, outcome in result.outcomes.items():
            log.info("alert_recorded", alert_id=alert_id, outcome=outcome.value)
        if (result.pending or result.urgent) and self.dispatcher is not None:
            started = time.perf_counter()
            while True:
                try:
                    # Publishing a task twice is harmless: a worker sends only rows it claims.
                    await self.dispatcher.dispatch(result.urgent, urgent=True)
                    await self.dispatcher.dispatch(result.pending)
                except (PublishFailed, aio_pika.exceptions.ChannelInvalidStateError) as error:
                    # The plan is stored; should this process stop first, the redelivery finds
                    # the rows still pending and publishes their tasks again.
                    if await self._hold(message, str(error)):
                        continue
                    return
                break
            self.processor.metrics.in_stage("dispatch", time.perf_counter() - started)
        await self._safely(message.ack())
        self.processed += 1

    async def _dead_letter(
        self, message: AbstractIncomingMessage, payload: Payload, rejected: RejectedInput
    ) -> None:
        log.warning("message_rejected", message_id=message.message_id, reason=rejected.reason)
        recorded = False
        while True:
            try:
                if not recorded:
                    await self._record_rejection(message, payload, rejected)
                    recorded = True
                await self.topology.dead_exchange.publish(
                    dead_letter_message(message, rejected), routing_key=message.routing_key or ""
                )
            except StoreUnavailable as error:
                why = f"store unavailable: {error}"
            except (
                aio_pika.exceptions.AMQPError,
                aio_pika.exceptions.ChannelInvalidStateError,
                ConnectionError,
            ) as error:
                why = f"dead-letter publish failed: {error!r}"
            else:
                break
            if not await self._hold(message, why):
                return
        if recorded:
            self._store_answered()
        await self._safely(message.ack())
        self.processor.metrics.alert_rejected(source_of(message, self.own_user), rejected.reason)
        self.processed += 1

    async def _record_rejection(
        self, message: AbstractIncomingMessage, payload: Payload, rejected: RejectedInput
    ) -> None:
        """Record the rejection; if that fails for any reason but an outage, the dead letter
        (which carries the body and the reason) still goes out, and the failure is logged."""
        try:
            await self.processor.ledger.record_rejection(
                source="amqp",
                reason=rejected.reason,
                errors=rejected.errors,
                payload=payload,
                message_id=message.message_id,
                now=self.processor.clock(),
            )
        except StoreUnavailable:
            raise
        except Exception:
            log.exception("rejection_not_recorded", message_id=message.message_id)

    async def _hold(self, message: AbstractIncomingMessage, why: str) -> bool:
        """Keep `message` (unacked) through a failure of ours and wait out the backoff, or
        until the store answers another message. True: try again now. False: the message
        is no longer ours to settle, because the service is stopping (it is handed back) or
        its channel closed (the broker returned it, and delivers it again)."""
        if not self._stopping:
            delay = self.backoff.next_delay()
            log.warning(
                "message_held", message_id=message.message_id, delay=round(delay, 2), reason=why
            )
            wake = self._wake
            self.held += 1
            try:
                async with asyncio.timeout(delay):
                    await wake.wait()
            except TimeoutError:
                pass
            finally:
                self.held -= 1
        if channel_closed(message):
            log.warning("held_message_returned", message_id=message.message_id, reason=why)
            return False
        if self._stopping:
            await self._safely(message.nack(requeue=True))
            return False
        return True

    def _store_answered(self) -> None:
        """The store took a message's work: end the backoff, and let every held message try
        again now rather than at the end of its wait."""
        if self.backoff.failures:
            self.backoff.reset()
            self._wake.set()
            self._wake = asyncio.Event()

    async def _safely(self, settle: object) -> None:
        """Settle, tolerating a channel that died meanwhile: the broker then redelivers the
        message, and the idempotent ledger turns the redelivery into a duplicate."""
        try:
            await settle  # type: ignore[misc]
        except (aio_pika.exceptions.AMQPError, ConnectionError, RuntimeError) as error:
            log.warning("settle_failed", error=repr(error))

    async def stop(self, grace_seconds: float) -> None:
        """Stop consuming, let in-flight messages finish for `grace_seconds`, requeue the rest.
        Messages held through an outage are handed back at once rather than at the end of
        the grace period, once the consumer is cancelled: before, the broker would deliver a
        message handed back to this consumer again, and its second return count too."""
        if self._consumer_tag is not None:
            try:
                await self.topology.inbound.cancel(self._consumer_tag)
            except (aio_pika.exceptions.AMQPError, ConnectionError, RuntimeError) as error:
                log.warning("consumer_cancel_failed", error=repr(error))
        self._stopping = True
        self._wake.set()
        pending = set(self._inflight)
        if pending:
            _, still_running = await asyncio.wait(pending, timeout=grace_seconds)
            for task in still_running:
                task.cancel()
            if still_running:
                await asyncio.wait(still_running)


def channel_closed(message: AbstractIncomingMessage) -> bool:
    """Whether the channel `message` came on has closed: the broker has then taken it back
    (and delivers it again, on the channel the robust connection restores), so it can no
    longer be acked or nacked."""
    try:
        _ = message.channel  # raises once the channel is closed
    except aio_pika.exceptions.ChannelInvalidStateError:
        return True
    return False


def internal_error(error: Exception) -> RejectedInput:
    """The rejection a bug becomes. It names the exception's type only: its text may quote
    the input, and it is in the service's log with the traceback."""
    return RejectedInput(
        INTERNAL_ERROR,
        f"the service failed on this message ({type(error).__name__}); see its log",
    )


def errors_header(rejected: RejectedInput) -> str:
    """The rejection's errors as JSON (ASCII) of at most MAX_ERRORS_HEADER characters: the
    message's headers must fit in one AMQP frame (128 KiB by default), or the broker closes
    the connection. Errors that do not fit are counted, not listed."""
    errors = rejected.errors_as_dicts()
    text = json.dumps(errors)
    kept = len(errors)
    while len(text) > MAX_ERRORS_HEADER:
        kept //= 2
        note = {"path": "$", "message": f"and {len(errors) - kept} more problems"}
        text = json.dumps([*errors[:kept], note])
    return text


ORIGINAL_USER_HEADER = "x-original-user-id"
ORIGINAL_HEADERS = {
    SUBMITTED_BY_HEADER: "x-original-submitted-by",
    SEND_HEADER: "x-original-send-id",
}
"""The headers that say who published a message, and the names a dead letter keeps them
under: not their own, so that nothing republished from alerts.dead is believed by accident
(README, "A bug", says which to put back, and when)."""
MAX_ORIGINAL_CHARS = 512
"""Longer provenance values are not kept. The service's own are short (a token's name, a
send's id); a longer one came from a publisher it would not have believed, and copying it
could push the dead letter's headers past one AMQP frame."""


def provenance_headers(message: AbstractIncomingMessage) -> dict[str, str]:
    """Who published `message`, as received: its `user_id` (a property a dead letter cannot
    carry, since the broker checks it against the publishing connection's user) and its
    x-submitted-by and x-send-id headers, under the x-original-* names."""
    kept: dict[str, str] = {}
    if message.user_id:
        kept[ORIGINAL_USER_HEADER] = message.user_id
    headers = message.headers or {}
    for name, original in ORIGINAL_HEADERS.items():
        value = headers.get(name)
        if isinstance(value, str) and value and len(value) <= MAX_ORIGINAL_CHARS:
            kept[original] = value
    return kept


def dead_letter_message(
    message: AbstractIncomingMessage, rejected: RejectedInput
) -> aio_pika.Message:
    """The rejected body with machine-readable reason headers and its provenance
    (`provenance_headers`), for the alerts.dead queue."""
    return aio_pika.Message(
        message.body,
        content_type=message.content_type,
        message_id=message.message_id or fresh_id(),
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        headers={
            "x-rejection-reason": rejected.reason,
            "x-rejection-errors": errors_header(rejected),
            "x-original-exchange": message.exchange or "",
            "x-original-routing-key": message.routing_key or "",
            "x-rejected-at": utc_now().isoformat(),
            **provenance_headers(message),
        },
    )
