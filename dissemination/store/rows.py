"""Ledger rows: the states an alert and a delivery row can be in, where a row comes from, a
row as planned, and every state transition of a delivery row. No other module writes the
`state` of a `deliveries` row; each transition below moves rows forward only, from the
states it names, so a late or repeated writer changes nothing.

    planned ──> pending ──claim──> sending ──settle──> sent ──status──> delivered | failed
       │          ^  │                 │  └──────────> failed | withheld | suppressed
       │          │  │                 └──retry──> pending (not_before)
       │          │  └──Cancel, escalation acknowledged, alert expired──> suppressed
       ├──> held ─┴─approve            (held ──reject, Cancel──> suppressed)
       └──> withheld
    sending, stuck after a crash ──> pending (resent once, flagged) ──stuck again──> failed

A provider may report a message's fate before its send is recorded (Twilio's status callback
overtaking its API response): no row carries the provider id yet, so the status is kept in
`provider_statuses` and the settle that records the send applies it in the same transaction,
taking the row from `sending` through `sent` to `delivered` or `failed` at once.

The module is longer than the ~400 lines a module should be, on purpose: the vocabulary and
every transition stay together, so that one file answers how a row can move.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    CTE,
    ColumnElement,
    and_,
    any_,
    bindparam,
    delete,
    func,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection

from channels.base import ChannelName
from core.ids import uuid5_text
from dissemination.store.bulkinsert import ARRAYS_FROM, insert_as_arrays
from dissemination.store.database import Database, insert_ignoring_conflicts
from dissemination.store.idsets import one_of
from dissemination.store.locks import lock_all, lock_key
from dissemination.store.tables import UtcDateTime, alerts, deliveries, provider_statuses
from subscriptions.model import Stakeholder

DELIVERY_ID_NAMESPACE = uuid.UUID("5b0f7c2e-3a7d-5e61-9c4b-0d2e8f1a6b73")


class DeliveryState(StrEnum):
    """A delivery row's state; it only moves forward (the transitions below). `held` rows wait
    for a second administrator's approval (`dissemination.controls.approval`)."""

    PENDING = "pending"
    HELD = "held"
    SENDING = "sending"
    SENT = "sent"
    DELIVERED = "delivered"
    FAILED = "failed"
    WITHHELD = "withheld"
    SUPPRESSED = "suppressed"


OWING_STATES = frozenset({DeliveryState.PENDING.value, DeliveryState.HELD.value})
"""States of a row that will be sent (held ones once approved): it owes an acknowledgment."""
REACHED_STATES = frozenset({DeliveryState.SENT.value, DeliveryState.DELIVERED.value})
"""States of a row whose message reached the provider."""


class RowOrigin(StrEnum):
    """Why a delivery row exists."""

    MATCH = "match"  # a subscription matched the alert
    AUDIENCE = "audience"  # named in the audience of an ad-hoc send
    REFERENCED = "referenced"  # an earlier recipient of the alert an Update or Cancel refers to
    FALLBACK = "fallback"  # the previous channel of the subscription failed
    ESCALATION = "escalation"  # an escalation step resent the alert
    NOTICE = "notice"  # a supervisor told that someone has not acknowledged
    IMMINENT_DANGER = "imminent_danger"  # an administrator released it outside the rules


ALERT_ORIGINS = frozenset(
    {RowOrigin.MATCH, RowOrigin.REFERENCED, RowOrigin.FALLBACK, RowOrigin.ESCALATION}
)
"""Origins of rows that carry the alert itself to a recipient it was planned for."""


def delivery_id(alert_id: str, stakeholder_id: str, channel: str, address: str) -> str:
    """Stable row id: re-planning the same alert yields the same ids, so nothing doubles."""
    return uuid5_text(DELIVERY_ID_NAMESPACE, f"{alert_id}|{stakeholder_id}|{channel}|{address}")


@dataclass(frozen=True, slots=True)
class PlannedRow:
    """One delivery row as planned, before it is written."""

    stakeholder_id: str
    subscription_id: str | None
    contact_id: str | None
    channel: str
    address: str
    state: DeliveryState
    reason: str | None = None
    detail: str | None = None
    fallback_channels: tuple[str, ...] = ()
    ack_required: bool = False
    subscriptions: tuple[str, ...] = field(default=())
    origin: RowOrigin = RowOrigin.MATCH
    not_before: datetime | None = None
    row_id: str | None = None
    """An id other than the planned one (an escalation step's or a release's row)."""

    def key(self) -> tuple[str, str, str]:
        return (self.stakeholder_id, self.channel, self.address)

    def values(self, alert_id: str, now: datetime) -> dict[str, Any]:
        """Column values for the deliveries table."""
        row_id = self.row_id or delivery_id(
            alert_id, self.stakeholder_id, self.channel, self.address
        )
        return {
            "id": row_id,
            "alert_id": alert_id,
            "stakeholder_id": self.stakeholder_id,
            "subscription_id": self.subscription_id,
            "contact_id": self.contact_id,
            "channel": self.channel,
            "address": self.address,
            "state": self.state.value,
            "reason": self.reason,
            "detail": self.detail,
            "attempts": 0,
            "fallback_channels": list(self.fallback_channels),
            "ack_required": self.ack_required,
            "subscriptions": list(self.subscriptions),
            "origin": self.origin.value,
            "resent": False,
            "not_before": self.not_before,
            "created_at": now,
            "updated_at": now,
        }


class AlertState(StrEnum):
    """Where an alert stands; `received` alerts go on to matching and delivery."""

    RECEIVED = "received"
    PLANNED = "planned"
    EXPIRED = "expired"
    DRAFT = "draft"


def held(row: PlannedRow) -> PlannedRow:
    """A pending row of an alert held for approval: written `held`, sent once approved."""
    if row.state is not DeliveryState.PENDING:
        return row
    return replace(row, state=DeliveryState.HELD)


CLAIMED_COLUMNS = (
    "id",
    "alert_id",
    "stakeholder_id",
    "subscription_id",
    "contact_id",
    "channel",
    "address",
    "attempts",
    "origin",
    "detail",
    "fallback_channels",
    "ack_required",
    "subscriptions",
    "resent",
)
"""The columns of `deliveries` a claim reads back (`ClaimedRow.from_record`): its state,
times and provider id are known, or not needed, to send it."""


@dataclass(frozen=True, slots=True)
class ClaimedRow:
    """A delivery row claimed for sending (now in `sending`), with what sending it needs: the
    contact's signing secret, an SMS opt-out, the acknowledgment token the row carries, the
    alert's stored document, and the stakeholder as they are now (None if removed)."""

    id: str
    alert_id: str
    stakeholder_id: str
    subscription_id: str | None
    contact_id: str | None
    channel: str
    address: str
    attempts: int
    origin: RowOrigin
    detail: str | None
    fallback_channels: tuple[str, ...]
    ack_required: bool
    subscriptions: tuple[str, ...]
    resent: bool
    document: dict[str, Any]
    stakeholder: Stakeholder | None
    secret: str | None = None
    opted_out: str | None = None
    ack_token_id: str | None = None
    ack_code: str | None = None
    ack_expires_at: datetime | None = None

    @classmethod
    def from_record(
        cls, record: Mapping[str, Any], document: dict[str, Any], stakeholder: Stakeholder | None
    ) -> ClaimedRow:
        """A row as the claim query reads it (deliveries' columns plus `secret`,
        `opted_out`, `ack_token_id`, `ack_code`, `ack_expires_at`)."""
        return cls(
            id=record["id"],
            alert_id=record["alert_id"],
            stakeholder_id=record["stakeholder_id"],
            subscription_id=record["subscription_id"],
            contact_id=record["contact_id"],
            channel=record["channel"],
            address=record["address"],
            attempts=int(record["attempts"]),
            origin=RowOrigin(record["origin"]),
            detail=record["detail"],
            fallback_channels=tuple(record["fallback_channels"] or ()),
            ack_required=bool(record["ack_required"]),
            subscriptions=tuple(record["subscriptions"] or ()),
            resent=bool(record["resent"]),
            document=document,
            stakeholder=stakeholder,
            secret=record["secret"],
            opted_out=record["opted_out"],
            ack_token_id=record["ack_token_id"],
            ack_code=record["ack_code"],
            ack_expires_at=record["ack_expires_at"],
        )


@dataclass(frozen=True, slots=True)
class RowOutcome:
    """Where one row in `sending` goes after an attempt. PENDING means back to wait until
    `not_before` (a retry, or an open circuit, which does not count as an attempt)."""

    row_id: str
    channel: str
    state: DeliveryState
    reason: str | None
    provider_id: str | None = None
    not_before: datetime | None = None
    uncount_attempt: bool = False
    detail: str | None = None


def pending_by_channel(values: Sequence[dict[str, Any]]) -> dict[str, list[str]]:
    """The ids of the pending rows among `values`, by channel (for delivery tasks)."""
    pending: dict[str, list[str]] = {}
    for value in values:
        if value["state"] == DeliveryState.PENDING.value:
            pending.setdefault(value["channel"], []).append(value["id"])
    return pending


async def insert_planned(
    conn: AsyncConnection, database: Database, values: Sequence[dict[str, Any]]
) -> int:
    """Write planned rows (`PlannedRow.values`); a row whose id exists already is left as it
    is, so re-planning changes nothing. Returns how many were new."""
    if not values:
        return 0
    if database.dialect == "postgresql" and len(values) >= ARRAYS_FROM:
        return await insert_as_arrays(conn, deliveries, values, ignore_conflicts=True)
    statement = database.insert_ignoring_conflicts(deliveries)
    result = await conn.execute(statement, values[0] if len(values) == 1 else values)
    return int(result.rowcount or 0)


async def claim_due(conn: AsyncConnection, ids: Sequence[str], now: datetime) -> list[str]:
    """pending -> sending for the rows among `ids` whose time has come, counting an attempt;
    conditional, so two workers never both claim a row. Returns the ids claimed."""
    return list(
        await conn.scalars(
            update(deliveries)
            .where(_pending(conn, ids), _due(now))
            .values(
                state=DeliveryState.SENDING.value,
                attempts=deliveries.c.attempts + 1,
                updated_at=now,
            )
            .returning(deliveries.c.id)
        )
    )


@dataclass(frozen=True, slots=True)
class ClaimParts:
    """`suppress_expired`, `claim_due` and `waiting` as the common table expressions of one
    PostgreSQL statement (`claim_parts`): `expired` (id), `claimed` (`CLAIMED_COLUMNS`, as
    after the claim) and `waiting` (id, not_before)."""

    expired: CTE
    claimed: CTE
    waiting: CTE


def claim_parts(ids: ColumnElement[Any], now: ColumnElement[Any]) -> ClaimParts:
    """The claim's three parts for one statement on PostgreSQL, over the statement's
    parameters `ids` (an array of row ids) and `now`. Every part of a statement sees the same
    snapshot, so each takes its rows by a condition of its own that excludes the others' (a
    row must not be updated twice in one statement); together they do what the three
    functions do one after the other."""
    pending = and_(deliveries.c.id == any_(ids), state_check(DeliveryState.PENDING))
    expired_alerts = _expired_alerts(now)
    return ClaimParts(
        expired=update(deliveries)
        .where(pending, deliveries.c.alert_id.in_(expired_alerts))
        .values(state=DeliveryState.SUPPRESSED.value, reason="expired", updated_at=now)
        .returning(deliveries.c.id)
        .cte("expired"),
        claimed=update(deliveries)
        .where(pending, _due(now), deliveries.c.alert_id.not_in(expired_alerts))
        .values(
            state=DeliveryState.SENDING.value,
            attempts=deliveries.c.attempts + 1,
            updated_at=now,
        )
        .returning(*(deliveries.c[name] for name in CLAIMED_COLUMNS))
        .cte("claimed"),
        waiting=select(deliveries.c.id, deliveries.c.not_before)
        .where(pending, ~_due(now), deliveries.c.alert_id.not_in(expired_alerts))
        .cte("waiting"),
    )


def _expired_alerts(now: datetime | ColumnElement[Any]) -> Any:
    return select(alerts.c.id).where(alerts.c.expires_at.is_not(None), alerts.c.expires_at <= now)


async def suppress_expired(conn: AsyncConnection, ids: Sequence[str], now: datetime) -> list[str]:
    """pending -> suppressed (`expired`) for the rows among `ids` whose alert has expired: an
    alert is never sent after its expiry, whatever held it back (quiet hours, approval, a
    retry, an escalation step). Returns the ids it suppressed."""
    return list(
        await conn.scalars(
            update(deliveries)
            .where(_pending(conn, ids), deliveries.c.alert_id.in_(_expired_alerts(now)))
            .values(state=DeliveryState.SUPPRESSED.value, reason="expired", updated_at=now)
            .returning(deliveries.c.id)
        )
    )


async def waiting(
    conn: AsyncConnection, ids: Sequence[str], now: datetime
) -> list[tuple[str, datetime]]:
    """The pending rows among `ids` that must wait, with the time they wait for."""
    result = await conn.execute(
        select(deliveries.c.id, deliveries.c.not_before).where(_pending(conn, ids), ~_due(now))
    )
    return [(row.id, row.not_before) for row in result]


def _pending(conn: AsyncConnection, ids: Sequence[str]) -> Any:
    return _pending_any(conn.dialect.name, ids)


def _pending_any(dialect: str, ids: Sequence[str]) -> Any:
    return and_(one_of(dialect, deliveries.c.id, ids), state_check(DeliveryState.PENDING))


def state_check(state: DeliveryState) -> Any:
    """`deliveries.state = state`, written so that no index on `state` can answer it, for a
    statement that names its rows by id (a claim, a settle): the ids are what selects, the
    state only checks each row. Left indexable, PostgreSQL reads the state index whenever its
    statistics say few rows have that state, and they say so at the start of every fan-out,
    whose rows were written moments before: each claim of a few hundred rows then visited
    every pending row of the fan-out, three times (on a 10,000-row fan-out, 9,936 rows read
    and dropped per part, 20-60 ms a claim)."""
    return deliveries.c.state.concat("") == state.value


def _due(now: datetime | ColumnElement[Any]) -> Any:
    return or_(deliveries.c.not_before.is_(None), deliveries.c.not_before <= now)


async def settle_sending(
    conn: AsyncConnection, outcomes: Sequence[RowOutcome], now: datetime
) -> list[datetime]:
    """sending -> each outcome's state, in one statement for all; only from `sending`, so a late
    writer never moves a row backwards. A row sent under a provider id whose status came first
    (kept by `record_provider_status`) moves on at once to `delivered` or `failed`.

    `now` becomes the first delivery of each alert that had none and has a row sent here (a
    conditional update: of concurrent settles, one marks each alert); returns those alerts'
    receipt times."""
    if not outcomes:
        return []
    reported = [
        (o.channel, o.provider_id)
        for o in outcomes
        if o.state is DeliveryState.SENT and o.provider_id and o.channel in REPORTING_CHANNELS
    ]
    await _lock_messages(conn, reported)
    received = await _settle(conn, outcomes, now)
    await _apply_kept_statuses(conn, reported, now)
    return received


_MARK_FIRST_DELIVERY = (
    update(alerts)
    .where(
        alerts.c.id.in_(
            select(deliveries.c.alert_id).where(
                deliveries.c.id.in_(bindparam("row_ids", expanding=True)),
                deliveries.c.state == DeliveryState.SENT.value,
            )
        ),
        alerts.c.first_delivered_at.is_(None),
    )
    .values(first_delivered_at=bindparam("now", type_=UtcDateTime()))
    .returning(alerts.c.received_at)
)
"""The first-delivery mark after a settle, as a statement of its own (SQLite; built once): the
alerts of the rows among `row_ids` that are `sent`."""


SETTLE_FROM_ARRAYS = text(
    """
    WITH settled AS (
    UPDATE deliveries AS d SET
        state = u.state,
        reason = u.reason,
        provider_id = COALESCE(u.provider_id, d.provider_id),
        not_before = u.not_before,
        detail = COALESCE(u.detail, d.detail),
        attempts = d.attempts - u.uncount,
        updated_at = :now
    FROM unnest(
        CAST(:ids AS VARCHAR[]), CAST(:states AS VARCHAR[]), CAST(:reasons AS TEXT[]),
        CAST(:provider_ids AS TEXT[]), CAST(:not_befores AS TIMESTAMPTZ[]),
        CAST(:uncounts AS INTEGER[]), CAST(:details AS TEXT[])
    ) AS u(id, state, reason, provider_id, not_before, uncount, detail)
    WHERE d.id = u.id AND d.state || '' = 'sending'
    RETURNING d.alert_id, d.state
    )
    UPDATE alerts SET first_delivered_at = :now
    WHERE id IN (SELECT alert_id FROM settled WHERE state = 'sent')
        AND first_delivered_at IS NULL
    RETURNING received_at
    """
)
"""Every outcome of a settle in one statement on PostgreSQL, with the first-delivery mark of
the alerts it sends: one array per column, unnested into rows and joined to the deliveries
they settle (by id: `d.state || ''` keeps the state index out of it, as `state_check`
says)."""


async def _settle(
    conn: AsyncConnection, outcomes: Sequence[RowOutcome], now: datetime
) -> list[datetime]:
    if conn.dialect.name == "postgresql":
        return await _settle_from_arrays(conn, outcomes, now)
    await conn.execute(
        update(deliveries)
        .where(
            deliveries.c.id == bindparam("row_id"),
            state_check(DeliveryState.SENDING),
        )
        .values(
            state=bindparam("new_state"),
            reason=bindparam("new_reason"),
            provider_id=func.coalesce(bindparam("new_provider_id"), deliveries.c.provider_id),
            not_before=bindparam("new_not_before"),
            detail=func.coalesce(bindparam("new_detail"), deliveries.c.detail),
            attempts=deliveries.c.attempts - bindparam("uncount"),
            updated_at=now,
        ),
        [
            {
                "row_id": o.row_id,
                "new_state": o.state.value,
                "new_reason": o.reason,
                "new_provider_id": o.provider_id,
                "new_not_before": o.not_before,
                "uncount": int(o.uncount_attempt),
                "new_detail": o.detail,
            }
            for o in outcomes
        ],
    )
    sent = sorted({o.row_id for o in outcomes if o.state is DeliveryState.SENT})
    if not sent:
        return []
    marked = await conn.execute(_MARK_FIRST_DELIVERY, {"row_ids": sent, "now": now})
    return [received_at for (received_at,) in marked]


async def _settle_from_arrays(
    conn: AsyncConnection, outcomes: Sequence[RowOutcome], now: datetime
) -> list[datetime]:
    # A row settled twice in one batch keeps its first outcome, as one statement per outcome
    # would (the second finds it no longer `sending`).
    first = list({o.row_id: o for o in reversed(outcomes)}.values())
    marked = await conn.execute(
        SETTLE_FROM_ARRAYS,
        {
            "now": now,
            "ids": [o.row_id for o in first],
            "states": [o.state.value for o in first],
            "reasons": [o.reason for o in first],
            "provider_ids": [o.provider_id for o in first],
            "not_befores": [o.not_before for o in first],
            "uncounts": [int(o.uncount_attempt) for o in first],
            "details": [o.detail for o in first],
        },
    )
    return [received_at for (received_at,) in marked]


async def suppress_pending(
    conn: AsyncConnection, ids: Sequence[str], of_alerts: Any, reason: str, now: datetime
) -> None:
    """pending -> suppressed for the rows among `ids` of the alerts `of_alerts` selects (a
    Cancel that came while they were being sent stops their retries)."""
    await conn.execute(
        update(deliveries)
        .where(
            _pending(conn, ids),
            deliveries.c.alert_id.in_(of_alerts),
        )
        .values(state=DeliveryState.SUPPRESSED.value, reason=reason, updated_at=now)
    )


async def suppress_owing(
    conn: AsyncConnection, alert_ids: Collection[str], reason: str, now: datetime
) -> None:
    """pending or held -> suppressed for every row of these alerts (a Cancel): retries,
    quiet-hours holds and rows awaiting approval. Rows mid-send finish normally."""
    await conn.execute(
        update(deliveries)
        .where(deliveries.c.alert_id.in_(alert_ids), deliveries.c.state.in_(OWING_STATES))
        .values(state=DeliveryState.SUPPRESSED.value, reason=reason, updated_at=now)
    )


NOTICE_ABOUT_ID = "aboutId"
"""The key of a supervisor's notice row's `detail` (JSON) that holds the id of the stakeholder
the notice is about (the row's own stakeholder is the supervisor)."""


def notice_about(detail: str | None) -> str | None:
    """The stakeholder a notice row's `detail` is about; None if it does not say (a notice
    planned before the id was recorded, or a detail that is not a JSON object)."""
    try:
        parsed = json.loads(detail or "")
    except ValueError:
        return None
    about = parsed.get(NOTICE_ABOUT_ID) if isinstance(parsed, dict) else None
    return about if isinstance(about, str) else None


async def suppress_escalation_sends(
    conn: AsyncConnection, alert_id: str, stakeholder_id: str, now: datetime
) -> None:
    """pending -> suppressed for the escalation sends not yet made once a stakeholder has
    acknowledged: the resends to them, and the supervisors' notices that they have not
    acknowledged (rows of the supervisors, found by `notice_about`)."""
    notices = await conn.execute(
        select(deliveries.c.id, deliveries.c.detail).where(
            deliveries.c.alert_id == alert_id,
            deliveries.c.origin == RowOrigin.NOTICE.value,
            deliveries.c.state == DeliveryState.PENDING.value,
        )
    )
    about = sorted(row_id for row_id, detail in notices if notice_about(detail) == stakeholder_id)
    theirs = and_(
        deliveries.c.stakeholder_id == stakeholder_id,
        deliveries.c.origin == RowOrigin.ESCALATION.value,
    )
    await conn.execute(
        update(deliveries)
        .where(
            deliveries.c.alert_id == alert_id,
            deliveries.c.state == DeliveryState.PENDING.value,
            or_(theirs, deliveries.c.id.in_(about)) if about else theirs,
        )
        .values(state=DeliveryState.SUPPRESSED.value, reason="acknowledged", updated_at=now)
    )


async def release_held(conn: AsyncConnection, alert_id: str, now: datetime) -> dict[str, list[str]]:
    """held -> pending for an approved alert; returns the released ids by channel."""
    result = await conn.execute(
        update(deliveries)
        .where(deliveries.c.alert_id == alert_id, deliveries.c.state == DeliveryState.HELD.value)
        .values(state=DeliveryState.PENDING.value, updated_at=now)
        .returning(deliveries.c.id, deliveries.c.channel)
    )
    released: dict[str, list[str]] = {}
    for row_id, channel in result:
        released.setdefault(channel, []).append(row_id)
    for ids in released.values():
        ids.sort()
    return released


async def reject_held(conn: AsyncConnection, alert_id: str, reason: str, now: datetime) -> None:
    """held -> suppressed (`approval_rejected`, the rejection's reason as detail)."""
    await conn.execute(
        update(deliveries)
        .where(deliveries.c.alert_id == alert_id, deliveries.c.state == DeliveryState.HELD.value)
        .values(
            state=DeliveryState.SUPPRESSED.value,
            reason="approval_rejected",
            detail=reason,
            updated_at=now,
        )
    )


REPORTING_CHANNELS = frozenset({ChannelName.SMS.value})
"""Channels whose provider reports each message's fate after accepting it (Twilio's status
callbacks), by the provider id the send recorded."""
UNMATCHED_STATUS_LIFETIME = timedelta(days=1)
"""How long a status no recorded send has matched is kept: a send is recorded within
seconds, so an older one belongs to a send that never recorded that id (it timed out, or its
worker died) and was retried under another."""


@dataclass(frozen=True, slots=True)
class ProviderStatus:
    """A message's fate as its provider reported it after accepting it: `delivered`, or a
    failure (`undelivered`, `failed`) with the provider's error code and the row's reason."""

    channel: str
    provider_id: str
    status: str
    error_code: str | None = None
    reason: str | None = None

    @property
    def state(self) -> DeliveryState:
        delivered = self.status == DeliveryState.DELIVERED.value
        return DeliveryState.DELIVERED if delivered else DeliveryState.FAILED


async def record_provider_status(
    conn: AsyncConnection, status: ProviderStatus, now: datetime
) -> None:
    """sent -> delivered, or sent -> failed with the status's reason, as the provider reported
    later. A status for a message no row carries yet (its send not recorded) is kept for
    `settle_sending` to apply; a repeated or late one (the row is past `sent`) changes
    nothing, so the first final status stands."""
    await _lock_messages(conn, [(status.channel, status.provider_id)])
    if await _move_reported(conn, status, now):
        return
    known = await conn.scalar(
        select(deliveries.c.id).where(_of_message(status.channel, status.provider_id)).limit(1)
    )
    if known is not None:
        return
    await conn.execute(
        insert_ignoring_conflicts(conn.dialect.name, provider_statuses).values(
            channel=status.channel,
            provider_id=status.provider_id,
            status=status.status,
            error_code=status.error_code,
            reason=status.reason,
            received_at=now,
        )
    )


async def forget_unmatched_statuses(conn: AsyncConnection, channel: str, now: datetime) -> int:
    """Drop the statuses of `channel` kept longer than `UNMATCHED_STATUS_LIFETIME`; returns
    how many."""
    result = await conn.execute(
        delete(provider_statuses).where(
            provider_statuses.c.channel == channel,
            provider_statuses.c.received_at < now - UNMATCHED_STATUS_LIFETIME,
        )
    )
    return int(result.rowcount or 0)


def _of_message(channel: str, provider_id: str) -> Any:
    return and_(deliveries.c.provider_id == provider_id, deliveries.c.channel == channel)


async def _move_reported(conn: AsyncConnection, status: ProviderStatus, now: datetime) -> bool:
    """sent -> the status's state for its message's row; whether a row moved."""
    values: dict[str, Any] = {"state": status.state.value, "updated_at": now}
    if status.state is DeliveryState.FAILED:
        values["reason"] = status.reason
    result = await conn.execute(
        update(deliveries)
        .where(
            _of_message(status.channel, status.provider_id),
            deliveries.c.state == DeliveryState.SENT.value,
        )
        .values(**values)
    )
    return bool(result.rowcount)


_KEPT_OF_MESSAGES = and_(
    provider_statuses.c.channel == bindparam("channel"),
    provider_statuses.c.provider_id.in_(bindparam("provider_ids", expanding=True)),
)
_KEPT_STATUSES = select(provider_statuses).where(_KEPT_OF_MESSAGES)
"""The statuses kept for some messages of one channel: read with every SMS and email settle."""


async def _apply_kept_statuses(
    conn: AsyncConnection, messages: Collection[tuple[str, str]], now: datetime
) -> None:
    """Apply the kept statuses of these (channel, provider id) messages, now that their rows
    are `sent`, and forget them."""
    for channel in {channel for channel, _ in messages}:
        ids = [provider_id for of_channel, provider_id in messages if of_channel == channel]
        parameters = {"channel": channel, "provider_ids": ids}
        kept = (await conn.execute(_KEPT_STATUSES, parameters)).mappings().all()
        for row in kept:
            status = ProviderStatus(
                channel, row["provider_id"], row["status"], row["error_code"], row["reason"]
            )
            await _move_reported(conn, status, now)
        if kept:
            await conn.execute(delete(provider_statuses).where(_KEPT_OF_MESSAGES), parameters)


async def _lock_messages(conn: AsyncConnection, messages: Collection[tuple[str, str]]) -> None:
    """Make a status callback and the settle that records the same message's provider id run
    one after the other. Otherwise, on PostgreSQL, each can miss the other's uncommitted
    write: the callback finds no row with that id and keeps the status, while the settle
    finds no kept status, and the row stays `sent`. Transaction-scoped advisory locks, taken
    in one order so that settles never deadlock; SQLite runs one writing transaction at a
    time already (both begin by writing)."""
    await lock_all(conn, {lock_key(channel, provider_id) for channel, provider_id in messages})


async def resend_stuck_rows(
    conn: AsyncConnection,
    channel: str,
    older_than: datetime,
    now: datetime,
    in_flight: Collection[str] = (),
) -> list[str]:
    """The resend-once policy for rows stuck in `sending` (their worker died mid-send, so
    whether they went is unknown): back to `pending` flagged `resent`, or `failed` if that
    happened before. `in_flight` are rows the caller itself is still sending (slow, not
    stuck). Returns the ids to publish again."""
    stuck = and_(
        deliveries.c.channel == channel,
        deliveries.c.state == DeliveryState.SENDING.value,
        deliveries.c.updated_at < older_than,
    )
    if in_flight:
        stuck = and_(stuck, deliveries.c.id.not_in(list(in_flight)))
    await conn.execute(
        update(deliveries)
        .where(stuck, deliveries.c.resent.is_(True))
        .values(
            state=DeliveryState.FAILED.value,
            reason="stuck in sending again after one resend",
            updated_at=now,
        )
    )
    ids = list(
        await conn.scalars(select(deliveries.c.id).where(stuck, deliveries.c.resent.is_(False)))
    )
    if ids:
        await conn.execute(
            update(deliveries)
            .where(one_of(conn.dialect.name, deliveries.c.id, ids))
            .values(
                state=DeliveryState.PENDING.value,
                resent=True,
                reason="a worker stopped mid-send: resent once, may be a duplicate",
                updated_at=now,
            )
        )
    return ids
