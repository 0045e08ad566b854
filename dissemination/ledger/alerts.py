"""The alert ledger: what was received (alerts with their verbatim payloads and references),
what was refused (rejections) and what was held back (quarantine). The database is the source
of truth; every write here is idempotent so a redelivered message changes nothing."""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from core.alert import Alert, Handling, Reference, Tlp, content_hash_of
from core.errors import ErrorDetail
from dissemination.acks.tracking import AckIssuer
from dissemination.controls.authority import Submitter
from dissemination.controls.recordkey import RecordKey
from dissemination.ledger.alertrows import ToStore, alert_row_values
from dissemination.ledger.planning import Planner
from dissemination.ledger.planrows import PlanRows
from dissemination.store.database import Database, insert_ignoring_conflicts
from dissemination.store.rows import (
    AlertState,
    PlannedRow,
)
from dissemination.store.tables import (
    CONTENT_TYPE_LENGTH,
    alert_references,
    alerts,
    payloads,
    quarantine,
    rejections,
)
from subscriptions.audience import Audience

REJECTED_BODY_PREFIX = 4096
"""Bytes of a rejected body that are kept (with the whole body's size and SHA-256)."""


class RecordOutcome(StrEnum):
    """What recording an alert did."""

    STORED = "stored"
    DUPLICATE = "duplicate"
    CONFLICT = "conflict"


@functools.cache
def _inserting_alerts(dialect: str) -> Any:
    """The alerts' insert, ignoring those stored already, returning the ids it stored."""
    return insert_ignoring_conflicts(dialect, alerts).returning(alerts.c.id)


@dataclass(frozen=True, slots=True)
class Payload:
    """A message body exactly as received."""

    body: bytes
    content_type: str
    sha256: str = field(init=False, repr=False, compare=False)
    """The body's SHA-256, taken once (storing an alert reads it three times)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "sha256", hashlib.sha256(self.body).hexdigest())


@dataclass(frozen=True, slots=True)
class Referenced:
    """A stored alert an Update or Cancel refers to: its sender (only that sender may update
    or cancel it) and its marks (the Update or Cancel carries at least those)."""

    alert_id: str
    sender: str
    handling: Handling


@dataclass(frozen=True, slots=True)
class PlannedAgainst:
    """What an Update or Cancel with references was checked and planned against before its
    transaction: the stored alerts its references resolved to then. The transaction that
    stores it resolves them again, after whatever came before it in that transaction; if
    they resolve to others there, the sender is checked, the marks inherited and the alert
    planned again, from the alert as `submitted` (its own marks), by `submitter`, for the
    audiences of the send that released it (`send_id`, `send_audiences`) if any."""

    resolved: frozenset[str]
    submitted: Alert
    submitter: Submitter
    send_id: str | None = None
    send_audiences: tuple[Audience, ...] | None = None


@dataclass(frozen=True, slots=True)
class PlannedAlert:
    """An alert to record, the state it is stored in, and the delivery rows its matches
    produced (computed before the transaction, so the transaction stays short; again in it
    for an Update or Cancel whose references resolve to other alerts there: `against`)."""

    alert: Alert
    state: AlertState
    rows: tuple[PlannedRow, ...] = ()
    hold_rule: str | None = None
    against: PlannedAgainst | None = None


@dataclass(frozen=True, slots=True)
class AlertMessage:
    """The alerts decoded from one inbound message."""

    payload: Payload
    alerts: tuple[PlannedAlert, ...]
    received_at: datetime
    submitted_by: str | None = None


@dataclass(frozen=True, slots=True)
class Recorded:
    """What recording one alert did, and its delivery rows still waiting to be sent, by
    channel (for a duplicate too: a crash may have come before their tasks were published)."""

    outcome: RecordOutcome
    pending: dict[str, list[str]] = field(default_factory=dict)
    replanned: PlannedAlert | None = None
    """The alert as checked and planned again in the transaction (`PlannedAgainst`), if it
    was: with the marks it was stored with."""


async def resolve_reference(conn: AsyncConnection, reference: Reference) -> list[str]:
    """The stored alerts a reference means: same sender in any letter case, same identifier,
    and `sent` the same instant whatever UTC offset it is written in (CAP's `sender` is
    case-insensitive in practice, and `sent` is a moment, not a string). Falls back to the
    exact spelling when `sent` is not a timestamp."""
    try:
        instant = datetime.fromisoformat(reference.sent)
    except ValueError:
        instant = None
    if instant is None or instant.tzinfo is None:
        return list(
            await conn.scalars(select(alerts.c.id).where(alerts.c.id == reference.alert_id))
        )
    return list(
        await conn.scalars(
            select(alerts.c.id)
            .where(
                alerts.c.identifier == reference.identifier,
                func.lower(alerts.c.sender) == reference.sender.strip().lower(),
                alerts.c.sent_at == instant,
            )
            .order_by(alerts.c.received_at, alerts.c.id)
        )
    )


async def resolve_references(
    conn: AsyncConnection, references: Sequence[Reference]
) -> list[list[str]]:
    """The stored alerts each reference means (`resolve_reference`), in order."""
    return [await resolve_reference(conn, reference) for reference in references]


async def referenced_alerts(conn: AsyncConnection, alert_ids: Collection[str]) -> list[Referenced]:
    """The senders and marks of the stored alerts `alert_ids`, by id."""
    if not alert_ids:
        return []
    result = await conn.execute(
        select(alerts.c.id, alerts.c.sender, alerts.c.tlp, alerts.c.caveats)
        .where(alerts.c.id.in_(alert_ids))
        .order_by(alerts.c.id)
    )
    return [
        Referenced(alert_id, sender, Handling(Tlp.parse(tlp), tuple(caveats or ())))
        for alert_id, sender, tlp, caveats in result
    ]


def storable_text(text: str) -> str:
    """`text` without what no text column holds: NUL (as U+FFFD) and lone surrogates (as ?)."""
    return text.replace("\x00", "\ufffd").encode("utf-8", "replace").decode("utf-8")


class Ledger:
    """Reads and writes of the alert ledger."""

    def __init__(
        self,
        database: Database,
        planner: Planner | None = None,
        acks: AckIssuer | None = None,
        record_key: RecordKey | None = None,
    ) -> None:
        self.database = database
        self.plans = PlanRows(database, planner, acks, record_key)

    @property
    def planner(self) -> Planner | None:
        """What plans the alerts' deliveries (`PlanRows.planner`); None: recording only."""
        return self.plans.planner

    async def record_alert(
        self, alert: Alert, payload: Payload, state: AlertState, now: datetime
    ) -> RecordOutcome:
        """Store `alert` once and link its references, in its own transaction (no planning:
        the intake pipeline composes that)."""
        async with self.database.transaction() as conn:
            outcome = await self.store(conn, alert, payload, state, now)
            if outcome is RecordOutcome.STORED:
                await self.link_references(conn, alert)
            return outcome

    async def store(
        self,
        conn: AsyncConnection,
        alert: Alert,
        payload: Payload,
        state: AlertState,
        now: datetime,
    ) -> RecordOutcome:
        """Keep the payload, and the alert once. Same key and same content again: DUPLICATE.
        Same key with other content: the newcomer is quarantined (CONFLICT) and the original
        stays."""
        return (await self.store_many(conn, [ToStore(alert, payload, state, now)]))[0]

    async def store_many(
        self, conn: AsyncConnection, entries: Sequence[ToStore]
    ) -> list[RecordOutcome]:
        """`store` for several alerts in three statements (payloads, alerts, and the stored
        hashes of those that were there already), with the outcomes `store` would give one
        after the other in this order: of two entries with one key, the first is kept."""
        documents = [entry.alert.to_json() for entry in entries]
        hashes = [content_hash_of(document) for document in documents]
        payload_rows: dict[str, dict[str, Any]] = {}
        for entry in entries:  # the first of a payload's alerts, as one by one
            payload_rows.setdefault(
                entry.payload.sha256,
                {
                    "sha256": entry.payload.sha256,
                    "content_type": entry.payload.content_type,
                    "body": entry.payload.body,
                    "received_at": entry.received_at,
                },
            )
        await conn.execute(
            self.database.insert_ignoring_conflicts(payloads), list(payload_rows.values())
        )
        rows = [
            alert_row_values(entry, document, content_hash)
            for entry, document, content_hash in zip(entries, documents, hashes, strict=True)
        ]
        inserted = set(await conn.scalars(_inserting_alerts(self.database.dialect), rows))
        outcomes: list[RecordOutcome] = []
        again: list[int] = []  # entries whose key was stored before them
        for index, entry in enumerate(entries):
            if entry.alert.id in inserted:
                inserted.discard(entry.alert.id)
                outcomes.append(RecordOutcome.STORED)
            else:
                again.append(index)
                outcomes.append(RecordOutcome.DUPLICATE)
        if not again:
            return outcomes
        existing = dict(
            (
                await conn.execute(
                    select(alerts.c.id, alerts.c.content_hash).where(
                        alerts.c.id.in_({entries[i].alert.id for i in again})
                    )
                )
            ).all()
        )
        for index in again:
            if existing.get(entries[index].alert.id) == hashes[index]:
                continue
            outcomes[index] = RecordOutcome.CONFLICT
            await conn.execute(
                quarantine.insert().values(
                    received_at=entries[index].received_at,
                    alert_id=entries[index].alert.id,
                    reason="conflicting_duplicate",
                    content_hash=hashes[index],
                    document=documents[index],
                    payload_sha256=entries[index].payload.sha256,
                )
            )
        return outcomes

    async def link_references(
        self,
        conn: AsyncConnection,
        alert: Alert,
        resolved: Sequence[Sequence[str]] | None = None,
    ) -> list[str]:
        """Link the alert's references; returns the ids of those that resolve to stored alerts.
        `resolved`: what each reference resolves to, if resolved already on `conn`."""
        if not alert.references:
            return []
        if resolved is None:
            resolved = await resolve_references(conn, alert.references)
        await conn.execute(
            alert_references.insert(),
            [
                {
                    "alert_id": alert.id,
                    "position": position,
                    "ref_sender": ref.sender,
                    "ref_identifier": ref.identifier,
                    "ref_sent": ref.sent,
                    "ref_alert_id": found[0] if found else ref.alert_id,
                    "resolved": int(bool(found)),
                }
                for position, (ref, found) in enumerate(
                    zip(alert.references, resolved, strict=True)
                )
            ],
        )
        return sorted({alert_id for found in resolved for alert_id in found})

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
        """Keep a refused input and why, bounded: the first REJECTED_BODY_PREFIX bytes of the
        body with its size and SHA-256, and the envelope in a form the store can hold (an
        input is often refused for the very text the store would refuse too); returns the
        rejection's id."""
        async with self.database.transaction() as conn:
            result = await conn.execute(
                rejections.insert().values(
                    received_at=now,
                    source=source,
                    message_id=None if message_id is None else storable_text(message_id),
                    reason=reason,
                    errors=[
                        {"path": storable_text(e.path), "message": storable_text(e.message)}
                        for e in errors
                    ],
                    content_type=storable_text(payload.content_type)[:CONTENT_TYPE_LENGTH],
                    body=payload.body[:REJECTED_BODY_PREFIX],
                    body_size=len(payload.body),
                    body_sha256=payload.sha256,
                )
            )
            return int(result.inserted_primary_key[0])  # type: ignore[index]

    async def referenced(self, references: Sequence[Reference]) -> list[Referenced]:
        """The stored alerts these references resolve to, with their senders and marks."""
        async with self.database.reading() as conn:
            found = {i for ids in await resolve_references(conn, references) for i in ids}
            return await referenced_alerts(conn, found)

    async def senders_of(self, references: Sequence[Reference]) -> list[str]:
        """The senders of the stored alerts these references resolve to."""
        return [each.sender for each in await self.referenced(references)]

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
