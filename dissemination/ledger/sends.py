"""Ad-hoc sends in the store: an analyst's alert with the audience it names, from the moment
it is accepted (scheduled, or due at once) until it is released onto the inbound exchange, and
afterwards, so intake plans the alert, its redeliveries and its Updates and Cancels for that
audience (`audiences_for`). Every step is audited in the transaction that takes it.

States: scheduled -> releasing (claimed, with a lease) -> released; scheduled -> cancelled.
A claim is a compare-and-set on the state, so two instances never both release a send; a
release whose instance died is claimed again once its lease runs out (the ledger makes the
second publication a duplicate).

Audit entries name the send's alert by id (and, at `create`, its marks), never its headline or
content: the audit log is append-only, so what it holds outlives retention, which empties a
purged alert's sends (`controls.retention`)."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import and_, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from core.alert import Alert, MsgType
from dissemination.ledger.alerts import Payload, resolve_reference
from dissemination.store.audit import Actor, write_audit
from dissemination.store.database import Database
from dissemination.store.tables import sends
from subscriptions.audience import Audience

RELEASE_LEASE = timedelta(minutes=2)
"""How long a claimed release may take before another instance may claim it again."""

SCHEDULER = Actor(None, "scheduler")
"""Who the audit log names for a scheduled send's release."""


class SendState(StrEnum):
    SCHEDULED = "scheduled"
    RELEASING = "releasing"
    RELEASED = "released"
    CANCELLED = "cancelled"


@dataclass(frozen=True, slots=True)
class NewSend:
    """An accepted send: the alert (validated, as it will be published), its audience, when it
    is due, and who submitted it (`submitted_by` is the principal approval compares)."""

    id: str
    alert: Alert
    payload: Payload
    audience: Audience
    send_at: datetime
    submitted_by: str | None
    submitter: Actor


@dataclass(frozen=True, slots=True)
class Release:
    """What a claimed send publishes."""

    id: str
    alert_id: str
    routing_key: str
    payload: Payload
    submitted_by: str | None


@dataclass(frozen=True, slots=True)
class SendPage:
    items: list[dict[str, Any]]
    next_cursor: str | None


class NotCancellable(Exception):
    """The send is no longer scheduled: it was released or cancelled already."""

    def __init__(self, state: str) -> None:
        super().__init__(f"the send is {state}: only a scheduled send can be cancelled")
        self.state = state


AUDIT_LEAVES_OUT = ("headline",)
"""What of a send's view its audit entries leave out: the alert's content."""


def audited(record: dict[str, Any]) -> dict[str, Any]:
    """A send as its audit entries record it: its view without the alert's content."""
    return {key: value for key, value in record.items() if key not in AUDIT_LEAVES_OUT}


def marks(alert: Alert) -> dict[str, Any]:
    """The alert's marks as the API shows them (and the audit redacts by them)."""
    return {"tlp": alert.handling.tlp.value, "caveats": list(alert.handling.caveats)}


def view(row: Any) -> dict[str, Any]:
    """A send as the API shows it (without the alert's bytes)."""
    released = row["released_at"]
    return {
        "id": row["id"],
        "alertId": row["alert_id"],
        "sender": row["sender"],
        "kind": row["kind"],
        "headline": row["headline"],
        "audience": row["audience"],
        "state": row["state"],
        "sendAt": row["send_at"].isoformat(),
        "submittedBy": row["submitter_name"],
        "createdAt": row["created_at"].isoformat(),
        "releasedAt": released.isoformat() if released else None,
    }


class Sends:
    """Reads and writes of the sends table."""

    def __init__(self, database: Database) -> None:
        self.database = database

    async def create(self, new: NewSend, now: datetime) -> dict[str, Any]:
        alert = new.alert
        values = {
            "id": new.id,
            "alert_id": alert.id,
            "sender": alert.sender,
            "kind": alert.kind.value,
            "routing_key": f"{alert.kind.value}.{alert.msg_type.value.lower()}",
            "headline": alert.headline,
            "audience": new.audience.to_json(),
            "content_type": new.payload.content_type,
            "body": new.payload.body,
            "state": SendState.SCHEDULED.value,
            "send_at": new.send_at,
            "submitted_by": new.submitted_by,
            "submitter_name": new.submitter.name,
            "created_at": now,
            "updated_at": now,
            "released_at": None,
        }
        record = view(values)
        async with self.database.transaction() as conn:
            await conn.execute(sends.insert().values(**values))
            after = audited(record) | {"handling": marks(alert)}
            await self._audit(conn, new.submitter, "create", new.id, None, after, now)
        return record

    async def get(self, send_id: str) -> dict[str, Any] | None:
        async with self.database.reading() as conn:
            row = (await conn.execute(select(sends).where(sends.c.id == send_id))).mappings()
            found = row.first()
        return view(found) if found else None

    async def page(self, after: str | None, limit: int, state: str | None) -> SendPage:
        """Sends ordered by id; `after` is the previous page's cursor."""
        query = select(sends)
        if after:
            query = query.where(sends.c.id > after)
        if state:
            query = query.where(sends.c.state == state)
        async with self.database.reading() as conn:
            rows = list(
                (await conn.execute(query.order_by(sends.c.id).limit(limit + 1))).mappings()
            )
        items = [view(row) for row in rows[:limit]]
        return SendPage(items, items[-1]["id"] if len(rows) > limit else None)

    async def cancel(self, send_id: str, actor: Actor, now: datetime) -> dict[str, Any] | None:
        """Cancel a scheduled send (None if there is none; NotCancellable once released)."""
        async with self.database.transaction() as conn:
            done = await conn.execute(
                update(sends)
                .where(sends.c.id == send_id, sends.c.state == SendState.SCHEDULED.value)
                .values(state=SendState.CANCELLED.value, updated_at=now)
            )
            row = (await conn.execute(select(sends).where(sends.c.id == send_id))).mappings()
            found = row.first()
            if found is None:
                return None
            if done.rowcount != 1:
                raise NotCancellable(found["state"])
            record = view(found)
            after = audited(record)
            before = after | {"state": SendState.SCHEDULED.value}
            await self._audit(conn, actor, "cancel", send_id, before, after, now)
        return record

    async def due(self, now: datetime, limit: int = 100) -> list[str]:
        """Sends due for release: scheduled and due, or claimed by a release whose lease ran
        out."""
        async with self.database.reading() as conn:
            return list(
                await conn.scalars(
                    select(sends.c.id)
                    .where(_claimable(now), sends.c.send_at <= now)
                    .order_by(sends.c.send_at, sends.c.id)
                    .limit(limit)
                )
            )

    async def claim(self, send_id: str, now: datetime) -> Release | None:
        """Claim the send for release (compare-and-set), or None if another instance has it,
        it was released or cancelled, or it is not due."""
        async with self.database.transaction() as conn:
            claimed = await conn.execute(
                update(sends)
                .where(sends.c.id == send_id, sends.c.send_at <= now, _claimable(now))
                .values(
                    state=SendState.RELEASING.value,
                    claimed_until=now + RELEASE_LEASE,
                    updated_at=now,
                )
            )
            if claimed.rowcount != 1:
                return None
            row = (await conn.execute(select(sends).where(sends.c.id == send_id))).mappings()
            found = row.one()
        return Release(
            found["id"],
            found["alert_id"],
            found["routing_key"],
            Payload(found["body"], found["content_type"]),
            found["submitted_by"],
        )

    async def released(self, release: Release, actor: Actor, now: datetime) -> None:
        """The claimed send is on the inbound exchange (confirmed): record it, audited."""
        async with self.database.transaction() as conn:
            await conn.execute(
                update(sends)
                .where(sends.c.id == release.id)
                .values(
                    state=SendState.RELEASED.value,
                    claimed_until=None,
                    released_at=now,
                    updated_at=now,
                )
            )
            after = {"state": SendState.RELEASED.value, "alertId": release.alert_id}
            await self._audit(conn, actor, "release", release.id, None, after, now)

    async def unclaim(self, release: Release, now: datetime) -> None:
        """The publication failed: the send is scheduled again, due at once."""
        async with self.database.transaction() as conn:
            await conn.execute(
                update(sends)
                .where(sends.c.id == release.id, sends.c.state == SendState.RELEASING.value)
                .values(state=SendState.SCHEDULED.value, claimed_until=None, updated_at=now)
            )

    async def payloads(self, send_ids: list[str]) -> dict[str, Payload]:
        """The alerts the sends publish, as stored, by send id."""
        async with self.database.reading() as conn:
            rows = await conn.execute(
                select(sends.c.id, sends.c.body, sends.c.content_type).where(
                    sends.c.id.in_(send_ids)
                )
            )
            return {row.id: Payload(bytes(row.body), row.content_type) for row in rows}

    async def audit_dry_run(self, actor: Actor, summary: dict[str, Any], now: datetime) -> None:
        """A dry run discloses recipients and addresses: who asked is recorded."""
        async with self.database.transaction() as conn:
            await self._audit(conn, actor, "dry_run", None, None, summary, now)

    async def audiences_for(self, alert: Alert, send_id: str | None) -> tuple[Audience, ...] | None:
        """Whom intake plans the alert for: the audience of the send it was released by; for
        an Update or Cancel of ad-hoc alerts, their audiences (it reaches the same people,
        and their earlier recipients as any Update does); None for the standing
        subscriptions. A send id that does not name this alert's send reaches nobody."""
        follows = alert.msg_type in (MsgType.UPDATE, MsgType.CANCEL) and bool(alert.references)
        if send_id is None and not follows:
            return None
        async with self.database.reading() as conn:
            if send_id is None:
                found = {i for ref in alert.references for i in await resolve_reference(conn, ref)}
                return await referenced_audiences(conn, found)
            row = (
                await conn.execute(
                    select(sends.c.id, sends.c.audience).where(
                        sends.c.id == send_id, sends.c.alert_id == alert.id
                    )
                )
            ).first()
            return () if row is None else (Audience.from_json(row.id, row.audience),)

    async def _audit(
        self,
        conn: AsyncConnection,
        actor: Actor,
        action: str,
        send_id: str | None,
        before: dict[str, Any] | None,
        after: dict[str, Any] | None,
        now: datetime,
    ) -> None:
        await write_audit(
            conn,
            at=now,
            actor=actor,
            action=action,
            entity="send",
            entity_id=send_id,
            before=before,
            after=after,
        )


def _claimable(now: datetime) -> Any:
    return or_(
        sends.c.state == SendState.SCHEDULED.value,
        and_(sends.c.state == SendState.RELEASING.value, sends.c.claimed_until < now),
    )


async def referenced_audiences(
    conn: AsyncConnection, alert_ids: Collection[str]
) -> tuple[Audience, ...] | None:
    """The audiences of the released ad-hoc sends of the stored alerts `alert_ids` (those an
    Update or Cancel refers to); None if there are none. Read on `conn`: intake reads them
    again in the transaction that stores the Update, if its references resolve to other
    alerts there (`intake.pipeline`)."""
    if not alert_ids:
        return None
    rows: Sequence[Any] = (
        await conn.execute(
            select(sends.c.id, sends.c.audience)
            .where(
                sends.c.alert_id.in_(alert_ids),
                sends.c.state.in_((SendState.RELEASING.value, SendState.RELEASED.value)),
            )
            .order_by(sends.c.id)
        )
    ).all()
    return tuple(Audience.from_json(row.id, row.audience) for row in rows) or None
