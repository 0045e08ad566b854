"""Escalation timers in the ledger (the engine that fires them is `dissemination.acks.escalator`).

Planning gives every (alert, stakeholder) that must acknowledge, under a subscription naming
a policy, an `escalations` row holding a copy of the policy's steps (`waiting`). The first
delivery recorded as sent starts it (`active`, `started_at`, `next_at`). The engine fires what
is due: in one transaction it advances `next_step` by compare-and-set and writes the step's
delivery rows, whose ids are derived from the step, so a restart neither skips nor repeats a
step and two instances never fire the same step twice. An acknowledgment, a Cancel of the
alert, or its expiry ends the escalation.

"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import ColumnElement, bindparam, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from core.alert import Alert, MsgType
from dissemination.store.database import Database
from dissemination.store.rows import OWING_STATES
from dissemination.store.tables import escalation_policies, escalations, subscriptions

ESCALATION_NAMESPACE = uuid.UUID("0c9a4e55-51b7-4d3e-9d8e-3f2a6c1b7e90")


class EscalationState(StrEnum):
    """Where one stakeholder's escalation stands."""

    WAITING = "waiting"  # nothing delivered yet: the clock has not started
    ACTIVE = "active"
    DONE = "done"
    ACKNOWLEDGED = "acknowledged"
    CANCELLED = "cancelled"
    EXPIRED = "expired"


OPEN_STATES = (EscalationState.WAITING.value, EscalationState.ACTIVE.value)


def step_row_id(alert_id: str, stakeholder_id: str, channel: str, address: str, tag: str) -> str:
    """The id of a row written by an escalation step: the same on every attempt to fire it."""
    return str(
        uuid.uuid5(ESCALATION_NAMESPACE, f"{alert_id}|{stakeholder_id}|{channel}|{address}|{tag}")
    )


async def plan_escalations(
    conn: AsyncConnection,
    database: Database,
    alert: Alert,
    rows: Iterable[Mapping[str, Any]],
    now: datetime,
) -> None:
    """`waiting` escalations for the stakeholders who must acknowledge under a subscription
    that names a policy (the first such subscription of each stakeholder decides). A Cancel
    is acknowledged like any alert but never escalated."""
    if alert.msg_type is MsgType.CANCEL:
        return
    alert_id = alert.id
    by_stakeholder: dict[str, str] = {}
    for row in rows:
        owes = row["ack_required"] and row["state"] in OWING_STATES
        if owes and row["subscription_id"] and row["stakeholder_id"] not in by_stakeholder:
            by_stakeholder[row["stakeholder_id"]] = row["subscription_id"]
    if not by_stakeholder:
        return
    policies = dict(
        (
            await conn.execute(
                select(subscriptions.c.id, escalation_policies.c.id)
                .join(
                    escalation_policies,
                    escalation_policies.c.id == subscriptions.c.escalation_id,
                )
                .where(subscriptions.c.id.in_(set(by_stakeholder.values())))
            )
        ).all()
    )
    if not policies:
        return
    steps = dict(
        (
            await conn.execute(
                select(escalation_policies.c.id, escalation_policies.c.steps).where(
                    escalation_policies.c.id.in_(set(policies.values()))
                )
            )
        ).all()
    )
    values = [
        {
            "alert_id": alert_id,
            "stakeholder_id": stakeholder,
            "policy_id": policies[subscription],
            "steps": steps[policies[subscription]],
            "state": EscalationState.WAITING.value,
            "next_step": 0,
            "updated_at": now,
        }
        for stakeholder, subscription in by_stakeholder.items()
        if subscription in policies
    ]
    await conn.execute(database.insert_ignoring_conflicts(escalations), values)


async def start_escalations(
    conn: AsyncConnection, reached: Sequence[tuple[str, str]], now: datetime
) -> None:
    """Start the clocks of these (alert, stakeholder) pairs: their first delivery just went."""
    if not reached:
        return
    wanted = set(reached)
    waiting = await conn.execute(
        select(escalations.c.alert_id, escalations.c.stakeholder_id, escalations.c.steps).where(
            escalations.c.alert_id.in_({alert for alert, _ in wanted}),
            escalations.c.stakeholder_id.in_({stakeholder for _, stakeholder in wanted}),
            escalations.c.state == EscalationState.WAITING.value,
        )
    )
    starting = [
        {
            "pair_alert": alert_id,
            "pair_stakeholder": stakeholder_id,
            "first_at": now + timedelta(seconds=steps[0]["afterSeconds"]),
        }
        for alert_id, stakeholder_id, steps in waiting
        if (alert_id, stakeholder_id) in wanted
    ]
    if not starting:
        return
    await conn.execute(
        update(escalations)
        .where(
            escalations.c.alert_id == bindparam("pair_alert"),
            escalations.c.stakeholder_id == bindparam("pair_stakeholder"),
            escalations.c.state == EscalationState.WAITING.value,
        )
        .values(
            state=EscalationState.ACTIVE.value,
            started_at=now,
            next_at=bindparam("first_at"),
            updated_at=now,
        ),
        starting,
    )


async def end_escalations(
    conn: AsyncConnection,
    state: EscalationState,
    now: datetime,
    *,
    alert_ids: Sequence[str],
    stakeholder_id: str | None = None,
) -> None:
    """End the open escalations of these alerts (of one stakeholder, if given)."""
    where: list[ColumnElement[bool]] = [
        escalations.c.alert_id.in_(alert_ids),
        escalations.c.state.in_(OPEN_STATES),
    ]
    if stakeholder_id is not None:
        where.append(escalations.c.stakeholder_id == stakeholder_id)
    await conn.execute(
        update(escalations).where(*where).values(state=state.value, next_at=None, updated_at=now)
    )
