"""Alert intake: each inbound message is decoded, validated, stored, and only then settled.

Settlement happens in one place (`IntakeConsumer._settle`):
  - stored, duplicate or quarantined  -> delivery tasks for its pending rows published
                                         (confirmed), then ack (the ledger holds it durably)
  - RejectedInput (bad input)         -> recorded, republished to the dead-letter exchange with
                                         x-rejection-* headers (confirmed), then acked
  - StoreUnavailable / unexpected     -> nack with requeue after backoff (never rejected; a true
                                         poison message reaches alerts.dead via the delivery limit)
  - shutdown                          -> finished within the grace period, else nack with requeue
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

import aio_pika
from aio_pika.abc import AbstractIncomingMessage

from dissemination.alert import Alert, MsgType, Status, Tlp
from dissemination.approvalrules import ApprovalPolicy
from dissemination.broker import IntakeTopology
from dissemination.decoding import DecodeLimits, decode_alerts
from dissemination.dispatch import DeliveryDispatcher
from dissemination.errors import RejectedInput, StoreUnavailable
from dissemination.failpoints import failpoint
from dissemination.groupcommit import GroupCommit
from dissemination.ledger import (
    AlertMessage,
    AlertState,
    Ledger,
    Payload,
    PlannedAlert,
    Recorded,
    RecordOutcome,
)
from dissemination.normalize import HandlingDefaults
from dissemination.publisher import PublishFailed
from dissemination.settings import IntakeSettings, StoreSettings

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class IntakeResult:
    """What one message became: alert ids by what recording them did, and the delivery rows
    waiting to be sent, by channel."""

    outcomes: dict[str, RecordOutcome] = field(default_factory=dict)
    pending: dict[str, list[str]] = field(default_factory=dict)


def initial_state(alert: Alert, now: datetime) -> AlertState:
    """Draft is never disseminated; an alert whose every info block has expired is recorded only."""
    if alert.status is Status.DRAFT:
        return AlertState.DRAFT
    expires = alert.expires
    if expires is not None and expires <= now:
        return AlertState.EXPIRED
    return AlertState.RECEIVED


class IntakeProcessor:
    """Decode, validate, plan and store, whatever way the bytes arrived (AMQP or a test)."""

    def __init__(
        self,
        ledger: Ledger,
        settings: IntakeSettings,
        clock: Clock = utc_now,
        approval: ApprovalPolicy | None = None,
    ) -> None:
        self.ledger = ledger
        self.clock = clock
        self.approval = approval
        self.writer: GroupCommit[AlertMessage, list[Recorded]] = GroupCommit(ledger.record_messages)
        self.limits = DecodeLimits(settings.max_body_bytes, settings.max_json_depth)
        self.defaults = HandlingDefaults(
            Tlp.parse(settings.default_tlp), Tlp.parse(settings.public_scope_tlp)
        )

    def parse(self, payload: Payload) -> list[Alert]:
        """The validated alerts in `payload`, or RejectedInput."""
        return decode_alerts(payload.body, payload.content_type, self.limits, self.defaults)

    async def process(self, payload: Payload, submitted_by: str | None = None) -> IntakeResult:
        """Store the payload's alerts and plan their deliveries; `submitted_by` is who
        published it, as far as it is known (see `submitter_of`)."""
        alerts = [await self._with_inherited_marks(alert) for alert in self.parse(payload)]
        now = self.clock()
        await failpoint("before_store")
        planned = tuple(self._planned(alert, now) for alert in alerts)
        message = AlertMessage(payload, planned, now, submitted_by)
        recorded = await self.writer.submit(message)
        await failpoint("after_store")
        result = IntakeResult()
        for alert, outcome in zip(alerts, recorded, strict=True):
            result.outcomes[alert.id] = outcome.outcome
            for channel, ids in outcome.pending.items():
                result.pending.setdefault(channel, []).extend(ids)
        return result

    async def _with_inherited_marks(self, alert: Alert) -> Alert:
        """An Update or Cancel carries at least the marks of the alerts it refers to (those
        stored): the stricter TLP and every caveat, unless its own are stricter."""
        if alert.msg_type not in (MsgType.UPDATE, MsgType.CANCEL) or not alert.references:
            return alert
        handling = alert.handling
        for original in await self.ledger.marks_of([ref.alert_id for ref in alert.references]):
            handling = handling.at_least(original)
        return alert if handling is alert.handling else replace(alert, handling=handling)

    def _planned(self, alert: Alert, now: datetime) -> PlannedAlert:
        state = initial_state(alert, now)
        planner = self.ledger.planner
        if state is not AlertState.RECEIVED or planner is None:
            return PlannedAlert(alert, state)
        hold_rule = self.approval.hold_rule(alert) if self.approval is not None else None
        return PlannedAlert(alert, state, tuple(planner.plan(alert)), hold_rule)


SUBMITTED_BY_HEADER = "x-submitted-by"


def submitter_of(message: AbstractIncomingMessage, own_user: str | None) -> str | None:
    """Who published `message`: the API token named in its x-submitted-by header when this
    service's own broker user published it (HTTP ingest; the broker checks user_id against
    the connection's user), else the publishing broker user, if the message names it."""
    user_id = message.user_id
    if own_user is not None and user_id == own_user:
        submitted = message.headers.get(SUBMITTED_BY_HEADER)
        if isinstance(submitted, str) and submitted:
            return submitted
    return f"amqp:{user_id}" if user_id else None


class Backoff:
    """Exponential backoff, capped, with jitter (a random half to all of the delay), shared by
    all handlers so an outage slows them all."""

    def __init__(self, settings: StoreSettings) -> None:
        self.initial = settings.retry_initial_seconds
        self.maximum = settings.retry_max_seconds
        self.failures = 0

    def next_delay(self) -> float:
        self.failures += 1
        ceiling = min(self.maximum, self.initial * 2 ** (self.failures - 1))
        return random.uniform(ceiling / 2, ceiling)

    def reset(self) -> None:
        self.failures = 0


class IntakeConsumer:
    """Consumes `alerts.inbound` with bounded concurrency and settles each message once."""

    def __init__(
        self,
        processor: IntakeProcessor,
        topology: IntakeTopology,
        concurrency: int,
        backoff: Backoff,
        dispatcher: DeliveryDispatcher | None = None,
        own_user: str | None = None,
    ) -> None:
        self.processor = processor
        self.own_user = own_user
        self.dispatcher = dispatcher
        self.topology = topology
        self.backoff = backoff
        self._slots = asyncio.Semaphore(concurrency)
        self._inflight: set[asyncio.Task[object]] = set()
        self._stopping = False
        self._consumer_tag: str | None = None
        self.processed = 0

    async def start(self) -> None:
        self._consumer_tag = await self.topology.inbound.consume(self._on_message, no_ack=False)

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
        try:
            result = await self.processor.process(payload, submitter_of(message, self.own_user))
        except RejectedInput as rejected:
            await self._dead_letter(message, payload, rejected)
            return
        except StoreUnavailable as error:
            await self._requeue_later(message, f"store unavailable: {error}")
            return
        except Exception:
            log.exception("intake failed unexpectedly; requeueing message %s", message.message_id)
            await self._requeue_later(message, "unexpected error")
            return
        self.backoff.reset()
        for alert_id, outcome in result.outcomes.items():
            log.info("alert %s %s (message %s)", alert_id, outcome.value, message.message_id)
        if result.pending and self.dispatcher is not None:
            try:
                await self.dispatcher.dispatch(result.pending)
            except PublishFailed as error:
                # The plan is stored; the redelivery finds the rows still pending and
                # publishes their tasks again.
                await self._requeue_later(message, str(error))
                return
        await self._safely(message.ack())
        self.processed += 1

    async def _dead_letter(
        self, message: AbstractIncomingMessage, payload: Payload, rejected: RejectedInput
    ) -> None:
        log.warning("message %s rejected: %s", message.message_id, rejected.reason)
        try:
            await self.processor.ledger.record_rejection(
                source="amqp",
                reason=rejected.reason,
                errors=rejected.errors,
                payload=payload,
                message_id=message.message_id,
                now=self.processor.clock(),
            )
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
        self.processed += 1

    async def _requeue_later(self, message: AbstractIncomingMessage, why: str) -> None:
        delay = self.backoff.next_delay()
        log.warning("requeueing message %s in %.2fs: %s", message.message_id, delay, why)
        await asyncio.sleep(delay)
        await self._safely(message.nack(requeue=True))

    async def _safely(self, settle: object) -> None:
        """Settle, tolerating a channel that died meanwhile: the broker then redelivers the
        message, and the idempotent ledger turns the redelivery into a duplicate."""
        try:
            await settle  # type: ignore[misc]
        except (aio_pika.exceptions.AMQPError, ConnectionError, RuntimeError) as error:
            log.warning("could not settle message (it will be redelivered): %r", error)

    async def stop(self, grace_seconds: float) -> None:
        """Stop consuming, let in-flight messages finish for `grace_seconds`, requeue the rest."""
        self._stopping = True
        if self._consumer_tag is not None:
            try:
                await self.topology.inbound.cancel(self._consumer_tag)
            except (aio_pika.exceptions.AMQPError, ConnectionError, RuntimeError) as error:
                log.warning("could not cancel the consumer: %r", error)
        pending = set(self._inflight)
        if pending:
            _, still_running = await asyncio.wait(pending, timeout=grace_seconds)
            for task in still_running:
                task.cancel()
            if still_running:
                await asyncio.wait(still_running)


def dead_letter_message(
    message: AbstractIncomingMessage, rejected: RejectedInput
) -> aio_pika.Message:
    """The rejected body with machine-readable reason headers, for the alerts.dead queue."""
    return aio_pika.Message(
        message.body,
        content_type=message.content_type,
        message_id=message.message_id,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        headers={
            "x-rejection-reason": rejected.reason,
            "x-rejection-errors": json.dumps(rejected.errors_as_dicts()),
            "x-original-exchange": message.exchange or "",
            "x-original-routing-key": message.routing_key or "",
            "x-rejected-at": utc_now().isoformat(),
        },
    )
