"""A follow-up: the alert sent again, now, to each recipient who owes an acknowledgment and
has not made it, on the channels and addresses it already reached them on (as an escalation's
`resend` step does, but at a person's request and for every laggard at once). Their
acknowledgment links stay the same, so acknowledging either message settles the one debt.

The rows and an audit entry are written in one transaction; the caller publishes the rows.
Each follow-up of an alert is numbered, so a second one writes new rows rather than none."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select

from dissemination.acks.escalation import step_row_id
from dissemination.store.audit import Actor, write_audit
from dissemination.store.database import Database
from dissemination.store.rows import (
    ALERT_ORIGINS,
    REACHED_STATES,
    DeliveryState,
    PlannedRow,
    RowOrigin,
    insert_planned,
    pending_by_channel,
)
from dissemination.store.tables import acks, audit_log, deliveries
from dissemination.store.urgency import alert_is_urgent

FOLLOW_UP = "follow_up"


@dataclass(frozen=True, slots=True)
class FollowUp:
    """What a follow-up wrote: how many people it is for, its pending rows by channel, and
    whether they are an urgent alert's (`Alert.urgent`: to go ahead of others queued)."""

    recipients: int
    rows: dict[str, list[str]]
    urgent: bool = False


async def follow_up(database: Database, alert_id: str, actor: Actor, now: datetime) -> FollowUp:
    """Send the alert again to everyone who has not acknowledged it (see the module)."""
    async with database.transaction() as conn:
        laggards = set(
            await conn.scalars(
                select(acks.c.stakeholder_id).where(
                    acks.c.alert_id == alert_id, acks.c.acknowledged_at.is_(None)
                )
            )
        )
        earlier = (
            (
                await conn.execute(
                    select(deliveries)
                    .where(
                        deliveries.c.alert_id == alert_id,
                        deliveries.c.state.in_(REACHED_STATES),
                        deliveries.c.origin.in_([o.value for o in ALERT_ORIGINS]),
                    )
                    .order_by(deliveries.c.created_at, deliveries.c.id)
                )
            )
            .mappings()
            .all()
        )
        done = await conn.scalar(
            select(func.count()).where(
                audit_log.c.entity == "alert",
                audit_log.c.entity_id == alert_id,
                audit_log.c.action == FOLLOW_UP,
            )
        )
        tag = f"follow-up:{int(done or 0) + 1}"
        values, seen = [], set()
        for row in earlier:
            key = (row["stakeholder_id"], row["channel"], row["address"])
            if row["stakeholder_id"] not in laggards or key in seen:
                continue
            seen.add(key)
            planned = PlannedRow(
                stakeholder_id=row["stakeholder_id"],
                subscription_id=row["subscription_id"],
                contact_id=row["contact_id"],
                channel=row["channel"],
                address=row["address"],
                state=DeliveryState.PENDING,
                ack_required=True,
                subscriptions=tuple(row["subscriptions"] or ()),
                origin=RowOrigin.ESCALATION,
                row_id=step_row_id(alert_id, *key, tag),
            )
            values.append(planned.values(alert_id, now))
        recipients = len({value["stakeholder_id"] for value in values})
        urgent = bool(values) and await alert_is_urgent(conn, alert_id)
        if values:
            await insert_planned(conn, database, values)
            await write_audit(
                conn,
                at=now,
                actor=actor,
                action=FOLLOW_UP,
                entity="alert",
                entity_id=alert_id,
                before=None,
                after={"recipients": recipients, "rows": len(values), "tag": tag},
            )
    return FollowUp(recipients, pending_by_channel(values), urgent)
