"""Dissemination progress read from the ledger: alerts filtered by status, kind and time; one
alert's delivery counts by state, time to first delivery, acknowledgment rate over time and
who has not acknowledged; its delivery rows; and which alerts changed since a moment (the feed
behind the live progress stream).

Supervisor notices (escalation) are deliveries about an alert, not of it: they are listed
with the alert's rows but not counted as its targets.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, func, or_, select
from sqlalchemy.sql import Select

from core.alert import Handling, Tlp
from dissemination.store.database import Database
from dissemination.store.rows import DeliveryState, RowOrigin
from dissemination.store.tables import acks, alerts, deliveries, escalations, stakeholders

REACHED = (DeliveryState.SENT.value, DeliveryState.DELIVERED.value)
COUNTED_STATES = tuple(state.value for state in DeliveryState)
MAX_SERIES_POINTS = 120
MAX_LISTED_LAGGARDS = 1000
MAX_IDS_PER_QUERY = 500
ALERT_COLUMNS = (
    alerts.c.id,
    alerts.c.sender,
    alerts.c.identifier,
    alerts.c.sent,
    alerts.c.kind,
    alerts.c.status,
    alerts.c.msg_type,
    alerts.c.tlp,
    alerts.c.caveats,
    alerts.c.handling_conflict,
    alerts.c.headline,
    alerts.c.state,
    alerts.c.received_at,
    alerts.c.expires_at,
)


@dataclass(frozen=True, slots=True)
class AlertFilter:
    """What `GET /api/v1/alerts` narrows by; None means any."""

    status: str | None = None
    kind: str | None = None
    state: str | None = None
    since: datetime | None = None
    until: datetime | None = None


def _handling(row: Any) -> dict[str, Any]:
    """The alert's effective marks, and the differing TLP marks it carried, if any."""
    handling: dict[str, Any] = {"tlp": row.tlp, "caveats": list(row.caveats or ())}
    if row.handling_conflict:
        handling["conflict"] = list(row.handling_conflict)
    return handling


def handling_of(tlp: str, caveats: Iterable[str] | None) -> Handling:
    """Stored marks as the handling check takes them."""
    return Handling(Tlp.parse(tlp), tuple(caveats or ()))


def alert_summary(row: Any) -> dict[str, Any]:
    return {
        "id": row.id,
        "sender": row.sender,
        "identifier": row.identifier,
        "sent": row.sent,
        "kind": row.kind,
        "status": row.status,
        "msgType": row.msg_type,
        "handling": _handling(row),
        "headline": row.headline,
        "state": row.state,
        "receivedAt": row.received_at.isoformat(),
        "expiresAt": row.expires_at.isoformat() if row.expires_at else None,
    }


def _of_alert(alert_id: str) -> Any:
    return and_(deliveries.c.alert_id == alert_id, deliveries.c.origin != RowOrigin.NOTICE.value)


def ack_series(
    start: datetime | None, acknowledged: list[datetime], required: int
) -> list[dict[str, Any]]:
    """Cumulative acknowledgments over time from `start`, in at most MAX_SERIES_POINTS equal
    buckets of whole minutes; each point is the end of its bucket."""
    if start is None or not acknowledged or required == 0:
        return []
    acknowledged = sorted(acknowledged)
    span_minutes = max(1, math.ceil((acknowledged[-1] - start).total_seconds() / 60))
    bucket = timedelta(minutes=math.ceil(span_minutes / MAX_SERIES_POINTS))
    points, count, edge = [], 0, start + bucket
    for moment in acknowledged:
        while moment > edge:
            points.append((edge, count))
            edge += bucket
        count += 1
    points.append((edge, count))
    return [
        {"at": at.isoformat(), "acknowledged": n, "rate": round(n / required, 4)}
        for at, n in points
    ]


class ProgressStore:
    """Read-only queries for the progress API."""

    def __init__(self, database: Database) -> None:
        self.database = database

    async def alerts(
        self, where: AlertFilter, limit: int, after: tuple[datetime, str] | None
    ) -> list[dict[str, Any]]:
        """Newest first (by time received), `limit` of them after the cursor."""
        query: Select[Any] = select(*ALERT_COLUMNS)
        for column, value in (
            (alerts.c.status, where.status),
            (alerts.c.kind, where.kind),
            (alerts.c.state, where.state),
        ):
            if value is not None:
                query = query.where(column == value)
        if where.since is not None:
            query = query.where(alerts.c.received_at >= where.since)
        if where.until is not None:
            query = query.where(alerts.c.received_at < where.until)
        if after is not None:
            at, alert_id = after
            query = query.where(
                or_(
                    alerts.c.received_at < at,
                    and_(alerts.c.received_at == at, alerts.c.id < alert_id),
                )
            )
        query = query.order_by(alerts.c.received_at.desc(), alerts.c.id.desc()).limit(limit)
        async with self.database.reading() as conn:
            return [alert_summary(row) for row in await conn.execute(query)]

    async def counts(self, alert_id: str) -> dict[str, int]:
        """Delivery rows by state, targeted in all, and acknowledgments owed and made."""
        async with self.database.reading() as conn:
            by_state = Counter(
                {
                    state: int(n)
                    for state, n in await conn.execute(
                        select(deliveries.c.state, func.count())
                        .where(_of_alert(alert_id))
                        .group_by(deliveries.c.state)
                    )
                }
            )
            required, acknowledged = (
                await conn.execute(
                    select(func.count(), func.count(acks.c.acknowledged_at)).where(
                        acks.c.alert_id == alert_id
                    )
                )
            ).one()
        counts = {state: by_state.get(state, 0) for state in COUNTED_STATES}
        counts["targeted"] = sum(by_state.values())
        counts["ackRequired"] = int(required)
        counts["acknowledged"] = int(acknowledged)
        return counts

    async def report(self, alert_id: str) -> dict[str, Any] | None:
        """The alert's progress report; None if there is no such alert."""
        async with self.database.reading() as conn:
            row = (
                await conn.execute(select(*ALERT_COLUMNS).where(alerts.c.id == alert_id))
            ).first()
            if row is None:
                return None
            first = await conn.scalar(
                select(func.min(deliveries.c.updated_at)).where(
                    _of_alert(alert_id), deliveries.c.state.in_(REACHED)
                )
            )
            acknowledged = list(
                await conn.scalars(
                    select(acks.c.acknowledged_at).where(
                        acks.c.alert_id == alert_id, acks.c.acknowledged_at.is_not(None)
                    )
                )
            )
            laggards = [
                {"stakeholderId": r.stakeholder_id, "name": r.name, "organization": r.organization}
                for r in await conn.execute(
                    select(acks.c.stakeholder_id, stakeholders.c.name, stakeholders.c.organization)
                    .outerjoin(stakeholders, stakeholders.c.id == acks.c.stakeholder_id)
                    .where(acks.c.alert_id == alert_id, acks.c.acknowledged_at.is_(None))
                    .order_by(stakeholders.c.name, acks.c.stakeholder_id)
                    .limit(MAX_LISTED_LAGGARDS)
                )
            ]
            escalated = {
                state: int(n)
                for state, n in await conn.execute(
                    select(escalations.c.state, func.count())
                    .where(escalations.c.alert_id == alert_id)
                    .group_by(escalations.c.state)
                )
            }
        counts = await self.counts(alert_id)
        return {
            "alert": alert_summary(row),
            "counts": counts,
            "firstDeliveryAt": first.isoformat() if first else None,
            "timeToFirstDeliverySeconds": (
                round((first - row.received_at).total_seconds(), 3) if first else None
            ),
            "ackRate": ack_series(first, acknowledged, counts["ackRequired"]),
            "notAcknowledged": laggards,
            "notAcknowledgedCount": counts["ackRequired"] - counts["acknowledged"],
            "escalations": escalated,
        }

    async def deliveries(self, alert_id: str) -> list[dict[str, Any]]:
        """Every delivery row of the alert, with whom it was for and their acknowledgment."""
        query = (
            select(
                deliveries,
                stakeholders.c.name.label("stakeholder_name"),
                stakeholders.c.organization,
                acks.c.acknowledged_at,
                acks.c.channel.label("ack_channel"),
            )
            .select_from(
                deliveries.outerjoin(
                    stakeholders, stakeholders.c.id == deliveries.c.stakeholder_id
                ).outerjoin(
                    acks,
                    and_(
                        acks.c.alert_id == deliveries.c.alert_id,
                        acks.c.stakeholder_id == deliveries.c.stakeholder_id,
                    ),
                )
            )
            .where(deliveries.c.alert_id == alert_id)
            .order_by(deliveries.c.created_at, deliveries.c.id)
        )
        async with self.database.reading() as conn:
            return [_delivery(row) for row in (await conn.execute(query)).mappings()]

    async def handlings(self, alert_ids: Iterable[str]) -> dict[str, Handling]:
        """The handling marks of those alerts that exist, by id."""
        wanted = sorted(set(alert_ids))
        found: dict[str, Handling] = {}
        async with self.database.reading() as conn:
            for start in range(0, len(wanted), MAX_IDS_PER_QUERY):
                chunk = wanted[start : start + MAX_IDS_PER_QUERY]
                query = select(alerts.c.id, alerts.c.tlp, alerts.c.caveats).where(
                    alerts.c.id.in_(chunk)
                )
                for row in await conn.execute(query):
                    found[row.id] = handling_of(row.tlp, row.caveats)
        return found

    async def changed_since(self, moment: datetime) -> list[str]:
        """Alerts whose delivery rows or acknowledgments changed after `moment`."""
        async with self.database.reading() as conn:
            changed = set(
                await conn.scalars(
                    select(deliveries.c.alert_id).where(deliveries.c.updated_at > moment).distinct()
                )
            )
            changed |= set(
                await conn.scalars(
                    select(acks.c.alert_id).where(acks.c.acknowledged_at > moment).distinct()
                )
            )
        return sorted(changed)


DELIVERY_FIELDS = (
    "id",
    "stakeholderId",
    "stakeholderName",
    "organization",
    "channel",
    "address",
    "state",
    "reason",
    "attempts",
    "origin",
    "resent",
    "createdAt",
    "updatedAt",
    "acknowledgedAt",
    "ackChannel",
)


def _delivery(row: Any) -> dict[str, Any]:
    def moment(value: datetime | None) -> str | None:
        return value.isoformat() if value else None

    return {
        "id": row["id"],
        "stakeholderId": row["stakeholder_id"],
        "stakeholderName": row["stakeholder_name"],
        "organization": row["organization"],
        "channel": row["channel"],
        "address": row["address"],
        "state": row["state"],
        "reason": row["reason"],
        "attempts": row["attempts"],
        "origin": row["origin"],
        "resent": bool(row["resent"]),
        "createdAt": moment(row["created_at"]),
        "updatedAt": moment(row["updated_at"]),
        "acknowledgedAt": moment(row["acknowledged_at"]),
        "ackChannel": row["ack_channel"],
    }
