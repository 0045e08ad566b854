"""Acknowledgment tracking in the ledger.

When an alert's delivery rows are written, every stakeholder who must acknowledge it gets one
`acks` row: a random token id (signed into links and webhook bodies by `AckSigner`), a short
code for SMS replies that is unique among that stakeholder's live codes, and an expiry (the
alert's, or the default lifetime). Acknowledging by any channel fills the same row once; a
repeat changes nothing and says when it was first done.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import and_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from dissemination.acks.escalation import EscalationState, end_escalations
from dissemination.acks.tokens import new_token_id
from dissemination.metrics import Metrics
from dissemination.store.audit import Actor, write_audit
from dissemination.store.database import Database
from dissemination.store.rows import OWING_STATES, DeliveryState, suppress_escalation_sends
from dissemination.store.tables import acks, alerts, deliveries, stakeholders

CODE_DIGITS = 4
DEFAULT_LIFETIME = timedelta(days=7)
_LOOKUP_CHUNK = 500
ACKED_DELIVERY_STATES = (DeliveryState.SENT.value, DeliveryState.DELIVERED.value)


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


def _new_code(taken: set[str]) -> str:
    digits = CODE_DIGITS if len(taken) < 10**CODE_DIGITS // 2 else CODE_DIGITS + 2
    while True:
        code = f"{secrets.randbelow(10**digits):0{digits}d}"
        if code not in taken:
            taken.add(code)
            return code


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
        owing = sorted(
            {
                row["stakeholder_id"]
                for row in rows
                if row["ack_required"] and row["state"] in OWING_STATES
            }
        )
        if not owing:
            return
        taken: dict[str, set[str]] = {stakeholder: set() for stakeholder in owing}
        for start in range(0, len(owing), _LOOKUP_CHUNK):
            live = await conn.execute(
                select(acks.c.stakeholder_id, acks.c.code).where(
                    acks.c.stakeholder_id.in_(owing[start : start + _LOOKUP_CHUNK]),
                    acks.c.expires_at > now,
                )
            )
            for stakeholder_id, code in live:
                taken[stakeholder_id].add(code)
        expires_at = expires or now + self.default_lifetime
        await conn.execute(
            database.insert_ignoring_conflicts(acks),
            [
                {
                    "alert_id": alert_id,
                    "stakeholder_id": stakeholder,
                    "token_id": new_token_id(),
                    "code": _new_code(taken[stakeholder]),
                    "expires_at": expires_at,
                    "created_at": now,
                }
                for stakeholder in owing
            ],
        )


class AckStore:
    """Finds what a token or an SMS reply acknowledges, and records acknowledgments."""

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

    @staticmethod
    async def for_sms_reply(
        conn: AsyncConnection, number: str, code: str | None, now: datetime
    ) -> tuple[dict[str, Any] | None, bool]:
        """The open acknowledgment an SMS reply from `number` refers to: with a code, the one
        with that code among alerts texted to this number; without, the newest unacknowledged
        one texted to it. The flag says whether the code belongs to someone else's alert."""
        query = (
            select(acks, alerts.c.headline)
            .join(alerts, alerts.c.id == acks.c.alert_id)
            .join(
                deliveries,
                and_(
                    deliveries.c.alert_id == acks.c.alert_id,
                    deliveries.c.stakeholder_id == acks.c.stakeholder_id,
                ),
            )
            .where(
                deliveries.c.channel == "sms",
                deliveries.c.address == number,
                deliveries.c.state.in_(ACKED_DELIVERY_STATES),
                acks.c.expires_at > now,
            )
            .order_by(deliveries.c.updated_at.desc())
            .limit(1)
        )
        if code is None:
            query = query.where(acks.c.acknowledged_at.is_(None))
        else:
            query = query.where(acks.c.code == code)
        row = (await conn.execute(query)).mappings().first()
        if row is not None or code is None:
            return (dict(row) if row else None), False
        elsewhere = await conn.scalar(
            select(acks.c.alert_id).where(acks.c.code == code, acks.c.expires_at > now).limit(1)
        )
        return None, elsewhere is not None

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
        """An acknowledgment ends the escalation, and escalation sends not yet made."""
        await end_escalations(
            conn,
            EscalationState.ACKNOWLEDGED,
            now,
            alert_ids=[alert_id],
            stakeholder_id=stakeholder_id,
        )
        await suppress_escalation_sends(conn, alert_id, stakeholder_id, now)

    @staticmethod
    async def audit_foreign_code(
        conn: AsyncConnection, number: str, code: str, now: datetime
    ) -> None:
        """An SMS reply quoted a code issued for another number: nothing is acknowledged, and
        the attempt is kept in the audit log."""
        await write_audit(
            conn,
            at=now,
            actor=Actor(None, "sms reply"),
            action="ack_refused",
            entity="ack",
            entity_id=None,
            before=None,
            after={"from": number, "code": code},
            reason="the code belongs to an alert sent to another number",
        )
