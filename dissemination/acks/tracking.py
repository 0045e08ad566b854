"""Acknowledgment tracking in the ledger.

When an alert's delivery rows are written, every stakeholder who must acknowledge it gets one
`acks` row: a random token id (signed into links and webhook bodies by `AckSigner`), a short
code for SMS replies, and an expiry (the alert's, or the default lifetime). Acknowledging by
any channel fills the same row once; a repeat changes nothing and says when it was first done.

The SMS codes, and which acknowledgment an SMS reply refers to, are `acks.smscodes`'s.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import and_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from dissemination.acks.escalation import EscalationState, end_escalations
from dissemination.acks.smscodes import codes_for
from dissemination.acks.tokens import new_token_id
from dissemination.metrics import Metrics
from dissemination.store.audit import Actor, write_audit
from dissemination.store.database import Database
from dissemination.store.rows import OWING_STATES, suppress_escalation_sends
from dissemination.store.tables import acks, alerts, stakeholders

DEFAULT_LIFETIME = timedelta(days=7)


class AckChannel(StrEnum):
    """How an acknowledgment arrived."""

    LINK = "link"
    SMS = "sms"
    WEBHOOK = "webhook"
    ADMIN = "admin"


@dataclass(frozen=True, slots=True)
class AckOutcome:
    """The acknowledgment as recorded; `new` is False when it had been recorded before."""

    alert_id: str
    stakeholder_id: str
    acknowledged_at: datetime
    channel: str
    comment: str | None
    new: bool

    def as_json(self) -> dict[str, Any]:
        return {
            "alertId": self.alert_id,
            "stakeholderId": self.stakeholder_id,
            "acknowledgedAt": self.acknowledged_at.isoformat(),
            "channel": self.channel,
            "comment": self.comment,
            "alreadyAcknowledged": not self.new,
        }


class AckIssuer:
    """Creates the `acks` rows of a newly planned alert, inside the ledger's transaction."""

    def __init__(self, default_lifetime: timedelta = DEFAULT_LIFETIME) -> None:
        self.default_lifetime = default_lifetime

    async def issue(
        self,
        conn: AsyncConnection,
        database: Database,
        alert_id: str,
        expires: datetime | None,
        rows: Iterable[Mapping[str, Any]],
        now: datetime,
    ) -> None:
        planned = list(rows)
        owing = sorted(
            {
                row["stakeholder_id"]
                for row in planned
                if row["ack_required"] and row["state"] in OWING_STATES
            }
        )
        if not owing:
            return
        issued = await codes_for(conn, owing, planned, now)
        expires_at = expires or now + self.default_lifetime
        await conn.execute(
            database.insert_ignoring_conflicts(acks),
            [
                {
                    "alert_id": alert_id,
                    "stakeholder_id": stakeholder,
                    "token_id": new_token_id(),
                    "code": issued[stakeholder],
                    "expires_at": expires_at,
                    "created_at": now,
                }
                for stakeholder in owing
            ],
        )


class AckStore:
    """Finds what a token acknowledges, and records acknowledgments."""

    def __init__(self, database: Database, metrics: Metrics | None = None) -> None:
        self.database = database
        self.metrics = metrics or Metrics()

    async def by_token(self, token_id: str) -> dict[str, Any] | None:
        """The `acks` row a token names, with its alert's headline, marks and document."""
        query = (
            select(acks, alerts.c.document, alerts.c.tlp, alerts.c.caveats)
            .join(alerts, alerts.c.id == acks.c.alert_id)
            .where(acks.c.token_id == token_id)
        )
        async with self.database.reading() as conn:
            row = (await conn.execute(query)).mappings().first()
        return dict(row) if row else None

    async def pair(self, alert_id: str, stakeholder_id: str) -> dict[str, Any] | None:
        async with self.database.reading() as conn:
            row = (
                (
                    await conn.execute(
                        select(acks).where(
                            acks.c.alert_id == alert_id, acks.c.stakeholder_id == stakeholder_id
                        )
                    )
                )
                .mappings()
                .first()
            )
        return dict(row) if row else None

    async def acknowledge(
        self,
        alert_id: str,
        stakeholder_id: str,
        channel: AckChannel,
        now: datetime,
        *,
        comment: str | None = None,
        on_behalf: tuple[Actor, str] | None = None,
    ) -> AckOutcome | None:
        """Record the acknowledgment once; None if no acknowledgment is owed for this pair.
        `on_behalf` (the administrator and the reason) is audited with the change."""
        async with self.database.transaction() as conn:
            return await self.acknowledge_in(
                conn,
                alert_id,
                stakeholder_id,
                channel,
                now,
                comment=comment,
                on_behalf=on_behalf,
            )

    async def acknowledge_in(
        self,
        conn: AsyncConnection,
        alert_id: str,
        stakeholder_id: str,
        channel: AckChannel,
        now: datetime,
        *,
        comment: str | None = None,
        on_behalf: tuple[Actor, str] | None = None,
    ) -> AckOutcome | None:
        """`acknowledge` inside the caller's transaction."""
        pair = and_(acks.c.alert_id == alert_id, acks.c.stakeholder_id == stakeholder_id)
        actor_id, actor_name = await self._acknowledger(conn, stakeholder_id, on_behalf)
        recorded = await conn.execute(
            update(acks)
            .where(pair, acks.c.acknowledged_at.is_(None))
            .values(
                acknowledged_at=now,
                channel=channel.value,
                actor_id=actor_id,
                actor_name=actor_name or "(removed stakeholder)",
                comment=comment or None,
                reason=on_behalf[1] if on_behalf else None,
            )
        )
        row = (await conn.execute(select(acks).where(pair))).mappings().first()
        if row is None:
            return None
        new = recorded.rowcount == 1
        if new:
            await self._stop_escalation(conn, alert_id, stakeholder_id, now)
            self.metrics.acknowledged(channel.value)
        if new and on_behalf is not None:
            await write_audit(
                conn,
                at=now,
                actor=on_behalf[0],
                action="acknowledge",
                entity="ack",
                entity_id=alert_id,
                before=None,
                after={"alertId": alert_id, "stakeholderId": stakeholder_id},
                reason=on_behalf[1],
            )
        return AckOutcome(
            alert_id,
            stakeholder_id,
            row["acknowledged_at"],
            row["channel"],
            row["comment"],
            new,
        )

    @staticmethod
    async def _acknowledger(
        conn: AsyncConnection, stakeholder_id: str, on_behalf: tuple[Actor, str] | None
    ) -> tuple[str | None, str | None]:
        """Who acknowledges: the administrator acting on behalf, or the stakeholder."""
        if on_behalf is not None:
            return on_behalf[0].id, on_behalf[0].name
        name = await conn.scalar(
            select(stakeholders.c.name).where(stakeholders.c.id == stakeholder_id)
        )
        return stakeholder_id, name

    @staticmethod
    async def _stop_escalation(
        conn: AsyncConnection, alert_id: str, stakeholder_id: str, now: datetime
    ) -> None:
        """An acknowledgment ends the escalation, and escalation sends not yet made: resends
        to the stakeholder and supervisors' notices about them. In this order: on PostgreSQL,
        ending the escalation waits for an engine firing its step at this moment, so that
        the notices that step writes are there to be suppressed."""
        await end_escalations(
            conn,
            EscalationState.ACKNOWLEDGED,
            now,
            alert_ids=[alert_id],
            stakeholder_id=stakeholder_id,
        )
        await suppress_escalation_sends(conn, alert_id, stakeholder_id, now)
