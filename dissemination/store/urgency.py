"""Which stored alerts are imminent threats (`core.alert.document_is_urgent`), for the steps
that publish rows of alerts stored earlier (an approval's release, an escalation step), so
those rows go onto the urgent queues as the alert's first ones did."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from core.alert import document_is_urgent
from dissemination.store.tables import alerts


async def urgent_alerts(conn: AsyncConnection, alert_ids: Iterable[str]) -> set[str]:
    """The ids among `alert_ids` of stored alerts that are urgent."""
    wanted = set(alert_ids)
    if not wanted:
        return set()
    found = await conn.execute(
        select(alerts.c.id, alerts.c.document).where(alerts.c.id.in_(wanted))
    )
    return {str(alert_id) for alert_id, document in found if document_is_urgent(document)}


async def alert_is_urgent(conn: AsyncConnection, alert_id: str) -> bool:
    """Whether the stored alert `alert_id` is urgent."""
    return alert_id in await urgent_alerts(conn, [alert_id])
