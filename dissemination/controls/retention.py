"""Retention (28 CFR 23.20(h)): alert content older than the retention period is purged unless
an administrator revalidated the alert within the period.

Purging an alert empties its stored document down to its id, handling marks and a `purged`
flag, and clears its headline; its ledger rows (identity, content hash, delivery rows,
acknowledgments) and the dissemination record stay, so what was sent to whom remains
provable by hash. The ad-hoc sends that published it lose their copy of it in the same
transaction: `sends.body` is emptied and `sends.headline` cleared, as a payload's body and
an alert's headline are (the send's id, alert id, audience, states and times stay). A
payload's body is emptied once no unpurged alert refers to it; rejected and quarantined
inputs older than the period are deleted, and so is the content of sends made before it
whose alert was never stored (cancelled, or refused by intake), or was purged before sends
were. Every purged alert gets an audit entry, and each run one more with the counts.

Audit entries are append-only and cannot be purged, so they hold no alert content: a send's
entries name its alert by id, with its marks (`ledger.sends`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, delete, exists, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from dissemination.store.audit import Actor, write_audit
from dissemination.store.database import Database
from dissemination.store.tables import alerts, payloads, quarantine, rejections, sends

BATCH = 500
RETENTION_ACTOR = Actor(None, "retention")


@dataclass(frozen=True, slots=True)
class PurgeReport:
    """What one retention run purged (or, in a dry run, would purge)."""

    alerts: int = 0
    payloads: int = 0
    rejections: int = 0
    quarantined: int = 0
    sends: int = 0


def _due(cutoff: datetime) -> Any:
    return and_(
        alerts.c.received_at < cutoff,
        alerts.c.purged_at.is_(None),
        or_(alerts.c.revalidated_at.is_(None), alerts.c.revalidated_at < cutoff),
    )


FINISHED_SENDS = ("released", "cancelled")
"""Send states after which nothing reads a send's body but the API's check of its marks."""


def purged_document(alert_id: str, document: dict[str, Any]) -> dict[str, Any]:
    return {"id": alert_id, "handling": document.get("handling"), "purged": True}


async def run_retention(
    database: Database, cutoff: datetime, now: datetime, *, dry_run: bool = False
) -> PurgeReport:
    """Purge what was received before `cutoff` and not revalidated since."""
    if dry_run:
        return await _count(database, cutoff)
    purged = purged_sends = 0
    while True:
        async with database.transaction() as conn:
            batch = list(
                await conn.execute(
                    select(alerts.c.id, alerts.c.document, alerts.c.content_hash)
                    .where(_due(cutoff))
                    .limit(BATCH)
                )
            )
            for alert_id, document, content_hash in batch:
                purged_sends += await _purge_alert(
                    conn, alert_id, document, content_hash, cutoff, now
                )
        purged += len(batch)
        if len(batch) < BATCH:
            break
    async with database.transaction() as conn:
        report = PurgeReport(
            alerts=purged,
            payloads=await _purge_payloads(conn, cutoff, now),
            rejections=int(
                (
                    await conn.execute(delete(rejections).where(rejections.c.received_at < cutoff))
                ).rowcount
            ),
            quarantined=int(
                (
                    await conn.execute(delete(quarantine).where(quarantine.c.received_at < cutoff))
                ).rowcount
            ),
            sends=purged_sends + await _purge_leftover_sends(conn, cutoff),
        )
        await write_audit(
            conn,
            at=now,
            actor=RETENTION_ACTOR,
            action="retention_run",
            entity="retention",
            entity_id=None,
            before=None,
            after=asdict(report) | {"cutoff": cutoff.isoformat()},
            reason="retention period elapsed",
        )
    return report


async def _purge_alert(
    conn: AsyncConnection,
    alert_id: str,
    document: dict[str, Any],
    content_hash: str,
    cutoff: datetime,
    now: datetime,
) -> int:
    """Purge the alert and its sends' copies of it; the number of sends purged."""
    await conn.execute(
        update(alerts)
        .where(alerts.c.id == alert_id)
        .values(document=purged_document(alert_id, document), headline=None, purged_at=now)
    )
    emptied = await conn.execute(
        update(sends).where(sends.c.alert_id == alert_id, _send_has_content()).values(**PURGED_SEND)
    )
    await write_audit(
        conn,
        at=now,
        actor=RETENTION_ACTOR,
        action="purge",
        entity="alert",
        entity_id=alert_id,
        before={"contentHash": content_hash},
        after={"purged": True},
        reason=f"received before {cutoff.isoformat()} and not revalidated since",
    )
    return int(emptied.rowcount)


PURGED_SEND = {"body": b"", "headline": None}
"""A purged send: its alert's bytes and headline gone, as a purged payload's and alert's."""


def _send_has_content() -> Any:
    return or_(sends.c.body != b"", sends.c.headline.is_not(None))


def _leftover_send(cutoff: datetime) -> Any:
    """A send holding content no alert keeps: its alert was purged (by a run before sends were
    purged with their alert), or it never became an alert and was made before `cutoff`."""
    stored = exists().where(alerts.c.id == sends.c.alert_id)
    return or_(
        exists().where(alerts.c.id == sends.c.alert_id, alerts.c.purged_at.is_not(None)),
        and_(~stored, sends.c.created_at < cutoff, sends.c.state.in_(FINISHED_SENDS)),
    )


async def _purge_leftover_sends(conn: AsyncConnection, cutoff: datetime) -> int:
    result = await conn.execute(
        update(sends).where(_send_has_content(), _leftover_send(cutoff)).values(**PURGED_SEND)
    )
    return int(result.rowcount)


def _payload_still_needed() -> Any:
    return exists().where(
        alerts.c.payload_sha256 == payloads.c.sha256, alerts.c.purged_at.is_(None)
    )


async def _purge_payloads(conn: AsyncConnection, cutoff: datetime, now: datetime) -> int:
    result = await conn.execute(
        update(payloads)
        .where(
            payloads.c.received_at < cutoff,
            payloads.c.purged_at.is_(None),
            ~_payload_still_needed(),
        )
        .values(body=b"", purged_at=now)
    )
    return int(result.rowcount)


async def _count(database: Database, cutoff: datetime) -> PurgeReport:
    async with database.reading() as conn:

        async def count(query: Any) -> int:
            return int(await conn.scalar(query) or 0)

        return PurgeReport(
            alerts=await count(select(func.count()).select_from(alerts).where(_due(cutoff))),
            payloads=await count(
                select(func.count())
                .select_from(payloads)
                .where(
                    payloads.c.received_at < cutoff,
                    payloads.c.purged_at.is_(None),
                    ~exists().where(
                        alerts.c.payload_sha256 == payloads.c.sha256,
                        alerts.c.purged_at.is_(None),
                        ~_due(cutoff),
                    ),
                )
            ),
            rejections=await count(
                select(func.count())
                .select_from(rejections)
                .where(rejections.c.received_at < cutoff)
            ),
            quarantined=await count(
                select(func.count())
                .select_from(quarantine)
                .where(quarantine.c.received_at < cutoff)
            ),
            sends=await count(
                select(func.count())
                .select_from(sends)
                .where(
                    _send_has_content(),
                    or_(
                        _leftover_send(cutoff),
                        exists().where(alerts.c.id == sends.c.alert_id, _due(cutoff)),
                    ),
                )
            ),
        )


async def revalidate(
    database: Database, alert_id: str, actor: Actor, reason: str, now: datetime
) -> bool:
    """Keep the alert past the retention period from now on; False if there is no such alert
    (or its content is purged already)."""
    async with database.transaction() as conn:
        result = await conn.execute(
            update(alerts)
            .where(alerts.c.id == alert_id, alerts.c.purged_at.is_(None))
            .values(revalidated_at=now)
        )
        if result.rowcount != 1:
            return False
        await write_audit(
            conn,
            at=now,
            actor=actor,
            action="revalidate",
            entity="alert",
            entity_id=alert_id,
            before=None,
            after={"revalidatedAt": now.isoformat()},
            reason=reason,
        )
    return True
