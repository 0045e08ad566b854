"""The audit log: who changed what, when, with the entity before and after. Append-only: the
API can only read it, and database triggers refuse UPDATE and DELETE."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from dissemination.store.database import Database
from dissemination.store.tables import audit_log


@dataclass(frozen=True, slots=True)
class Actor:
    """Who acted: an API token (id and name), a staff account signed in (its id and
    username), or a CLI operator (id None). `account_id`: the staff account behind the
    token or session, if any."""

    id: str | None
    name: str
    account_id: str | None = None


async def write_audit(
    conn: AsyncConnection,
    *,
    at: datetime,
    actor: Actor,
    action: str,
    entity: str,
    entity_id: str | None,
    before: Mapping[str, Any] | None,
    after: Mapping[str, Any] | None,
    reason: str | None = None,
) -> None:
    """Append one entry inside the caller's transaction, so the change and its record commit
    together or not at all."""
    await conn.execute(
        audit_log.insert().values(
            **audit_values(
                at=at,
                actor=actor,
                action=action,
                entity=entity,
                entity_id=entity_id,
                before=before,
                after=after,
                reason=reason,
            )
        )
    )


def audit_values(
    *,
    at: datetime,
    actor: Actor,
    action: str,
    entity: str,
    entity_id: str | None,
    before: Mapping[str, Any] | None,
    after: Mapping[str, Any] | None,
    reason: str | None = None,
) -> dict[str, Any]:
    """One entry's column values (for `write_audit`, or many entries in one insert)."""
    return {
        "at": at,
        "actor_id": actor.id,
        "actor_name": actor.name,
        "action": action,
        "entity": entity,
        "entity_id": entity_id,
        "before": dict(before) if before is not None else None,
        "after": dict(after) if after is not None else None,
        "reason": reason,
    }


def _entry(row: Mapping[Any, Any]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "at": row["at"].isoformat(),
        "actor": {"id": row["actor_id"], "name": row["actor_name"]},
        "action": row["action"],
        "entity": row["entity"],
        "entityId": row["entity_id"],
        "before": row["before"],
        "after": row["after"],
        "reason": row["reason"],
    }


class AuditLog:
    """Reading the audit log, oldest first, in pages."""

    def __init__(self, database: Database) -> None:
        self.database = database

    async def entries(
        self,
        *,
        after_id: int = 0,
        limit: int = 100,
        entity: str | None = None,
        entity_id: str | None = None,
        actor_name: str | None = None,
        action: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> list[dict[str, Any]]:
        """Entries after `after_id`, those of one entity, actor or action and in [since,
        until) when given."""
        query = select(audit_log).where(audit_log.c.id > after_id)
        if entity is not None:
            query = query.where(audit_log.c.entity == entity)
        if entity_id is not None:
            query = query.where(audit_log.c.entity_id == entity_id)
        if actor_name is not None:
            query = query.where(audit_log.c.actor_name == actor_name)
        if action is not None:
            query = query.where(audit_log.c.action == action)
        if since is not None:
            query = query.where(audit_log.c.at >= since)
        if until is not None:
            query = query.where(audit_log.c.at < until)
        async with self.database.reading() as conn:
            rows = await conn.execute(query.order_by(audit_log.c.id).limit(limit))
            return [_entry(row) for row in rows.mappings()]
