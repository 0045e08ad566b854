"""Imminent-danger releases (28 CFR 23.20(e)(2)): an administrator may send an alert to a
stakeholder outside the normal rules (not subscribed, or not cleared for its marks) only with
a typed justification. The release writes one `imminent_danger` delivery row per chosen
contact, exempt from the clearance check at send time (the stakeholder must still be
active), and a `special_releases` entry flagged for review until another administrator
reviews it. The dissemination record's justification of each send quotes the typed text.
PII redaction still follows the recipient's entitlement.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Row, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from dissemination.controls.approval import ApprovalState, principal
from dissemination.errors import ControlRefused
from dissemination.store.audit import Actor, write_audit
from dissemination.store.database import Database
from dissemination.store.rows import (
    ClaimedRow,
    DeliveryState,
    PlannedRow,
    RowOrigin,
    insert_planned,
    pending_by_channel,
)
from dissemination.store.tables import (
    alerts,
    approvals,
    contacts,
    special_releases,
    stakeholders,
)

BASIS = "imminent-danger release (28 CFR 23.20(e)(2)) outside the normal rules"
RELEASE_NAMESPACE = uuid.UUID("8e4d3c52-71b9-5f0a-bb1e-6a2f90d4c7e3")
JUSTIFICATION_LENGTH = (20, 2000)


@dataclass(frozen=True, slots=True)
class Release:
    """A release made: its id and its delivery rows by channel."""

    id: str
    deliveries: dict[str, list[str]]


def release_row_id(release_id: str, contact_id: str) -> str:
    """A release's row id: distinct from the rows the rules made for the same contact."""
    return str(uuid.uuid5(RELEASE_NAMESPACE, f"{release_id}|{contact_id}"))


def justification_text(row: ClaimedRow) -> str:
    """The dissemination record's justification for a send of a release row."""
    return f"{BASIS}: {row.detail or ''}"


async def release(
    database: Database,
    alert_id: str,
    stakeholder_id: str,
    channels: Sequence[str] | None,
    justification: str,
    actor: Actor,
    now: datetime,
) -> Release:
    """Write the release's rows and its review entry; ControlRefused (404, 409, 422) when
    the alert or stakeholder is missing, the alert cannot be sent, or no contact is usable."""
    release_id = str(uuid.uuid4())
    async with database.transaction() as conn:
        await _check_releasable(conn, alert_id)
        chosen = await _usable_contacts(conn, stakeholder_id, channels)
        detail = f"{justification} (released by {actor.name}, release {release_id})"
        rows = [
            PlannedRow(
                stakeholder_id=stakeholder_id,
                subscription_id=None,
                contact_id=contact.id,
                channel=contact.channel,
                address=contact.address,
                state=DeliveryState.PENDING,
                detail=detail,
                origin=RowOrigin.IMMINENT_DANGER,
                row_id=release_row_id(release_id, contact.id),
            ).values(alert_id, now)
            for contact in chosen
        ]
        await insert_planned(conn, database, rows)
        await conn.execute(
            special_releases.insert().values(
                id=release_id,
                alert_id=alert_id,
                stakeholder_id=stakeholder_id,
                justification=justification,
                released_by=principal(actor),
                released_by_name=actor.name,
                released_at=now,
                deliveries=[row["id"] for row in rows],
            )
        )
        await write_audit(
            conn,
            at=now,
            actor=actor,
            action="imminent_danger_release",
            entity="alert",
            entity_id=alert_id,
            before=None,
            after={"release": release_id, "stakeholder": stakeholder_id, "rows": len(rows)},
            reason=justification,
        )
    return Release(release_id, pending_by_channel(rows))


async def _check_releasable(conn: AsyncConnection, alert_id: str) -> None:
    """The alert exists, is neither a draft nor purged, and is not waiting for (or refused)
    approval: a release must not go around the two-person rule."""
    alert = (
        await conn.execute(
            select(alerts.c.id, alerts.c.status, alerts.c.purged_at).where(alerts.c.id == alert_id)
        )
    ).first()
    if alert is None:
        raise ControlRefused(404, "not_found", f"no alert {alert_id!r}")
    if alert.purged_at is not None or alert.status == "Draft":
        raise ControlRefused(409, "not_releasable", "the alert is a draft or was purged")
    approval = await conn.scalar(select(approvals.c.state).where(approvals.c.alert_id == alert_id))
    if approval in (ApprovalState.HELD.value, ApprovalState.REJECTED.value):
        raise ControlRefused(
            409, "not_releasable", f"the alert is {approval}: decide its approval first"
        )


async def _usable_contacts(
    conn: AsyncConnection, stakeholder_id: str, channels: Sequence[str] | None
) -> list[Row[Any, Any, Any]]:
    """The active stakeholder's active contacts on `channels` (all when None)."""
    active = await conn.scalar(
        select(stakeholders.c.active).where(stakeholders.c.id == stakeholder_id)
    )
    if active is None:
        raise ControlRefused(404, "not_found", f"no stakeholder {stakeholder_id!r}")
    if not active:
        raise ControlRefused(409, "stakeholder_inactive", "the stakeholder is inactive")
    query = select(contacts.c.id, contacts.c.channel, contacts.c.address).where(
        contacts.c.stakeholder_id == stakeholder_id, contacts.c.active.is_(True)
    )
    if channels:
        query = query.where(contacts.c.channel.in_(channels))
    chosen = list((await conn.execute(query.order_by(contacts.c.id))).all())
    if not chosen:
        raise ControlRefused(
            422, "no_contact", "the stakeholder has no active contact on those channels"
        )
    return chosen


async def review(
    database: Database, release_id: str, note: str, actor: Actor, now: datetime
) -> None:
    """Mark a release reviewed; ControlRefused when unknown (404), reviewed already (409),
    or reviewed by the administrator who made it (403)."""
    async with database.transaction() as conn:
        made_by = await conn.scalar(
            select(special_releases.c.released_by).where(special_releases.c.id == release_id)
        )
        if made_by is None:
            raise ControlRefused(404, "not_found", f"no release {release_id!r}")
        if made_by == principal(actor):
            raise ControlRefused(
                403, "same_administrator", "a release is reviewed by another administrator"
            )
        reviewed = await conn.execute(
            update(special_releases)
            .where(special_releases.c.id == release_id, special_releases.c.reviewed_at.is_(None))
            .values(reviewed_by=actor.name, reviewed_at=now, review_note=note)
        )
        if reviewed.rowcount != 1:
            raise ControlRefused(409, "already_reviewed", "the release was reviewed already")
        await write_audit(
            conn,
            at=now,
            actor=actor,
            action="review_release",
            entity="special_release",
            entity_id=release_id,
            before=None,
            after={"reviewed": True},
            reason=note,
        )


async def listing(database: Database, reviewed: bool | None, limit: int) -> list[dict[str, Any]]:
    """Releases, newest first: all, only those awaiting review, or only reviewed ones."""
    query = select(special_releases).order_by(special_releases.c.released_at.desc()).limit(limit)
    if reviewed is not None:
        column = special_releases.c.reviewed_at
        query = query.where(column.is_not(None) if reviewed else column.is_(None))
    async with database.reading() as conn:
        return [
            {
                "id": row.id,
                "alertId": row.alert_id,
                "stakeholderId": row.stakeholder_id,
                "justification": row.justification,
                "releasedBy": row.released_by_name,
                "releasedAt": row.released_at.isoformat(),
                "deliveries": list(row.deliveries),
                "flaggedForReview": row.reviewed_at is None,
                "reviewedBy": row.reviewed_by,
                "reviewedAt": row.reviewed_at.isoformat() if row.reviewed_at else None,
                "reviewNote": row.review_note,
            }
            for row in (await conn.execute(query))
        ]
