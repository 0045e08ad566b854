"""CAP Ack messages out: when an originator configured in `cap_ack.senders` has an alert
disseminated (planned, and none of its delivery rows still pending, held for approval or
sending), a CAP 1.2 message with msgType Ack referencing it is published, with confirms, onto
the configured exchange. An alert rejected at approval, or withdrawn by a Cancel while held,
was never disseminated: it gets no Ack. An instance claims an alert's Ack in the ledger before
publishing it, so instances never both publish it; a claim its instance died holding is taken
over after CLAIM_TIMEOUT. The Ack's identifier is derived from the alert, so a republish
carries the same identifier.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any
from xml.etree import ElementTree

import structlog
from sqlalchemy import exists, select, update

from core.alert import MsgType
from core.clock import Clock
from dissemination.broker.publisher import AlertPublisher
from dissemination.settings import CapAckSettings
from dissemination.store.database import Database
from dissemination.store.rows import AlertState, DeliveryState
from dissemination.store.tables import alerts, approvals, cap_acks, deliveries

log = structlog.stdlib.get_logger(__name__)

CAP_NAMESPACE = "urn:oasis:names:tc:emergency:cap:1.2"
ACK_NAMESPACE = uuid.UUID("f3a1c7de-2b64-4f0e-8a59-6d1e0c9b2a47")
BATCH = 100
CLAIM_TIMEOUT = timedelta(minutes=1)
UNSETTLED = (DeliveryState.PENDING.value, DeliveryState.HELD.value, DeliveryState.SENDING.value)
"""States of a row still to be sent: a `held` one waits for approval, and may never be."""
UNDISSEMINATED = ("rejected", "withdrawn")
"""States in `approvals` (`dissemination.controls.approval.ApprovalState`, which this package
may not import) of a held alert that was never sent: its rows are `suppressed`, and no Ack
says it was disseminated."""
ACK_COLUMNS = (alerts.c.id, alerts.c.sender, alerts.c.identifier, alerts.c.sent, alerts.c.status)


def cap_time(moment: datetime) -> str:
    """CAP's dateTime: seconds, and UTC written as -00:00 (CAP 1.2, 3.3.2)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S-00:00")


def ack_identifier(alert_id: str) -> str:
    return f"ack-{uuid.uuid5(ACK_NAMESPACE, alert_id)}"


def _address(value: str) -> str:
    return f'"{value}"' if any(c.isspace() for c in value) else value


def cap_ack_xml(alert: Any, our_sender: str, sent: datetime) -> bytes:
    """The Ack of one stored alert (`alerts` row) as CAP 1.2 XML, addressed to its sender."""
    root = ElementTree.Element("alert", xmlns=CAP_NAMESPACE)
    for name, text in (
        ("identifier", ack_identifier(alert.id)),
        ("sender", our_sender),
        ("sent", cap_time(sent)),
        ("status", alert.status),
        ("msgType", MsgType.ACK.value),
        ("scope", "Private"),
        ("addresses", _address(alert.sender)),
        ("note", "Received and disseminated."),
        ("references", f"{alert.sender},{alert.identifier},{alert.sent}"),
    ):
        ElementTree.SubElement(root, name).text = text
    return bytes(ElementTree.tostring(root, encoding="utf-8", xml_declaration=True))


class CapAcks:
    """Publishes the Acks that are due."""

    def __init__(
        self,
        database: Database,
        publisher: AlertPublisher,
        settings: CapAckSettings,
        clock: Clock,
    ) -> None:
        self.database = database
        self.publisher = publisher
        self.settings = settings
        self.clock = clock

    async def run_due(self) -> int:
        """Publish the Acks that are due (and any a dead instance left); returns how many."""
        if not self.settings.senders:
            return 0
        unsettled = exists().where(
            deliveries.c.alert_id == alerts.c.id, deliveries.c.state.in_(UNSETTLED)
        )
        acknowledged = exists().where(cap_acks.c.alert_id == alerts.c.id)
        refused = exists().where(
            approvals.c.alert_id == alerts.c.id, approvals.c.state.in_(UNDISSEMINATED)
        )
        query = (
            select(*ACK_COLUMNS)
            .where(
                alerts.c.sender.in_(self.settings.senders),
                alerts.c.state == AlertState.PLANNED.value,
                alerts.c.msg_type != MsgType.ACK.value,
                ~acknowledged,
                ~unsettled,
                ~refused,
            )
            .order_by(alerts.c.received_at)
            .limit(BATCH)
        )
        async with self.database.reading() as conn:
            due = list(await conn.execute(query))
            stale = list(
                await conn.execute(
                    select(cap_acks.c.alert_id, cap_acks.c.claimed_at).where(
                        cap_acks.c.published_at.is_(None),
                        cap_acks.c.claimed_at < self.clock() - CLAIM_TIMEOUT,
                    )
                )
            )
        published = 0
        for alert in due:
            if await self._claim(alert.id, None):
                await self._publish(alert)
                published += 1
        for alert_id, claimed_at in stale:
            if await self._claim(alert_id, claimed_at):
                async with self.database.reading() as conn:
                    alert = (
                        await conn.execute(select(*ACK_COLUMNS).where(alerts.c.id == alert_id))
                    ).one()
                await self._publish(alert)
                published += 1
        return published

    async def _claim(self, alert_id: str, stale_since: datetime | None) -> bool:
        """Take the Ack of `alert_id` to publish: a new claim, or one left since `stale_since`."""
        now = self.clock()
        async with self.database.transaction() as conn:
            if stale_since is None:
                result = await conn.execute(
                    self.database.insert_ignoring_conflicts(cap_acks).values(
                        alert_id=alert_id, identifier=ack_identifier(alert_id), claimed_at=now
                    )
                )
            else:
                result = await conn.execute(
                    update(cap_acks)
                    .where(cap_acks.c.alert_id == alert_id, cap_acks.c.claimed_at == stale_since)
                    .values(claimed_at=now)
                )
            return bool(result.rowcount == 1)

    async def _publish(self, alert: Any) -> None:
        now = self.clock()
        identifier = ack_identifier(alert.id)
        await self.publisher.publish(
            cap_ack_xml(alert, self.settings.sender, now),
            "application/cap+xml",
            self.settings.routing_key,
            identifier,
        )
        async with self.database.transaction() as conn:
            await conn.execute(
                update(cap_acks).where(cap_acks.c.alert_id == alert.id).values(published_at=now)
            )
        log.info("cap_ack_published", identifier=identifier, alert_id=alert.id)
