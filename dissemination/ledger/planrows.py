"""An alert's delivery plan as it goes into the ledger, in the alert's own transaction: the
earlier recipients an Update or Cancel adds (those the referenced alerts reached), what a
Cancel stops, and the planned rows with what each owes (acknowledgment tokens, escalation
timers, the record of every withholding)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from core.alert import Alert, MsgType, Status
from dissemination.acks.escalation import EscalationState, end_escalations, plan_escalations
from dissemination.acks.tracking import AckIssuer
from dissemination.controls import approval
from dissemination.controls.record import WITHHELD, Entry, append_records
from dissemination.controls.recordkey import RecordKey
from dissemination.ledger.planning import Planner
from dissemination.store.database import Database
from dissemination.store.rows import (
    REACHED_STATES,
    DeliveryState,
    PlannedRow,
    insert_planned,
    pending_by_channel,
    suppress_owing,
)
from dissemination.store.tables import alerts, deliveries, stakeholders

CANCEL_FOLLOWS = sorted({*REACHED_STATES, DeliveryState.SENDING.value})
"""The rows of a cancelled alert whose recipients the Cancel goes to: had it, or may have."""
UPDATE_FOLLOWS = sorted({*CANCEL_FOLLOWS, DeliveryState.PENDING.value})
"""The rows of an updated alert whose recipients the Update goes to: had it, or will."""
PLAN_SLICE = 5_000
"""Planned rows written per statement (`PlanRows.write_rows`)."""


class PlanRows:
    """Writes of an alert's delivery plan (`Ledger.plans`)."""

    def __init__(
        self,
        database: Database,
        planner: Planner | None = None,
        acks: AckIssuer | None = None,
        record_key: RecordKey | None = None,
    ) -> None:
        self.database = database
        self.planner = planner
        self.acks = acks or AckIssuer()
        self.record_key = record_key

    async def with_prior_recipients(
        self,
        conn: AsyncConnection,
        alert: Alert,
        rows: list[PlannedRow],
        known_references: list[str],
    ) -> list[PlannedRow]:
        """`rows` plus the earlier recipients of the stored alerts an Update or Cancel refers
        to: for an Update, those their rows reached or are still to reach (sent, delivered,
        sending, pending: whoever gets the original gets what corrects it); for a Cancel,
        those they reached or may have (sent, delivered, sending: a pending row is
        suppressed, so its recipient never learns of the original). Never a row held,
        rejected, suppressed, failed or withheld (`Planner.add_prior_recipients` checks each
        again)."""
        if self.planner is None or not known_references:
            return rows
        if not self.planner.follows_references(alert):
            return rows
        prior = await conn.execute(
            select(deliveries)
            .where(
                deliveries.c.alert_id.in_(known_references),
                deliveries.c.state.in_(
                    UPDATE_FOLLOWS if alert.msg_type is MsgType.UPDATE else CANCEL_FOLLOWS
                ),
            )
            .order_by(deliveries.c.id)
        )
        return self.planner.add_prior_recipients(alert, rows, prior.mappings())

    @staticmethod
    async def stop_pending(
        conn: AsyncConnection, cancel: Alert, cancelled: list[str], now: datetime
    ) -> None:
        """A Cancel stops what the cancelled alerts still had waiting: pending rows (retries,
        quiet-hours holds, not yet sent) and rows held for approval are suppressed, held
        alerts withdrawn, and escalations end. Rows mid-send finish normally. A Test,
        Exercise or System Cancel stops nothing of an Actual alert."""
        if cancel.status != Status.ACTUAL:
            cancelled = list(
                await conn.scalars(
                    select(alerts.c.id).where(
                        alerts.c.id.in_(cancelled), alerts.c.status != Status.ACTUAL.value
                    )
                )
            )
            if not cancelled:
                return
        await suppress_owing(conn, cancelled, f"cancelled by {cancel.identifier}", now)
        await approval.withdraw(conn, cancelled, cancel.identifier, now)
        await end_escalations(conn, EscalationState.CANCELLED, now, alert_ids=cancelled)

    async def write_rows(
        self, conn: AsyncConnection, alert: Alert, rows: Sequence[PlannedRow], now: datetime
    ) -> dict[str, list[str]]:
        """Write the planned rows with what each owes: ack tokens, escalation timers, and the
        record of every withholding. Returns the pending row ids by channel.

        The rows go in the alert's own transaction, in one statement on PostgreSQL however
        many (`store.bulkinsert`), not after it: an alert committed without its rows would be
        acked and then, after a crash, never planned, as nothing marks it as owing a plan;
        rows committed before their alert cannot exist (they reference it). Together, a
        redelivered message finds the alert and its rows (DUPLICATE, tasks republished) or
        neither.

        A large audience is written `PLAN_SLICE` rows at a time, still in that transaction:
        a row's column values take about 0.9 KB while they are written, 90 MB for 100,000 at
        once. What a stakeholder owes is decided by its first row, as in one write: a later
        slice's token or escalation for the same stakeholder and alert is a conflict that
        changes nothing."""
        pending: dict[str, list[str]] = {}
        alert_id = alert.id  # derived (a UUID of its key) on every read
        for start in range(0, len(rows), PLAN_SLICE):
            values = [row.values(alert_id, now) for row in rows[start : start + PLAN_SLICE]]
            await insert_planned(conn, self.database, values)
            await self.acks.issue(conn, self.database, alert_id, alert.expires, values, now)
            await plan_escalations(conn, self.database, alert, values, now)
            await self._record_withheld(conn, values, now)
            for channel, ids in pending_by_channel(values).items():
                pending.setdefault(channel, []).extend(ids)
        return pending

    async def _record_withheld(
        self, conn: AsyncConnection, values: Sequence[dict[str, Any]], now: datetime
    ) -> None:
        """Each withholding at planning goes into the dissemination record, with the reason."""
        withheld = [v for v in values if v["state"] == DeliveryState.WITHHELD.value]
        if not withheld:
            return
        organizations = dict(
            (
                await conn.execute(
                    select(stakeholders.c.id, stakeholders.c.organization).where(
                        stakeholders.c.id.in_({v["stakeholder_id"] for v in withheld})
                    )
                )
            ).all()
        )
        await append_records(
            conn,
            [
                Entry(
                    alert_id=v["alert_id"],
                    delivery_id=v["id"],
                    stakeholder_id=v["stakeholder_id"],
                    organization=organizations.get(v["stakeholder_id"]),
                    channel=v["channel"],
                    address=v["address"],
                    outcome=WITHHELD,
                    rule=tuple(v["subscriptions"]),
                    justification=f"{v['reason']}: {v['detail'] or ''}".rstrip(": "),
                    content_sha256=None,
                )
                for v in withheld
            ],
            now,
            self.record_key,
        )

    async def pending_of(self, conn: AsyncConnection, alert_id: str) -> dict[str, list[str]]:
        result = await conn.execute(
            select(deliveries.c.id, deliveries.c.channel).where(
                deliveries.c.alert_id == alert_id,
                deliveries.c.state == DeliveryState.PENDING.value,
            )
        )
        pending: dict[str, list[str]] = {}
        for row in result:
            pending.setdefault(row.channel, []).append(row.id)
        return pending
