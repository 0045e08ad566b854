"""The most recently received alerts as their stored payloads, for previews that run the
service's own parsing and matching over them (a rule editor asking which recent alerts a
rule would have matched). Purged alerts and payloads are left out."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select

from dissemination.ledger.alerts import Payload
from dissemination.store.database import Database
from dissemination.store.tables import alerts, payloads


@dataclass(frozen=True, slots=True)
class StoredAlert:
    """An alert's id, when it was received, and the payload it came in."""

    id: str
    received_at: datetime
    payload: Payload


async def recent_alerts(database: Database, limit: int) -> list[StoredAlert]:
    """Up to `limit` alerts, newest first (by time received)."""
    query = (
        select(alerts.c.id, alerts.c.received_at, payloads.c.body, payloads.c.content_type)
        .join(payloads, payloads.c.sha256 == alerts.c.payload_sha256)
        .where(alerts.c.purged_at.is_(None), payloads.c.purged_at.is_(None))
        .order_by(alerts.c.received_at.desc(), alerts.c.id.desc())
        .limit(limit)
    )
    async with database.reading() as conn:
        return [
            StoredAlert(row.id, row.received_at, Payload(bytes(row.body), row.content_type))
            for row in await conn.execute(query)
        ]
