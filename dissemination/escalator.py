"""The escalation engine: fires due steps of the timers kept in the ledger (see
`dissemination.escalation`), one compare-and-set transaction per step that also writes the
step's delivery rows, then publishes their tasks.

Steps: `resend` the alert on the channels it reached; `next_channel`, the first channel of
the subscription's preference not used yet where the stakeholder has an active contact;
`notify` supervisors ("X has not acknowledged ... after N minutes") on their own contacts.
Before firing, an acknowledgment, a Cancel of the alert or its expiry ends the escalation.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, exists, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from dissemination.alert import Handling, MsgType, Tlp
from dissemination.database import Database
from dissemination.dispatch import DeliveryDispatcher
from dissemination.escalation import EscalationState, end_escalations, step_row_id
from dissemination.intake import Clock
from dissemination.planning import DeliveryState, PlannedRow
from dissemination.tables import (
    acks,
    alert_references,
    alerts,
    contacts,
    deliveries,
    escalations,
    stakeholders,
)
from subscriptions.clearance import withheld_reason
from subscriptions.codec import stakeholder_model
from subscriptions.directory import STAKEHOLDER, record_of
from subscriptions.model import Channel

log = logging.getLogger(__name__)

DUE_BATCH = 200
REACHED = (DeliveryState.SENT.value, DeliveryState.DELIVERED.value)
ALERT_ORIGINS = ("match", "referenced", "fallback", "escalation")


class EscalationEngine:
    """Fires due escalation steps (`run_due`, called periodically by the service)."""

    def __init__(
        self,
        database: Database,
        dispatcher: DeliveryDispatcher,
        clock: Clock,
    ) -> None:
        self.database = database
        self.dispatcher = dispatcher
        self.clock = clock

    async def run_due(self) -> int:
        """Fire every step due by now; returns how many steps this instance fired."""
        fired = 0
        while True:
            now = self.clock()
            async with self.database.reading() as conn:
                due = list(
                    await conn.execute(
                        select(
                            escalations.c.alert_id,
                            escalations.c.stakeholder_id,
                            escalations.c.next_step,
                        )
                        .where(
                            escalations.c.state == EscalationState.ACTIVE.value,
                            escalations.c.next_at <= now,
                        )
                        .order_by(escalations.c.next_at)
                        .limit(DUE_BATCH)
                    )
                )
            for alert_id, stakeholder_id, step in due:
                pending = await self._fire(alert_id, stakeholder_id, step, now)
                if pending is not None:
                    fired += 1
                    await self.dispatcher.dispatch(pending)
            if len(due) < DUE_BATCH:
                return fired

    async def _fire(
        self, alert_id: str, stakeholder_id: str, step_index: int, now: datetime
    ) -> dict[str, list[str]] | None:
        """Fire one step, or end the escalation; the new pending rows by channel, or None if
        nothing was fired here (ended, or another instance got there first)."""
        pair = and_(
            escalations.c.alert_id == alert_id, escalations.c.stakeholder_id == stakeholder_id
        )
        async with self.database.transaction() as conn:
            row = (await conn.execute(select(escalations).where(pair))).mappings().first()
            if row is None or row["state"] != EscalationState.ACTIVE.value:
                return None
            if row["next_step"] != step_index:
                return None
            ended = await self._ended(conn, alert_id, stakeholder_id, now)
            if ended is not None:
                await end_escalations(
                    conn, ended, now, alert_ids=[alert_id], stakeholder_id=stakeholder_id
                )
                return None
            steps = row["steps"]
            following = step_index + 1
            advanced = await conn.execute(
                update(escalations)
                .where(
                    pair,
                    escalations.c.next_step == step_index,
                    escalations.c.state == EscalationState.ACTIVE.value,
                )
                .values(
                    next_step=following,
                    next_at=(
                        row["started_at"] + timedelta(seconds=steps[following]["afterSeconds"])
                        if following < len(steps)
                        else None
                    ),
                    state=(
                        EscalationState.ACTIVE if following < len(steps) else EscalationState.DONE
                    ).value,
                    updated_at=now,
                )
            )
            if advanced.rowcount != 1:
                return None
            step = steps[step_index]
            planned = await StepPlanner(conn, alert_id, stakeholder_id, step_index, step).rows()
            values = [value | {"created_at": now, "updated_at": now} for value in planned]
            if values:
                await conn.execute(self.database.insert_ignoring_conflicts(deliveries), values)
        log.info(
            "escalation step %d (%s) fired for alert %s, stakeholder %s: %d rows",
            following,
            step["action"],
            alert_id,
            stakeholder_id,
            len(values),
        )
        pending: dict[str, list[str]] = {}
        for value in values:
            pending.setdefault(value["channel"], []).append(value["id"])
        return pending

    @staticmethod
    async def _ended(
        conn: AsyncConnection, alert_id: str, stakeholder_id: str, now: datetime
    ) -> EscalationState | None:
        acknowledged = await conn.scalar(
            select(acks.c.acknowledged_at).where(
                acks.c.alert_id == alert_id, acks.c.stakeholder_id == stakeholder_id
            )
        )
        if acknowledged is not None:
            return EscalationState.ACKNOWLEDGED
        cancelled = await conn.scalar(
            select(
                exists().where(
                    alert_references.c.ref_alert_id == alert_id,
                    alert_references.c.alert_id == alerts.c.id,
                    alerts.c.msg_type == MsgType.CANCEL.value,
                )
            )
        )
        if cancelled:
            return EscalationState.CANCELLED
        expires_at = await conn.scalar(select(alerts.c.expires_at).where(alerts.c.id == alert_id))
        if expires_at is not None and expires_at <= now:
            return EscalationState.EXPIRED
        return None


class StepPlanner:
    """The delivery rows one step writes, read from the ledger inside the firing
    transaction."""

    def __init__(
        self,
        conn: AsyncConnection,
        alert_id: str,
        stakeholder_id: str,
        step_index: int,
        step: Mapping[str, Any],
    ) -> None:
        self.conn = conn
        self.alert_id = alert_id
        self.stakeholder_id = stakeholder_id
        self.tag = f"escalation:{step_index + 1}"
        self.step = step

    async def rows(self) -> list[dict[str, Any]]:
        earlier = [
            dict(r)
            for r in (
                await self.conn.execute(
                    select(deliveries)
                    .where(
                        deliveries.c.alert_id == self.alert_id,
                        deliveries.c.stakeholder_id == self.stakeholder_id,
                        deliveries.c.origin.in_(ALERT_ORIGINS),
                    )
                    .order_by(deliveries.c.created_at, deliveries.c.id)
                )
            ).mappings()
        ]
        action = self.step["action"]
        if action == "resend":
            return self._resend(earlier)
        if action == "next_channel":
            return await self._next_channel(earlier)
        return await self._notify()

    def _row(self, template: Mapping[str, Any], **changes: Any) -> dict[str, Any]:
        planned = PlannedRow(
            stakeholder_id=changes.get("stakeholder_id", self.stakeholder_id),
            subscription_id=changes.get("subscription_id", template.get("subscription_id")),
            contact_id=changes.get("contact_id", template.get("contact_id")),
            channel=changes.get("channel", template["channel"]),
            address=changes.get("address", template["address"]),
            state=DeliveryState.PENDING,
            detail=changes.get("detail"),
            ack_required=changes.get("ack_required", True),
            subscriptions=tuple(template.get("subscriptions") or ()),
            origin=changes.get("origin", "escalation"),
        )
        values = planned.values(self.alert_id)
        tag = changes.get("tag", self.tag)
        values["id"] = step_row_id(
            self.alert_id, planned.stakeholder_id, planned.channel, planned.address, tag
        )
        return values

    def _resend(self, earlier: list[dict[str, Any]]) -> list[dict[str, Any]]:
        reached: dict[tuple[str, str], dict[str, Any]] = {}
        for row in earlier:
            if row["state"] in REACHED:
                reached.setdefault((row["channel"], row["address"]), row)
        return [self._row(row) for row in reached.values()]

    async def _next_channel(self, earlier: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if not earlier:
            return []
        used = {row["channel"] for row in earlier}
        preference = [earlier[0]["channel"], *(earlier[0]["fallback_channels"] or ())]
        for channel in preference:
            if channel in used:
                continue
            contact = (
                (
                    await self.conn.execute(
                        select(contacts.c.id, contacts.c.address)
                        .where(
                            contacts.c.stakeholder_id == self.stakeholder_id,
                            contacts.c.channel == channel,
                            contacts.c.active.is_(True),
                        )
                        .order_by(contacts.c.created_at, contacts.c.id)
                        .limit(1)
                    )
                )
                .mappings()
                .first()
            )
            if contact is not None:
                return [
                    self._row(
                        earlier[0],
                        channel=channel,
                        address=contact["address"],
                        contact_id=contact["id"],
                    )
                ]
        return []

    async def _notify(self) -> list[dict[str, Any]]:
        alert = (
            (
                await self.conn.execute(
                    select(alerts.c.tlp, alerts.c.caveats).where(alerts.c.id == self.alert_id)
                )
            )
            .mappings()
            .one()
        )
        handling = Handling(Tlp.parse(alert["tlp"]), tuple(alert["caveats"] or ()))
        about = await self.conn.scalar(
            select(stakeholders.c.name).where(stakeholders.c.id == self.stakeholder_id)
        )
        supervisors = {
            row["id"]: stakeholder_model(record_of(STAKEHOLDER, row))
            for row in (
                await self.conn.execute(
                    select(stakeholders).where(
                        stakeholders.c.id.in_(self.step["supervisors"]),
                        stakeholders.c.active.is_(True),
                    )
                )
            ).mappings()
        }
        if not supervisors:
            return []
        found = await self.conn.execute(
            select(contacts)
            .where(
                contacts.c.stakeholder_id.in_(supervisors),
                contacts.c.channel.in_(self.step.get("channels", ["email"])),
                contacts.c.active.is_(True),
            )
            .order_by(contacts.c.created_at, contacts.c.id)
        )
        rows = []
        for contact in found.mappings():
            supervisor = supervisors[contact["stakeholder_id"]]
            cleared = withheld_reason(handling, supervisor, Channel(contact["channel"])) is None
            detail = {
                "notice": "unacknowledged",
                "about": about or "A stakeholder",
                "afterSeconds": self.step["afterSeconds"],
                "cleared": cleared,
            }
            rows.append(
                self._row(
                    {"channel": contact["channel"], "address": contact["address"]},
                    stakeholder_id=supervisor.id,
                    contact_id=contact["id"],
                    subscription_id=None,
                    detail=json.dumps(detail),
                    ack_required=False,
                    origin="notice",
                    tag=f"notice:{self.stakeholder_id}:{self.tag}",
                )
            )
        return rows
