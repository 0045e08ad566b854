"""Delivery workers: a worker consumes `deliveries.<channel>`. For every row id in a task it
claims the row (`pending` -> `sending`, a conditional update, so two workers never both send
it), sends it, and records the outcome with the provider's id. The task is acked once every
row in it is settled. A transient failure puts the row back to `pending` and its id on the
channel's retry queue, which hands it back after `broker.retry_delay_seconds`; after
`broker.max_attempts` the row fails.

A row left in `sending` (its worker died mid-send, so whether it went is unknown) is, after
`broker.stuck_after_seconds`, resent once and flagged `resent` (it may be a duplicate); if it
is stuck again it fails, never silently lost and never resent in a loop.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import aio_pika
from aio_pika.abc import AbstractExchange, AbstractIncomingMessage, AbstractQueue
from sqlalchemy import select, update

from channels.base import Outcome, SendResult
from channels.webhook import WebhookChannel, WebhookMessage
from dissemination.audit import Actor, write_audit
from dissemination.database import Database
from dissemination.errors import StoreUnavailable
from dissemination.intake import Clock
from dissemination.planning import DeliveryState
from dissemination.publisher import PublishFailed
from dissemination.tables import alerts, contacts, deliveries
from subscriptions.directory import CONTACT, record_of

log = logging.getLogger(__name__)
DELIVERY_ACTOR = Actor(None, "delivery worker")


class DeliveryStore:
    """The ledger operations a worker needs: claim, finish, put back for a retry."""

    def __init__(self, database: Database) -> None:
        self.database = database

    async def claim(self, delivery_id: str, now: datetime) -> dict[str, Any] | None:
        """Take a pending row for sending; None if another worker has it or it is settled."""
        async with self.database.transaction() as conn:
            claimed = await conn.execute(
                update(deliveries)
                .where(
                    deliveries.c.id == delivery_id,
                    deliveries.c.state == DeliveryState.PENDING.value,
                )
                .values(
                    state=DeliveryState.SENDING.value,
                    attempts=deliveries.c.attempts + 1,
                    updated_at=now,
                )
            )
            if claimed.rowcount != 1:
                return None
            row = (
                (
                    await conn.execute(
                        select(deliveries, alerts.c.document, contacts.c.secret)
                        .select_from(
                            deliveries.join(alerts, alerts.c.id == deliveries.c.alert_id).outerjoin(
                                contacts, contacts.c.id == deliveries.c.contact_id
                            )
                        )
                        .where(deliveries.c.id == delivery_id)
                    )
                )
                .mappings()
                .one()
            )
            return dict(row)

    async def finish(
        self,
        delivery_id: str,
        state: DeliveryState,
        result: SendResult,
        now: datetime,
    ) -> None:
        """Record a settled outcome (only from `sending`: a late writer never moves it back)."""
        async with self.database.transaction() as conn:
            await conn.execute(
                update(deliveries)
                .where(
                    deliveries.c.id == delivery_id,
                    deliveries.c.state == DeliveryState.SENDING.value,
                )
                .values(
                    state=state.value,
                    reason=result.detail,
                    provider_id=result.provider_id,
                    updated_at=now,
                )
            )

    async def reclaim_stuck(self, channel: str, older_than: datetime, now: datetime) -> list[str]:
        """Resend-once policy for rows stuck in `sending`; returns the ids to send again."""
        stuck = (deliveries.c.channel == channel) & (
            deliveries.c.state == DeliveryState.SENDING.value
        )
        stuck &= deliveries.c.updated_at < older_than
        async with self.database.transaction() as conn:
            await conn.execute(
                update(deliveries)
                .where(stuck, deliveries.c.resent.is_(True))
                .values(
                    state=DeliveryState.FAILED.value,
                    reason="stuck in sending again after one resend",
                    updated_at=now,
                )
            )
            ids = list(
                await conn.scalars(
                    select(deliveries.c.id).where(stuck, deliveries.c.resent.is_(False))
                )
            )
            if ids:
                await conn.execute(
                    update(deliveries)
                    .where(deliveries.c.id.in_(ids))
                    .values(
                        state=DeliveryState.PENDING.value,
                        resent=True,
                        reason="a worker stopped mid-send: resent once, may be a duplicate",
                        updated_at=now,
                    )
                )
            return ids

    async def disable_contact(self, contact_id: str, reason: str, now: datetime) -> None:
        """Deactivate an endpoint that said it is gone. Audited like any directory change,
        which is also how every instance's matcher learns of it."""
        async with self.database.transaction() as conn:
            row = (
                (await conn.execute(select(contacts).where(contacts.c.id == contact_id)))
                .mappings()
                .first()
            )
            if row is None or not row["active"]:
                return
            await conn.execute(
                update(contacts)
                .where(contacts.c.id == contact_id)
                .values(active=False, updated_at=now)
            )
            before = record_of(CONTACT, row)
            await write_audit(
                conn,
                at=now,
                actor=DELIVERY_ACTOR,
                action="update",
                entity=CONTACT.name,
                entity_id=contact_id,
                before=before,
                after=before | {"active": False, "updatedAt": now.isoformat()},
                reason=reason,
            )


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often a row may be tried; the delay itself is the retry queue's TTL."""

    max_attempts: int


def webhook_body(row: dict[str, Any]) -> bytes:
    """The JSON a webhook receiver gets: the delivery id and the normalized alert."""
    return json.dumps(
        {"type": "alert", "deliveryId": row["id"], "alert": row["document"]},
        separators=(",", ":"),
    ).encode()


class WebhookWorker:
    """Sends the webhook rows named by tasks on `deliveries.webhook`."""

    def __init__(
        self,
        store: DeliveryStore,
        channel: WebhookChannel,
        queue: AbstractQueue,
        retry_exchange: AbstractExchange,
        retry_routing_key: str,
        policy: RetryPolicy,
        clock: Clock,
        resend_routing_key: str = "",
        stuck_after_seconds: float = 300.0,
    ) -> None:
        self.resend_routing_key = resend_routing_key or queue.name
        self.stuck_after_seconds = stuck_after_seconds
        self.store = store
        self.channel = channel
        self.queue = queue
        self.retry_exchange = retry_exchange
        self.retry_routing_key = retry_routing_key
        self.policy = policy
        self.clock = clock
        self._consumer_tag: str | None = None
        self._sweeper: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.sweep()
        self._consumer_tag = await self.queue.consume(self._on_task, no_ack=False)
        self._sweeper = asyncio.create_task(self._sweep_periodically(), name="stuck-row-sweeper")

    async def _sweep_periodically(self) -> None:
        while True:
            await asyncio.sleep(self.stuck_after_seconds)
            try:
                await self.sweep()
            except (StoreUnavailable, PublishFailed) as error:
                log.warning("stuck-row sweep failed, will try again: %s", error)

    async def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        if self._consumer_tag is not None:
            try:
                await self.queue.cancel(self._consumer_tag)
            except (aio_pika.exceptions.AMQPError, ConnectionError, RuntimeError) as error:
                log.warning("could not cancel the delivery consumer: %r", error)
        await self.channel.close()

    async def _on_task(self, message: AbstractIncomingMessage) -> None:
        try:
            ids = [str(i) for i in json.loads(message.body)["deliveries"]]
        except (ValueError, KeyError, TypeError):
            log.error("malformed delivery task %s: rejected", message.message_id)
            await message.reject(requeue=False)
            return
        try:
            retry = [i for i in ids if await self._deliver(i) is Outcome.TRANSIENT]
            if retry:
                await self._schedule_retry(retry)
        except (StoreUnavailable, PublishFailed) as error:
            # Rows already settled stay settled; the rest are still pending or sending.
            log.warning("delivery task requeued: %s", error)
            await message.nack(requeue=True)
            return
        await message.ack()

    async def _deliver(self, delivery_id: str) -> Outcome | None:
        row = await self.store.claim(delivery_id, self.clock())
        if row is None:
            return None
        if not row["secret"]:
            result = SendResult(Outcome.PERMANENT, "the webhook contact has no signing secret")
        else:
            result = await self.channel.send(
                WebhookMessage(row["id"], row["address"], row["secret"], webhook_body(row))
            )
        now = self.clock()
        if result.outcome is Outcome.SENT:
            await self.store.finish(delivery_id, DeliveryState.SENT, result, now)
        elif result.outcome is Outcome.TRANSIENT and row["attempts"] < self.policy.max_attempts:
            await self.store.finish(delivery_id, DeliveryState.PENDING, result, now)
            return Outcome.TRANSIENT
        else:
            await self.store.finish(delivery_id, DeliveryState.FAILED, result, now)
            if result.disable_address and row["contact_id"]:
                await self.store.disable_contact(row["contact_id"], result.detail, now)
        return result.outcome

    async def sweep(self) -> list[str]:
        """Apply the resend-once policy to rows stuck in `sending`; returns the resent ids."""
        now = self.clock()
        older_than = now - timedelta(seconds=self.stuck_after_seconds)
        ids = await self.store.reclaim_stuck(WebhookChannel.name, older_than, now)
        if ids:
            log.warning("%d webhook rows were stuck in sending: resending them once", len(ids))
            await self._publish(ids, self.resend_routing_key)
        return ids

    async def _schedule_retry(self, ids: list[str]) -> None:
        await self._publish(ids, self.retry_routing_key)

    async def _publish(self, ids: list[str], routing_key: str) -> None:
        body = json.dumps({"deliveries": ids}).encode()
        try:
            await self.retry_exchange.publish(
                aio_pika.Message(
                    body,
                    content_type="application/json",
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                ),
                routing_key=routing_key,
                mandatory=True,
            )
        except (aio_pika.exceptions.AMQPError, ConnectionError, TimeoutError) as error:
            raise PublishFailed(f"retry not confirmed: {error!r}") from error
