"""The alert ledger: what was received (alerts with their verbatim payloads and references),
what was refused (rejections) and what was held back (quarantine). The database is the source
of truth; every write here is idempotent so a redelivered message changes nothing."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from dissemination.alert import Alert, content_hash_of
from dissemination.database import Database
from dissemination.errors import ErrorDetail
from dissemination.tables import alert_references, alerts, payloads, quarantine, rejections


class AlertState(StrEnum):
    """Where an alert stands; `received` alerts go on to matching and delivery."""

    RECEIVED = "received"
    EXPIRED = "expired"
    DRAFT = "draft"


class RecordOutcome(StrEnum):
    """What recording an alert did."""

    STORED = "stored"
    DUPLICATE = "duplicate"
    CONFLICT = "conflict"


@dataclass(frozen=True, slots=True)
class Payload:
    """A message body exactly as received."""

    body: bytes
    content_type: str

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.body).hexdigest()


@dataclass(frozen=True, slots=True)
class AlertMessage:
    """The alerts decoded from one inbound message, each with the state it is stored in."""

    payload: Payload
    alerts: tuple[tuple[Alert, AlertState], ...]
    received_at: datetime


class Ledger:
    """Reads and writes of the alert ledger."""

    def __init__(self, database: Database) -> None:
        self.database = database

    async def record_alert(
        self, alert: Alert, payload: Payload, state: AlertState, now: datetime
    ) -> RecordOutcome:
        """Store `alert` once. Same key and same content again: DUPLICATE. Same key with other
        content: the newcomer is quarantined (CONFLICT) and the original stays."""
        async with self.database.transaction() as conn:
            return await self._record_in(conn, alert, payload, state, now)

    async def record_messages(self, messages: Sequence[AlertMessage]) -> list[list[RecordOutcome]]:
        """Record the alerts of several messages in one transaction (one commit for all)."""
        async with self.database.transaction() as conn:
            return [
                [
                    await self._record_in(conn, alert, message.payload, state, message.received_at)
                    for alert, state in message.alerts
                ]
                for message in messages
            ]

    async def _record_in(
        self,
        conn: AsyncConnection,
        alert: Alert,
        payload: Payload,
        state: AlertState,
        now: datetime,
    ) -> RecordOutcome:
        document = alert.to_json()
        content_hash = content_hash_of(document)
        await self._store_payload(conn, payload, now)
        inserted = await conn.execute(
            self.database.insert_ignoring_conflicts(alerts).values(
                id=alert.id,
                sender=alert.sender,
                identifier=alert.identifier,
                sent=alert.sent_text,
                sent_at=alert.sent,
                kind=alert.kind.value,
                status=alert.status.value,
                msg_type=alert.msg_type.value,
                scope=alert.scope,
                tlp=alert.handling.tlp.value,
                caveats=list(alert.handling.caveats),
                state=state.value,
                content_hash=content_hash,
                expires_at=alert.expires,
                headline=alert.headline,
                source_format=alert.source_format,
                document=document,
                payload_sha256=payload.sha256,
                received_at=now,
            )
        )
        if inserted.rowcount == 1:
            await self._link_references(conn, alert)
            return RecordOutcome.STORED
        existing = await conn.scalar(select(alerts.c.content_hash).where(alerts.c.id == alert.id))
        if existing == content_hash:
            return RecordOutcome.DUPLICATE
        await conn.execute(
            quarantine.insert().values(
                received_at=now,
                alert_id=alert.id,
                reason="conflicting_duplicate",
                content_hash=content_hash,
                document=document,
                payload_sha256=payload.sha256,
            )
        )
        return RecordOutcome.CONFLICT

    async def _store_payload(self, conn: AsyncConnection, payload: Payload, now: datetime) -> None:
        await conn.execute(
            self.database.insert_ignoring_conflicts(payloads).values(
                sha256=payload.sha256,
                content_type=payload.content_type,
                body=payload.body,
                received_at=now,
            )
        )

    async def _link_references(self, conn: AsyncConnection, alert: Alert) -> None:
        if not alert.references:
            return
        wanted = [ref.alert_id for ref in alert.references]
        known = set((await conn.scalars(select(alerts.c.id).where(alerts.c.id.in_(wanted)))).all())
        await conn.execute(
            alert_references.insert(),
            [
                {
                    "alert_id": alert.id,
                    "position": position,
                    "ref_sender": ref.sender,
                    "ref_identifier": ref.identifier,
                    "ref_sent": ref.sent,
                    "ref_alert_id": ref.alert_id,
                    "resolved": int(ref.alert_id in known),
                }
                for position, ref in enumerate(alert.references)
            ],
        )

    async def record_rejection(
        self,
        *,
        source: str,
        reason: str,
        errors: list[ErrorDetail] | tuple[ErrorDetail, ...],
        payload: Payload,
        message_id: str | None,
        now: datetime,
    ) -> int:
        """Keep a refused input and why; returns the rejection's id."""
        async with self.database.transaction() as conn:
            result = await conn.execute(
                rejections.insert().values(
                    received_at=now,
                    source=source,
                    message_id=message_id,
                    reason=reason,
                    errors=[e.as_dict() for e in errors],
                    content_type=payload.content_type,
                    body=payload.body,
                )
            )
            return int(result.inserted_primary_key[0])  # type: ignore[index]

    async def alert_row(self, alert_id: str) -> dict[str, Any] | None:
        async with self.database.reading() as conn:
            row = (
                (await conn.execute(select(alerts).where(alerts.c.id == alert_id)))
                .mappings()
                .first()
            )
            return dict(row) if row else None

    async def references_of(self, alert_id: str) -> list[dict[str, Any]]:
        async with self.database.reading() as conn:
            result = await conn.execute(
                select(alert_references)
                .where(alert_references.c.alert_id == alert_id)
                .order_by(alert_references.c.position)
            )
            return [dict(r) for r in result.mappings()]

    async def counts(self) -> dict[str, int]:
        """Row counts of alerts, rejections and quarantine (for readiness and tests)."""
        async with self.database.reading() as conn:
            return {
                table.name: int(await conn.scalar(select(func.count()).select_from(table)) or 0)
                for table in (alerts, rejections, quarantine)
            }
