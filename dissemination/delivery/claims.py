"""The ledger operations delivery workers need, each one short transaction over a batch of
rows: claim (`pending` -> `sending`, conditional, so two workers never both send a row),
settle (only from `sending`, so a late writer never moves a row backwards), fall back to the
next channel, and the stuck-row policy.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from dissemination.acks.escalation import start_escalations
from dissemination.controls.record import RELEASED, WITHHELD, Entry, append_records
from dissemination.controls.recordkey import RecordKey
from dissemination.controls.sendcheck import release_justification
from dissemination.delivery.claimread import ClaimRead, claim_in_one_statement, claim_step_by_step
from dissemination.directory.store import deactivate_contact, first_active_contact
from dissemination.store.audit import Actor
from dissemination.store.cancels import cancelled_alert_ids
from dissemination.store.database import Database, plan_for_current_sizes
from dissemination.store.groupcommit import GroupCommit
from dissemination.store.rows import (
    ClaimedRow,
    DeliveryState,
    PlannedRow,
    RowOrigin,
    RowOutcome,
    forget_unmatched_statuses,
    insert_planned,
    resend_stuck_rows,
    settle_sending,
    suppress_pending,
)
from dissemination.store.tables import (
    alerts,
    deliveries,
)
from subscriptions.codec import stakeholder_model

DELIVERY_ACTOR = Actor(None, "delivery worker")
DOCUMENT_CACHE_SIZE = 64
CLAIM_BATCH = 16
"""Claims of concurrent tasks written in one transaction, at most."""


@dataclass(frozen=True, slots=True)
class Claim:
    """Rows now ours to send, and rows that are pending but must wait until `not_before`."""

    rows: list[ClaimedRow]
    held: list[tuple[str, datetime]]
    expired: int = 0
    """Rows suppressed because their alert expired before they could be sent."""


@dataclass(frozen=True, slots=True)
class Settlement:
    """How one claimed row ends this attempt. `state` PENDING means it goes back to wait until
    `not_before` (a retry, or an open circuit, which does not count as an attempt)."""

    row: ClaimedRow
    state: DeliveryState
    reason: str | None
    provider_id: str | None = None
    not_before: datetime | None = None
    uncount_attempt: bool = False
    fall_back: bool = False
    disable_contact: bool = False
    detail: str | None = None
    content_sha256: str | None = None

    def outcome(self) -> RowOutcome:
        """The row's state transition this settlement makes."""
        return RowOutcome(
            self.row.id,
            self.row.channel,
            self.state,
            self.reason,
            self.provider_id,
            self.not_before,
            self.uncount_attempt,
            self.detail,
        )


@dataclass(slots=True)
class SettleResult:
    """Rows created by fallback, by channel, to be published as tasks; and, for each alert
    whose first delivery this settlement sent, the seconds from its receipt to now."""

    fallbacks: dict[str, list[str]] = field(default_factory=dict)
    first_deliveries: list[float] = field(default_factory=list)


def record_entries(settlements: Sequence[Settlement]) -> list[Entry]:
    """The dissemination record's entries for these outcomes: each send, and each withholding
    at send time."""
    entries = []
    for s in settlements:
        if s.state is DeliveryState.SENT:
            outcome, justification = RELEASED, release_justification(s.row)
        elif s.state is DeliveryState.WITHHELD:
            outcome, justification = WITHHELD, f"{s.reason}: {s.detail or ''}".rstrip(": ")
        else:
            continue
        holder = s.row.stakeholder
        entries.append(
            Entry(
                alert_id=s.row.alert_id,
                delivery_id=s.row.id,
                stakeholder_id=s.row.stakeholder_id,
                organization=holder.organization if holder is not None else None,
                channel=s.row.channel,
                address=s.row.address,
                outcome=outcome,
                rule=s.row.subscriptions,
                justification=justification,
                content_sha256=s.content_sha256,
            )
        )
    return entries


_DOCUMENTS = select(alerts.c.id, alerts.c.document).where(
    alerts.c.id.in_(bindparam("alert_ids", expanding=True))
)
"""The stored documents of a claim's alerts (a claim's rows are of one alert or a few)."""


class DeliveryStore:
    """Batch reads and writes of delivery rows."""

    def __init__(self, database: Database, record_key: RecordKey | None = None) -> None:
        self.database = database
        self.record_key = record_key
        # Alert documents never change once stored; a fan-out reads one for many rows.
        self._documents: dict[str, dict[str, Any]] = {}
        # A crash leaves at most CLAIM_BATCH claims' rows in `sending` (to be resent).
        self._claimer: GroupCommit[tuple[list[str], datetime], Claim] = GroupCommit(
            self._claim_batch, max_batch=CLAIM_BATCH
        )
        self._settler: GroupCommit[tuple[list[Settlement], datetime], SettleResult] = GroupCommit(
            self._settle_batch
        )

    async def claim(self, ids: Sequence[str], now: datetime) -> Claim:
        """Take the pending rows among `ids` whose time has come; report the ones still held.
        Rows of an alert that has expired meanwhile are suppressed instead, never sent.
        Claims asked for while another is being written go together in the next transaction
        (a group commit); each caller gets its own rows."""
        return await self._claimer.submit((list(ids), now))

    async def _claim_batch(self, batch: Sequence[tuple[list[str], datetime]]) -> list[Claim]:
        """The group commit's writer: every caller's rows claimed in one transaction, at the
        latest caller's time, and the outcome split by caller."""
        ids = list(dict.fromkeys(i for each, _ in batch for i in each))
        now = max(at for _, at in batch)
        async with self.database.transaction() as conn:
            await plan_for_current_sizes(conn)
            if conn.dialect.name == "postgresql":
                read = await claim_in_one_statement(conn, ids, now)
            else:
                read = await claim_step_by_step(conn, ids, now)
            rows = await self._rows(conn, read) if read.records else []
        expired = set(read.expired)
        held = read.held
        rows_by_id = {row.id: row for row in rows}
        held_by_id = dict(held)
        claims = []
        for each, _ in batch:
            mine = list(dict.fromkeys(each))  # a row asked for twice goes to its first caller
            gone = [i for i in mine if i in expired]
            expired.difference_update(gone)
            claims.append(
                Claim(
                    [rows_by_id.pop(i) for i in mine if i in rows_by_id],
                    [(i, held_by_id.pop(i)) for i in mine if i in held_by_id],
                    len(gone),
                )
            )
        return claims

    async def _rows(self, conn: AsyncConnection, read: ClaimRead) -> list[ClaimedRow]:
        records = read.records
        # This claim's own documents: a concurrent claim may empty the shared cache while
        # this one awaits its queries.
        wanted = {record["alert_id"] for record in records}
        documents = {i: self._documents[i] for i in wanted if i in self._documents}
        missing = wanted - documents.keys()
        if missing:
            result = await conn.execute(_DOCUMENTS, {"alert_ids": sorted(missing)})
            fetched = {alert.id: alert.document for alert in result}
            documents.update(fetched)
            if len(self._documents) + len(fetched) > DOCUMENT_CACHE_SIZE:
                self._documents.clear()
            self._documents.update(fetched)
        models = {
            holder_id: stakeholder_model(found) for holder_id, found in read.stakeholders.items()
        }
        return [
            ClaimedRow.from_record(
                record,
                documents[record["alert_id"]],
                models.get(record["stakeholder_id"]),
            )
            for record in records
        ]

    async def warm_up(self, connections: int, now: datetime) -> None:
        """Open `connections` of the pool and prepare the claim on each, by a claim of no rows
        (which changes nothing), before the first task: in `bench.latency` the first alerts
        after a start otherwise waited for connections to open and the statement to be
        compiled and prepared on each, 15-19 of them over 50 ms and up to 160 ms."""
        if self.database.dialect != "postgresql":
            return

        async def claim_nothing() -> None:
            async with self.database.transaction() as conn:
                await claim_in_one_statement(conn, [], now)

        await asyncio.gather(*(claim_nothing() for _ in range(connections)))

    async def settle(self, settlements: Sequence[Settlement], now: datetime) -> SettleResult:
        """Record every outcome in one transaction, with the fallback rows and disabled
        endpoints they cause. Settlements submitted while another is being written go
        together in the next transaction (a group commit: one commit and one append to the
        record's chain for all); each caller gets the rows its own settlements created."""
        if not settlements:
            return SettleResult()
        return await self._settler.submit((list(settlements), now))

    async def _settle_batch(
        self, batch: Sequence[tuple[list[Settlement], datetime]]
    ) -> list[SettleResult]:
        """The group commit's writer: every caller's settlements in one transaction, in the
        order they were submitted, at the latest caller's time. The first caller's result
        carries the batch's first deliveries (they are only counted)."""
        results = [SettleResult() for _ in batch]
        settlements = [s for each, _ in batch for s in each]
        now = max(at for _, at in batch)
        async with self.database.transaction() as conn:
            await plan_for_current_sizes(conn)
            received = await settle_sending(conn, [s.outcome() for s in settlements], now)
            results[0].first_deliveries = [(now - at).total_seconds() for at in received]
            await start_escalations(
                conn,
                [
                    (s.row.alert_id, s.row.stakeholder_id)
                    for s in settlements
                    if s.state is DeliveryState.SENT
                    and s.row.ack_required
                    and s.row.origin != RowOrigin.NOTICE
                ],
                now,
            )
            await append_records(conn, record_entries(settlements), now, self.record_key)
            retrying = [s.row.id for s in settlements if s.state is DeliveryState.PENDING]
            if retrying:
                await self._stop_if_cancelled(conn, retrying, now)
            for (each, _), result in zip(batch, results, strict=True):
                for s in each:
                    if s.disable_contact and s.row.contact_id:
                        await deactivate_contact(
                            conn, s.row.contact_id, DELIVERY_ACTOR, s.reason or "", now
                        )
                    if s.fall_back:
                        created = await self._fall_back(conn, s.row, now)
                        if created is not None:
                            result.fallbacks.setdefault(created[0], []).append(created[1])
        return results

    @staticmethod
    async def _stop_if_cancelled(conn: AsyncConnection, ids: list[str], now: datetime) -> None:
        """A Cancel that arrived while these rows were being sent stops their retries too (the
        ledger suppressed the alert's other pending rows when it recorded the Cancel); a Test
        or Exercise Cancel never an Actual alert's (`cancelled_alert_ids`)."""
        await suppress_pending(conn, ids, cancelled_alert_ids(), "cancelled", now)

    async def _fall_back(
        self, conn: AsyncConnection, row: ClaimedRow, now: datetime
    ) -> tuple[str, str] | None:
        """A pending row on the first later channel of the subscription where the stakeholder
        has an active contact; None if there is none (or the row exists already)."""
        remaining = list(row.fallback_channels)
        while remaining:
            channel = remaining.pop(0)
            contact = await first_active_contact(conn, row.stakeholder_id, channel)
            if contact is None:
                continue
            planned = PlannedRow(
                stakeholder_id=row.stakeholder_id,
                subscription_id=row.subscription_id,
                contact_id=contact["id"],
                channel=channel,
                address=contact["address"],
                state=DeliveryState.PENDING,
                fallback_channels=tuple(remaining),
                ack_required=row.ack_required,
                subscriptions=row.subscriptions,
                origin=RowOrigin.FALLBACK,
            )
            values = planned.values(row.alert_id, now) | {"fallback_of": row.id}
            inserted = await insert_planned(conn, self.database, [values])
            return (channel, values["id"]) if inserted == 1 else None
        return None

    async def resend_stuck(
        self,
        channel: str,
        older_than: datetime,
        now: datetime,
        in_flight: Collection[str] = (),
    ) -> list[str]:
        """`resend_stuck_rows` in a transaction of its own: the ids to publish again."""
        async with self.database.transaction() as conn:
            return await resend_stuck_rows(conn, channel, older_than, now, in_flight)

    async def forget_unmatched_statuses(self, channel: str, now: datetime) -> int:
        """Drop provider statuses of `channel` that no recorded send has matched in a day."""
        async with self.database.transaction() as conn:
            return await forget_unmatched_statuses(conn, channel, now)

    async def overdue_pending(self, channel: str, older_than: datetime) -> list[str]:
        """Pending rows that have been due since before `older_than`: their task was lost if
        the channel's queue holds nothing (a crash between commit and publish)."""
        async with self.database.reading() as conn:
            return list(
                await conn.scalars(
                    select(deliveries.c.id).where(
                        deliveries.c.channel == channel,
                        deliveries.c.state == DeliveryState.PENDING.value,
                        func.coalesce(deliveries.c.not_before, deliveries.c.updated_at)
                        < older_than,
                    )
                )
            )
