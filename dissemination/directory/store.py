"""The directory in the database: stakeholders, contacts and subscriptions, with every change
audited in the same transaction. Entities are handled alike through an EntitySpec that maps
API field names to columns."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Table, delete, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from channels.webhook import new_secret as new_webhook_secret
from core.errors import ErrorDetail, RejectedInput
from dissemination.directory.lists import drop_member_everywhere
from dissemination.store.audit import Actor, write_audit
from dissemination.store.database import Database
from dissemination.store.tables import contacts, escalation_policies, stakeholders, subscriptions
from subscriptions.model import MemberKind


@dataclass(frozen=True, slots=True)
class EntitySpec:
    """How one kind of directory entity maps between its API fields and its table."""

    name: str
    table: Table
    fields: Mapping[str, str]
    filters: Mapping[str, str]


STAKEHOLDER = EntitySpec(
    "stakeholder",
    stakeholders,
    {
        "name": "name",
        "organization": "organization",
        "sector": "sector",
        "kind": "kind",
        "jurisdiction": "jurisdiction",
        "clearance": "clearance",
        "timezone": "timezone",
        "quietHours": "quiet_hours",
        "active": "active",
    },
    {"organization": "organization", "sector": "sector", "kind": "kind", "active": "active"},
)
CONTACT = EntitySpec(
    "contact",
    contacts,
    {
        "stakeholderId": "stakeholder_id",
        "channel": "channel",
        "address": "address",
        "label": "label",
        "active": "active",
    },
    {"stakeholderId": "stakeholder_id", "channel": "channel", "active": "active"},
)
SUBSCRIPTION = EntitySpec(
    "subscription",
    subscriptions,
    {
        "stakeholderId": "stakeholder_id",
        "rule": "rule",
        "channels": "channels",
        "ackRequired": "ack_required",
        "escalationId": "escalation_id",
        "enabled": "enabled",
        "includeExercises": "include_exercises",
    },
    {"stakeholderId": "stakeholder_id", "enabled": "enabled"},
)

ESCALATION = EntitySpec(
    "escalation",
    escalation_policies,
    {"name": "name", "steps": "steps"},
    {"name": "name"},
)


def fields_of(spec: EntitySpec, row: Mapping[Any, Any], prefix: str = "") -> dict[str, Any]:
    """The API representation of a row without its times: what the entity's model is made
    from. `prefix` is that of the row's column names (a row read joined to others)."""
    record: dict[str, Any] = {"id": row[prefix + "id"]}
    record.update({field: row[prefix + column] for field, column in spec.fields.items()})
    return record


def record_of(spec: EntitySpec, row: Mapping[Any, Any]) -> dict[str, Any]:
    """The API representation of a row (never its secret)."""
    record = fields_of(spec, row)
    record["createdAt"] = row["created_at"].isoformat()
    record["updatedAt"] = row["updated_at"].isoformat()
    return record


async def deactivate_contact(
    conn: AsyncConnection, contact_id: str, actor: Actor, reason: str, now: datetime
) -> None:
    """Deactivate a contact (one that said it is gone), audited like any directory change,
    which is also how every instance's matcher learns of it. Nothing if it is gone or
    inactive already."""
    row = (
        (await conn.execute(select(contacts).where(contacts.c.id == contact_id))).mappings().first()
    )
    if row is None or not row["active"]:
        return
    await conn.execute(
        update(contacts).where(contacts.c.id == contact_id).values(active=False, updated_at=now)
    )
    before = record_of(CONTACT, row)
    await write_audit(
        conn,
        at=now,
        actor=actor,
        action="update",
        entity=CONTACT.name,
        entity_id=contact_id,
        before=before,
        after=before | {"active": False, "updatedAt": now.isoformat()},
        reason=reason,
    )


async def first_active_contact(
    conn: AsyncConnection, stakeholder_id: str, channel: str
) -> Mapping[str, Any] | None:
    """The stakeholder's oldest active contact on `channel` (its id and address), if any."""
    result = await conn.execute(
        select(contacts.c.id, contacts.c.address)
        .where(
            contacts.c.stakeholder_id == stakeholder_id,
            contacts.c.channel == channel,
            contacts.c.active.is_(True),
        )
        .order_by(contacts.c.created_at, contacts.c.id)
        .limit(1)
    )
    found = result.mappings().first()
    return None if found is None else dict(found)


def _columns(spec: EntitySpec, fields: Mapping[str, Any]) -> dict[str, Any]:
    return {spec.fields[name]: value for name, value in fields.items()}


def new_entity_values(
    spec: EntitySpec, fields: Mapping[str, Any], now: datetime
) -> tuple[dict[str, Any], str | None]:
    """A new entity's column values under a new id, and a webhook contact's new signing
    secret (None for anything else)."""
    values = _columns(spec, fields) | {
        "id": str(uuid.uuid4()),
        "created_at": now,
        "updated_at": now,
    }
    secret = None
    if spec is CONTACT:  # every contact row has the column, so that many go in one insert
        secret = new_webhook_secret() if fields["channel"] == "webhook" else None
        values["secret"] = secret
    return values, secret


@dataclass(frozen=True, slots=True)
class Page:
    items: list[dict[str, Any]]
    next_cursor: str | None


DEFAULT_MAX_SUBSCRIPTIONS = 250


def too_many_subscriptions(count: int, adding: int = 1) -> RejectedInput:
    """The refusal of `adding` subscriptions to a stakeholder that has `count` and would then
    have more than allowed."""
    if adding == 1:
        told = f"the stakeholder has {count} subscriptions, the most allowed"
    else:
        told = f"the stakeholder has {count} subscriptions and {adding} more is over the most"
    return RejectedInput(
        "too_many_subscriptions",
        [ErrorDetail("$.stakeholderId", f"{told} (service.max_subscriptions_per_stakeholder)")],
    )


class Directory:
    """Create, read, list, update and delete directory entities, auditing every change.
    A stakeholder has at most `max_subscriptions` subscriptions."""

    def __init__(self, database: Database, max_subscriptions: int = DEFAULT_MAX_SUBSCRIPTIONS):
        self.database = database
        self.max_subscriptions = max_subscriptions

    async def create(
        self, spec: EntitySpec, fields: Mapping[str, Any], actor: Actor, now: datetime
    ) -> tuple[dict[str, Any], str | None]:
        """Store a new entity; returns its record and, for a webhook contact, its signing
        secret (shown to the caller once, never again)."""
        async with self.database.transaction() as conn:
            return await self.create_in(conn, spec, fields, actor, now)

    async def create_in(
        self,
        conn: AsyncConnection,
        spec: EntitySpec,
        fields: Mapping[str, Any],
        actor: Actor,
        now: datetime,
    ) -> tuple[dict[str, Any], str | None]:
        if spec is SUBSCRIPTION:
            await self._check_room(conn, fields["stakeholderId"])
        values, secret = new_entity_values(spec, fields, now)
        entity_id = values["id"]
        await conn.execute(spec.table.insert().values(**values))
        record = record_of(spec, values)
        await write_audit(
            conn,
            at=now,
            actor=actor,
            action="create",
            entity=spec.name,
            entity_id=entity_id,
            before=None,
            after=record,
        )
        return record, secret

    async def _check_room(self, conn: AsyncConnection, stakeholder_id: str) -> None:
        """RejectedInput when the stakeholder already has the most subscriptions allowed."""
        count = await conn.scalar(
            select(func.count())
            .select_from(subscriptions)
            .where(subscriptions.c.stakeholder_id == stakeholder_id)
        )
        if (count or 0) >= self.max_subscriptions:
            raise too_many_subscriptions(count or 0)

    async def get(self, spec: EntitySpec, entity_id: str) -> dict[str, Any] | None:
        async with self.database.reading() as conn:
            row = (
                (await conn.execute(select(spec.table).where(spec.table.c.id == entity_id)))
                .mappings()
                .first()
            )
        return record_of(spec, row) if row else None

    async def page(
        self,
        spec: EntitySpec,
        filters: Mapping[str, Any],
        after: str | None = None,
        limit: int = 100,
    ) -> Page:
        """A page of records ordered by id; `after` is the cursor from the previous page."""
        query = select(spec.table)
        for name, value in filters.items():
            query = query.where(spec.table.c[spec.filters[name]] == value)
        if after:
            query = query.where(spec.table.c.id > after)
        async with self.database.reading() as conn:
            rows = list(
                (await conn.execute(query.order_by(spec.table.c.id).limit(limit + 1))).mappings()
            )
        items = [record_of(spec, row) for row in rows[:limit]]
        return Page(items, items[-1]["id"] if len(rows) > limit else None)

    async def search(
        self, spec: EntitySpec, columns: tuple[str, ...], text: str, limit: int = 100
    ) -> list[dict[str, Any]]:
        """Records whose `columns` (field names) contain `text`, case-insensitively, by id."""
        pattern = (
            "%" + text.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        )
        matches = [
            func.lower(spec.table.c[spec.fields[name]]).like(pattern, escape="\\")
            for name in columns
        ]
        query = select(spec.table).where(or_(*matches)).order_by(spec.table.c.id).limit(limit)
        async with self.database.reading() as conn:
            return [record_of(spec, row) for row in (await conn.execute(query)).mappings()]

    async def all(self, spec: EntitySpec) -> list[dict[str, Any]]:
        async with self.database.reading() as conn:
            rows = await conn.execute(select(spec.table).order_by(spec.table.c.id))
            return [record_of(spec, row) for row in rows.mappings()]

    async def update(
        self,
        spec: EntitySpec,
        entity_id: str,
        fields: Mapping[str, Any],
        actor: Actor,
        now: datetime,
    ) -> dict[str, Any] | None:
        """Replace the entity's fields; returns the new record, or None if there is none."""
        async with self.database.transaction() as conn:
            table = spec.table
            row = (
                (await conn.execute(select(table).where(table.c.id == entity_id)))
                .mappings()
                .first()
            )
            if row is None:
                return None
            before = record_of(spec, row)
            values = _columns(spec, fields) | {"updated_at": now}
            await conn.execute(update(table).where(table.c.id == entity_id).values(**values))
            after = record_of(spec, dict(row) | values)
            await write_audit(
                conn,
                at=now,
                actor=actor,
                action="update",
                entity=spec.name,
                entity_id=entity_id,
                before=before,
                after=after,
            )
            return after

    async def delete(
        self, spec: EntitySpec, entity_id: str, actor: Actor, now: datetime
    ) -> list[tuple[EntitySpec, str]] | None:
        """Delete the entity (a stakeholder takes its contacts and subscriptions with it, and
        leaves the distribution lists it was in); returns what was deleted, children first, or
        None if there was no such entity."""
        async with self.database.transaction() as conn:
            table = spec.table
            row = (
                (await conn.execute(select(table).where(table.c.id == entity_id)))
                .mappings()
                .first()
            )
            if row is None:
                return None
            before = record_of(spec, row)
            deleted: list[tuple[EntitySpec, str]] = []
            if spec is STAKEHOLDER:
                for child in (CONTACT, SUBSCRIPTION):
                    ids = await self._delete_children(conn, child, entity_id, actor, now)
                    deleted += [(child, child_id) for child_id in ids]
                await drop_member_everywhere(conn, MemberKind.STAKEHOLDER, entity_id, actor, now)
            await conn.execute(delete(table).where(table.c.id == entity_id))
            await write_audit(
                conn,
                at=now,
                actor=actor,
                action="delete",
                entity=spec.name,
                entity_id=entity_id,
                before=before,
                after=None,
            )
            return [*deleted, (spec, entity_id)]

    async def _delete_children(
        self,
        conn: AsyncConnection,
        spec: EntitySpec,
        stakeholder_id: str,
        actor: Actor,
        now: datetime,
    ) -> list[str]:
        table = spec.table
        rows = list(
            (
                await conn.execute(select(table).where(table.c.stakeholder_id == stakeholder_id))
            ).mappings()
        )
        for row in rows:
            await write_audit(
                conn,
                at=now,
                actor=actor,
                action="delete",
                entity=spec.name,
                entity_id=row["id"],
                before=record_of(spec, row),
                after=None,
            )
        await conn.execute(delete(table).where(table.c.stakeholder_id == stakeholder_id))
        return [row["id"] for row in rows]

    async def webhook_secret(self, contact_id: str) -> str | None:
        async with self.database.reading() as conn:
            value = await conn.scalar(select(contacts.c.secret).where(contacts.c.id == contact_id))
            return str(value) if value is not None else None

    async def exists(self, spec: EntitySpec, entity_id: str) -> bool:
        async with self.database.reading() as conn:
            found = await conn.scalar(select(spec.table.c.id).where(spec.table.c.id == entity_id))
            return found is not None
