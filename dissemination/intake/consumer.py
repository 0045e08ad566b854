"""The AMQP side of intake: consumes `alerts.inbound`, hands each message to the processor,
and settles it once.

Settlement happens in one place (`IntakeConsumer._settle`):
  - stored, duplicate or quarantined  -> delivery tasks for its pending rows published
                                         (confirmed), then ack (the ledger holds it durably)
  - RejectedInput (bad input)         -> recorded, republished to the dead-letter exchange with
                                         x-rejection-* headers (confirmed), then acked
  - StoreUnavailable, or the dead     -> nack with requeue after backoff (never rejected: ours
    letter not confirmed                 to fix, and the message is fine)
  - anything else (a bug)             -> logged with its traceback, then dead-lettered like a
                                         rejection with reason "internal_error", at once

Why a bug is not retried: decoding and planning are deterministic, so a message that fails
them once fails them on every delivery; the store's transient failures (outages, deadlocks,
serialization failures, timeouts) arrive as StoreUnavailable. A retried bug only loops until
the queue's delivery limit and then reaches alerts.dead without a reason. Dead-lettered, the
message is kept whole, with its reason, for republishing once the bug is fixed.
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
        try:
            submitter = submitter_of(message, self.own_user, self.grants)
            send_id = send_of(message, self.own_user)
            source = source_of(message, self.own_user)
            result = await self.processor.process(payload, submitter, send_id, source)
        except RejectedInput as rejected:
            await self._dead_letter(message, payload, rejected)
            return
        except StoreUnavailable as error:
            await self._requeue_later(message, f"store unavailable: {error}")
            return
        except Exception as error:
            log.exception("intake_failed_unexpectedly", message_id=message.message_id)
            await self._dead_letter(message, payload, internal_error(error))
            return
        self.backoff.reset()
        for alert_id, outcome in result.outcomes.items():
            log.info("alert_recorded", alert_id=alert_id, outcome=outcome.value)
        if (result.pending or result.urgent) and self.dispatcher is not None:
            started = time.perf_counter()
            try:
                await self.dispatcher.dispatch(result.urgent, urgent=True)
                await self.dispatcher.dispatch(result.pending)
            except PublishFailed as error:
                # The plan is stored; the redelivery finds the rows still pending and
                # publishes their tasks again.
                await self._requeue_later(message, str(error))
                return
            self.processor.metrics.in_stage("dispatch", time.perf_counter() - started)
        await self._safely(message.ack())
        self.processed += 1

    async def _dead_letter(
        self, message: AbstractIncomingMessage, payload: Payload, rejected: RejectedInput
    ) -> None:
        log.warning("message_rejected", message_id=message.message_id, reason=rejected.reason)
        try:
            await self._record_rejection(message, payload, rejected)
            await self.topology.dead_exchange.publish(
                dead_letter_message(message, rejected), routing_key=message.routing_key or ""
            )
        except StoreUnavailable as error:
            await self._requeue_later(message, f"store unavailable: {error}")
            return
        except (aio_pika.exceptions.AMQPError, ConnectionError) as error:
            await self._requeue_later(message, f"dead-letter publish failed: {error!r}")
            return
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

    async def _requeue_later(self, message: AbstractIncomingMessage, why: str) -> None:
        delay = self.backoff.next_delay()
        log.warning(
            "message_requeued", message_id=message.message_id, delay=round(delay, 2), reason=why
        )
        await asyncio.sleep(delay)
        await self._safely(message.nack(requeue=True))

    async def _safely(self, settle: object) -> None:
        """Settle, tolerating a channel that died meanwhile: the broker then redelivers the
        message, and the idempotent ledger turns the redelivery into a duplicate."""
        try:
            await settle  # type: ignore[misc]
        except (aio_pika.exceptions.AMQPError, ConnectionError, RuntimeError) as error:
            log.warning("settle_failed", error=repr(error))

    async def stop(self, grace_seconds: float) -> None:
        """Stop consuming, let in-flight messages finish for `grace_seconds`, requeue the rest."""
        self._stopping = True
        if self._consumer_tag is not None:
            try:
                await self.topology.inbound.cancel(self._consumer_tag)
            except (aio_pika.exceptions.AMQPError, ConnectionError, RuntimeError) as error:
                log.warning("consumer_cancel_failed", error=repr(error))
        pending = set(self._inflight)
        if pending:
            _, still_running = await asyncio.wait(pending, timeout=grace_seconds)
            for task in still_running:
                task.cancel()
            if still_running:
                await asyncio.wait(still_running)


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


def dead_letter_message(
    message: AbstractIncomingMessage, rejected: RejectedInput
) -> aio_pika.Message:
    """The rejected body with machine-readable reason headers, for the alerts.dead queue."""
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
        },
    )
