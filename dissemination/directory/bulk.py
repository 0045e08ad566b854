"""Many directory entities of one kind created at once: one insert for the entities and one
for their audit entries, in the caller's transaction, checked as `Directory.create_in`
checks one (a stakeholder's subscriptions stay within the most allowed). Seeding a large
directory this way takes seconds where one entity at a time took minutes."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from dissemination.directory.store import (
    DEFAULT_MAX_SUBSCRIPTIONS,
    SUBSCRIPTION,
    EntitySpec,
    new_entity_values,
    record_of,
    too_many_subscriptions,
)
from dissemination.store.audit import Actor, audit_values
from dissemination.store.bulkinsert import insert_many
from dissemination.store.idsets import one_of
from dissemination.store.tables import audit_log, subscriptions


async def create_many_in(
    conn: AsyncConnection,
    spec: EntitySpec,
    many: Sequence[Mapping[str, Any]],
    actor: Actor,
    now: datetime,
    max_subscriptions: int = DEFAULT_MAX_SUBSCRIPTIONS,
) -> list[tuple[dict[str, Any], str | None]]:
    """Store new entities of `spec` (validated fields, as `Directory.create_in` takes them),
    each audited; their records and webhook secrets, in order. Nothing is stored if a
    stakeholder would have more than `max_subscriptions`."""
    if not many:
        return []
    if spec is SUBSCRIPTION:
        await _check_room(conn, [fields["stakeholderId"] for fields in many], max_subscriptions)
    made = [new_entity_values(spec, fields, now) for fields in many]
    await insert_many(conn, spec.table, [values for values, _ in made])
    records = [(record_of(spec, values), secret) for values, secret in made]
    await insert_many(
        conn,
        audit_log,
        [
            audit_values(
                at=now,
                actor=actor,
                action="create",
                entity=spec.name,
                entity_id=record["id"],
                before=None,
                after=record,
            )
            for record, _ in records
        ],
    )
    return records


async def _check_room(
    conn: AsyncConnection, stakeholder_ids: Sequence[str], max_subscriptions: int
) -> None:
    adding = Counter(stakeholder_ids)
    held: dict[str, int] = dict(
        (
            await conn.execute(
                select(subscriptions.c.stakeholder_id, func.count())
                .where(one_of(conn.dialect.name, subscriptions.c.stakeholder_id, adding))
                .group_by(subscriptions.c.stakeholder_id)
            )
        ).all()
    )
    for stakeholder_id, count in adding.items():
        existing = held.get(stakeholder_id, 0)
        if existing + count > max_subscriptions:
            raise too_many_subscriptions(existing, count)
