"""The escalation engine: fires due steps of the timers kept in the ledger (see
`dissemination.acks.escalation`), one compare-and-set transaction per step that also writes the
step's delivery rows, then publishes their tasks.

Steps: `resend` the alert on the channels it reached; `next_channel`, the first channel of
the subscription's preference not used yet where the stakeholder has an active contact;
`notify` supervisors ("X has not acknowledged ... after N minutes") on their own contacts;
a notice row is the supervisor's, and its detail names whom it is about (`NOTICE_ABOUT_ID`),
so that X's acknowledgment suppresses it if it has not gone yet. Before firing, an
acknowledgment, a Cancel of the alert or its expiry ends the escalation.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import bindparam, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncConnection

from core.alert import Handling, Tlp
from core.clock import Clock
from dissemination.acks.escalation import EscalationState, end_escalations, step_row_id
from dissemination.broker.dispatch import DeliveryDispatcher
from dissemination.directory.store import STAKEHOLDER, first_active_contact, record_of
from dissemination.metrics import Metrics
from dissemination.store.cancels import cancelled_alert_ids
from dissemination.store.database import Database
from dissemination.store.rows import (
    ALERT_ORIGINS,
    NOTICE_ABOUT_ID,
    REACHED_STATES,
    DeliveryState,
    PlannedRow,
    RowOrigin,
    insert_planned,
    pending_by_channel,
)
from dissemination.store.tables import (
    acks,
    alert_references,
    alerts,
    contacts,
    deliveries,
    escalations,
    stakeholders,
)
from dissemination.store.urgency import urgent_alerts
from subscriptions.clearance import withheld_reason
from subscriptions.codec import stakeholder_model
from subscriptions.model import Channel

log = structlog.stdlib.get_logger(__name__)

DUE_BATCH = 500


class EscalationEngine:
    """Fires due escalation steps (`run_due`, called periodically by the service)."""

    def __init__(
        self,
        database: Database,
        dispatcher: DeliveryDispatcher,
        clock: Clock,
        metrics: Metrics | None = None,
    ) -> None:
        self.database = database
        self.dispatcher = dispatcher
        self.clock = clock
        self.metrics = metrics or Metrics()

    async def run_due(self) -> int:
        """Fire every step due by now, a batch per transaction; returns how many steps this
        instance fired."""
        fired = 0
        while True:
            now = self.clock()
            async with self.database.reading() as conn:
                due = [
                    dict(row)
                    for row in (
                        await conn.execute(
                            select(escalations)
                            .where(
                                escalations.c.state == EscalationState.ACTIVE.value,
                                escalations.c.next_at <= now,
                            )
                            .order_by(escalations.c.next_at)
                            .limit(DUE_BATCH)
                        )
                    ).mappings()
                ]
            if due:
                count, pending, urgent = await self._fire_batch(due, now)
                fired += count
                if urgent:
                    await self.dispatcher.dispatch(urgent, urgent=True)
                if pending:
                    await self.dispatcher.dispatch(pending)
            if len(due) < DUE_BATCH:
                return fired

    async def _fire_batch(
        self, due: list[dict[str, Any]], now: datetime
    ) -> tuple[int, dict[str, list[str]], dict[str, list[str]]]:
        """In one transaction: end the escalations that are over, advance each other one by
        compare-and-set (a step another instance fired first is skipped), and write the rows
        of the steps fired here. Returns the steps fired and the new pending rows by channel:
        those of ordinary alerts, then those of urgent ones (`Alert.urgent`)."""
        fired: list[tuple[dict[str, Any], int]] = []
        values: list[dict[str, Any]] = []
        async with self.database.transaction() as conn:
            ended = await self._ended(conn, due, now)
            for (alert_id, stakeholder_id), state in ended.items():
                await end_escalations(
                    conn, state, now, alert_ids=[alert_id], stakeholder_id=stakeholder_id
                )
            earlier = await self._earlier(conn, due)
            ours = await self._advance(conn, [r for r in due if _pair(r) not in ended], now)
            for row in due:
                pair = _pair(row)
                if pair not in ours:
                    continue
                index = row["next_step"]
                planner = StepPlanner(conn, *pair, index, row["steps"][index], now)
                planned = await planner.rows(earlier.get(pair, []))
                values += planned
                fired.append((row, len(planned)))
            await insert_planned(conn, self.database, values)
            urgent = await urgent_alerts(conn, {value["alert_id"] for value in values})
        for row, count in fired:
            self.metrics.escalation_step(row["steps"][row["next_step"]]["action"])
            log.info(
                "escalation_step_fired",
                step=row["next_step"] + 1,
                action=row["steps"][row["next_step"]]["action"],
                alert_id=row["alert_id"],
                stakeholder_id=row["stakeholder_id"],
                rows=count,
            )
        return (
            len(fired),
            pending_by_channel([v for v in values if v["alert_id"] not in urgent]),
            pending_by_channel([v for v in values if v["alert_id"] in urgent]),
        )

    @staticmethod
    async def _advance(
        conn: AsyncConnection, rows: list[dict[str, Any]], now: datetime
    ) -> set[tuple[str, str]]:
        """Move each escalation past its due step unless that step was fired already (by
        compare-and-set on the step number); the pairs moved here."""
        if not rows:
            return set()
        keys = tuple_(escalations.c.alert_id, escalations.c.stakeholder_id, escalations.c.next_step)
        result = await conn.execute(
            update(escalations)
            .where(
                keys.in_([(r["alert_id"], r["stakeholder_id"], r["next_step"]) for r in rows]),
                escalations.c.state == EscalationState.ACTIVE.value,
            )
            .values(next_step=escalations.c.next_step + 1, updated_at=now)
            .returning(escalations.c.alert_id, escalations.c.stakeholder_id)
        )
        moved = {(str(alert_id), str(stakeholder_id)) for alert_id, stakeholder_id in result}
        timings = []
        for row in rows:
            if _pair(row) not in moved:
                continue
            steps, following = row["steps"], row["next_step"] + 1
            more = following < len(steps)
            timings.append(
                {
                    "pair_alert": row["alert_id"],
                    "pair_stakeholder": row["stakeholder_id"],
                    "following_at": (
                        row["started_at"] + timedelta(seconds=steps[following]["afterSeconds"])
                        if more
                        else None
                    ),
                    "following_state": (
                        EscalationState.ACTIVE if more else EscalationState.DONE
                    ).value,
                }
            )
        if timings:
            await conn.execute(
                update(escalations)
                .where(
                    escalations.c.alert_id == bindparam("pair_alert"),
                    escalations.c.stakeholder_id == bindparam("pair_stakeholder"),
                )
                .values(next_at=bindparam("following_at"), state=bindparam("following_state")),
                timings,
            )
        return moved

    @staticmethod
    async def _ended(
        conn: AsyncConnection, due: list[dict[str, Any]], now: datetime
    ) -> dict[tuple[str, str], EscalationState]:
        """The due escalations that are over: acknowledged, their alert cancelled or expired."""
        alert_ids = {row["alert_id"] for row in due}
        acknowledged = set(
            (
                await conn.execute(
                    select(acks.c.alert_id, acks.c.stakeholder_id).where(
                        acks.c.alert_id.in_(alert_ids), acks.c.acknowledged_at.is_not(None)
                    )
                )
            ).all()
        )
        cancelled = set(
            await conn.scalars(
                cancelled_alert_ids().where(alert_references.c.ref_alert_id.in_(alert_ids))
            )
        )
        expired = set(
            await conn.scalars(
                select(alerts.c.id).where(alerts.c.id.in_(alert_ids), alerts.c.expires_at <= now)
            )
        )
        ended: dict[tuple[str, str], EscalationState] = {}
        for row in due:
            pair = _pair(row)
            if pair in acknowledged:
                ended[pair] = EscalationState.ACKNOWLEDGED
            elif row["alert_id"] in cancelled:
                ended[pair] = EscalationState.CANCELLED
            elif row["alert_id"] in expired:
                ended[pair] = EscalationState.EXPIRED
        return ended

    @staticmethod
    async def _earlier(
        conn: AsyncConnection, due: list[dict[str, Any]]
    ) -> dict[tuple[str, str], list[dict[str, Any]]]:
        """The alert's delivery rows so far of each due (alert, stakeholder), oldest first."""
        result = await conn.execute(
            select(deliveries)
            .where(
                deliveries.c.alert_id.in_({row["alert_id"] for row in due}),
                deliveries.c.stakeholder_id.in_({row["stakeholder_id"] for row in due}),
                deliveries.c.origin.in_(sorted(ALERT_ORIGINS)),
            )
            .order_by(deliveries.c.created_at, deliveries.c.id)
        )
        earlier: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for row in result.mappings():
            earlier.setdefault((row["alert_id"], row["stakeholder_id"]), []).append(dict(row))
        return earlier


def _pair(row: Mapping[str, Any]) -> tuple[str, str]:
    return (row["alert_id"], row["stakeholder_id"])


class StepPlanner:
    """The delivery rows one step writes, from the alert's rows so far to the stakeholder
    (and, for the next channel and notices, contacts read inside the firing transaction)."""

    def __init__(
        self,
        conn: AsyncConnection,
        alert_id: str,
        stakeholder_id: str,
        step_index: int,
        step: Mapping[str, Any],
        now: datetime,
    ) -> None:
        self.conn = conn
        self.now = now
        self.alert_id = alert_id
        self.stakeholder_id = stakeholder_id
        self.tag = f"escalation:{step_index + 1}"
        self.step = step

    async def rows(self, earlier: list[dict[str, Any]]) -> list[dict[str, Any]]:
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
            origin=changes.get("origin", RowOrigin.ESCALATION),
            row_id=step_row_id(
                self.alert_id,
                changes.get("stakeholder_id", self.stakeholder_id),
                changes.get("channel", template["channel"]),
                changes.get("address", template["address"]),
                changes.get("tag", self.tag),
            ),
        )
        return planned.values(self.alert_id, self.now)

    def _resend(self, earlier: list[dict[str, Any]]) -> list[dict[str, Any]]:
        reached: dict[tuple[str, str], dict[str, Any]] = {}
        for row in earlier:
            if row["state"] in REACHED_STATES:
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
            contact = await first_active_contact(self.conn, self.stakeholder_id, channel)
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
                NOTICE_ABOUT_ID: self.stakeholder_id,
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
                    origin=RowOrigin.NOTICE,
                    tag=f"notice:{self.stakeholder_id}:{self.tag}",
                )
            )
        return rows
