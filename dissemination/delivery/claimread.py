"""How a claim reads its rows: the transitions of `dissemination.store.rows` and everything
sending a claimed row needs (its contact's secret, an SMS opt-out, its acknowledgment token,
its stakeholder as now), as one statement on PostgreSQL or a statement per part on SQLite.
`DeliveryStore.claim` turns what is read into `ClaimedRow`s."""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import FromClause, Select, String, and_, bindparam, func, literal, select, true
from sqlalchemy.dialects.postgresql import ARRAY, aggregate_order_by
from sqlalchemy.ext.asyncio import AsyncConnection

from dissemination.directory.store import STAKEHOLDER, fields_of
from dissemination.store.idsets import one_of
from dissemination.store.rows import (
    CLAIMED_COLUMNS,
    claim_due,
    claim_parts,
    suppress_expired,
    waiting,
)
from dissemination.store.tables import (
    UtcDateTime,
    acks,
    contacts,
    deliveries,
    sms_opt_outs,
    stakeholders,
)


@dataclass(frozen=True, slots=True)
class ClaimRead:
    """What a claim's transaction read: the claimed rows with what sending them needs (the
    deliveries' `CLAIMED_COLUMNS` plus `secret`, `opted_out`, `ack_token_id`, `ack_code`,
    `ack_expires_at`), their stakeholders as they are now (absent if removed; the fields
    their model is made from, `fields_of`), the ids suppressed as expired and the rows that
    must wait."""

    records: Sequence[Mapping[Any, Any]]
    stakeholders: dict[str, dict[str, Any]]
    expired: list[str]
    held: list[tuple[str, datetime]]


def _sending_details(rows: FromClause, joined: FromClause) -> tuple[list[Any], FromClause]:
    """The columns a claimed row needs besides its own, and `joined` joined to their tables
    on `rows` (the deliveries table, or the claimed rows of one statement)."""
    columns = [
        contacts.c.secret,
        sms_opt_outs.c.keyword.label("opted_out"),
        acks.c.token_id.label("ack_token_id"),
        acks.c.code.label("ack_code"),
        acks.c.expires_at.label("ack_expires_at"),
    ]
    return columns, (
        joined.outerjoin(contacts, contacts.c.id == rows.c.contact_id)
        .outerjoin(
            sms_opt_outs,
            and_(rows.c.channel == "sms", sms_opt_outs.c.address == rows.c.address),
        )
        .outerjoin(
            acks,
            and_(
                acks.c.alert_id == rows.c.alert_id, acks.c.stakeholder_id == rows.c.stakeholder_id
            ),
        )
    )


async def claim_step_by_step(conn: AsyncConnection, ids: list[str], now: datetime) -> ClaimRead:
    """The claim as a statement per part (SQLite)."""
    expired = await suppress_expired(conn, ids, now)
    claimed = await claim_due(conn, ids, now)
    held = await waiting(conn, ids, now)
    if not claimed:
        return ClaimRead([], {}, expired, held)
    details, joined = _sending_details(deliveries, deliveries)
    query = (
        select(*(deliveries.c[name] for name in CLAIMED_COLUMNS), *details)
        .select_from(joined)
        .where(one_of(conn.dialect.name, deliveries.c.id, claimed))
    )
    records = (await conn.execute(query)).mappings().all()
    holder_ids = {record["stakeholder_id"] for record in records}
    found = await conn.execute(
        select(*HOLDER_COLUMNS).where(one_of(conn.dialect.name, stakeholders.c.id, holder_ids))
    )
    holders = {row["id"]: fields_of(STAKEHOLDER, row) for row in found.mappings()}
    return ClaimRead(records, holders, expired, held)


HOLDER = "holder_"
"""Prefix of the stakeholder's columns in the one-statement claim's rows."""
HOLDER_COLUMNS = (stakeholders.c.id, *(stakeholders.c[c] for c in STAKEHOLDER.fields.values()))
"""The stakeholder's columns a claim reads: those its model is made from."""


CLAIM_IDS = "claim_ids"
CLAIM_NOW = "claim_now"


@functools.cache
def claim_statement() -> Select[Any]:
    """The one-statement claim (PostgreSQL): the transitions of `claim_parts`, the claimed
    rows joined to what sending them needs and to their stakeholders, and the expired and
    waiting ids as arrays beside them. A row with no claimed columns carries the arrays when
    nothing was claimed. Built once, with the ids and the time as parameters
    (`claim_parameters`): building it took longer than PostgreSQL took to run it."""
    parts = claim_parts(
        bindparam(CLAIM_IDS, type_=ARRAY(String)), bindparam(CLAIM_NOW, type_=UtcDateTime())
    )
    claimed = parts.claimed
    anchor = select(literal(1).label("one")).subquery("anchor")
    details, joined = _sending_details(claimed, anchor.outerjoin(claimed, true()))
    joined = joined.outerjoin(stakeholders, stakeholders.c.id == claimed.c.stakeholder_id)
    waiting_in_order = parts.waiting.c.id
    return select(
        *claimed.c,
        *details,
        *(column.label(HOLDER + column.name) for column in HOLDER_COLUMNS),
        select(func.array_agg(parts.expired.c.id)).scalar_subquery().label("expired_ids"),
        select(func.array_agg(aggregate_order_by(parts.waiting.c.id, waiting_in_order)))
        .scalar_subquery()
        .label("waiting_ids"),
        select(func.array_agg(aggregate_order_by(parts.waiting.c.not_before, waiting_in_order)))
        .scalar_subquery()
        .label("waiting_until"),
    ).select_from(joined)


def claim_parameters(ids: list[str], now: datetime) -> dict[str, Any]:
    """The parameters of `claim_statement` for a claim of `ids` at `now`."""
    return {CLAIM_IDS: ids, CLAIM_NOW: now}


async def claim_in_one_statement(conn: AsyncConnection, ids: list[str], now: datetime) -> ClaimRead:
    """The claim as one statement (`claim_statement`): one round trip instead of five; the
    claim is the step between a task's arrival and its send."""
    result = (await conn.execute(claim_statement(), claim_parameters(ids, now))).mappings().all()
    first = result[0]
    records: list[Mapping[Any, Any]] = []
    holders: dict[str, dict[str, Any]] = {}
    for row in result:
        if row["id"] is None:
            continue
        records.append(row)  # read by name: the stakeholder's prefixed columns are ignored
        holder_id = row[HOLDER + "id"]
        if holder_id is not None and holder_id not in holders:
            holders[holder_id] = fields_of(STAKEHOLDER, row, HOLDER)
    return ClaimRead(
        records,
        holders,
        list(first["expired_ids"] or ()),
        list(zip(first["waiting_ids"] or (), first["waiting_until"] or (), strict=True)),
    )
