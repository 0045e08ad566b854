"""Two-person approval: alerts that match an approval rule are held, their delivery rows
written `held`, until an administrator other than the one who submitted them approves (the
rows become `pending` and go out) or rejects them with a reason (the rows are `suppressed`
and nothing is sent). A Cancel of a held alert withdraws it. Cancels themselves are never
held: holding a correction back would keep the wrong alert standing.

Which alerts are held is set by `approval.rules` (`dissemination.controls.approvalrules`); the
default holds local alerts at TLP:RED or carrying PII:

    rules = ["local tlp>=RED", "local pii"]
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from dissemination.acks.escalation import EscalationState, end_escalations
from dissemination.errors import ControlRefused
from dissemination.store.audit import Actor, write_audit
from dissemination.store.database import Database
from dissemination.store.rows import reject_held, release_held
from dissemination.store.tables import approvals
from dissemination.store.urgency import alert_is_urgent


class ApprovalState(StrEnum):
    HELD = "held"
    APPROVED = "approved"
    REJECTED = "rejected"
    WITHDRAWN = "withdrawn"


async def hold(
    conn: AsyncConnection, alert_id: str, rule: str, submitted_by: str | None, now: datetime
) -> None:
    """Record that the alert waits for approval (in the transaction that stores it)."""
    await conn.execute(
        approvals.insert().values(
            alert_id=alert_id,
            state=ApprovalState.HELD.value,
            rule=rule,
            submitted_by=submitted_by,
            held_at=now,
        )
    )


async def withdraw(conn: AsyncConnection, alert_ids: list[str], cancel: str, now: datetime) -> None:
    """A Cancel withdraws held alerts it cancels (their rows are suppressed by the caller)."""
    await conn.execute(
        update(approvals)
        .where(approvals.c.alert_id.in_(alert_ids), approvals.c.state == ApprovalState.HELD.value)
        .values(
            state=ApprovalState.WITHDRAWN.value, decided_at=now, reason=f"cancelled by {cancel}"
        )
    )


@dataclass(frozen=True, slots=True)
class Decision:
    """What a decision did: the new state, the released rows by channel, and whether they
    are an urgent alert's (`Alert.urgent`: to go ahead of others queued)."""

    state: ApprovalState
    released: dict[str, list[str]]
    urgent: bool = False


def principal(actor: Actor) -> str:
    """How a submitter or approver is compared: the staff account (whichever of its sessions
    or tokens acted), else the API token, else the CLI."""
    if actor.account_id:
        return f"account:{actor.account_id}"
    return f"token:{actor.id}" if actor.id else "cli"


async def decide(
    database: Database,
    alert_id: str,
    actor: Actor,
    approve: bool,
    reason: str | None,
    now: datetime,
) -> Decision:
    """Approve or reject a held alert; ControlRefused when it is not held, was decided
    already, or the approver is its submitter."""
    async with database.transaction() as conn:
        row = (
            await conn.execute(select(approvals).where(approvals.c.alert_id == alert_id))
        ).first()
        if row is None:
            raise ControlRefused(404, "not_found", f"alert {alert_id!r} was never held")
        if row.state != ApprovalState.HELD.value:
            raise ControlRefused(409, "already_decided", f"the alert is {row.state} already")
        if row.submitted_by is not None and row.submitted_by == principal(actor):
            raise ControlRefused(
                403,
                "same_administrator",
                "an alert must be approved or rejected by an administrator other than the one "
                "who submitted it",
            )
        state = ApprovalState.APPROVED if approve else ApprovalState.REJECTED
        decided = await conn.execute(
            update(approvals)
            .where(approvals.c.alert_id == alert_id, approvals.c.state == ApprovalState.HELD.value)
            .values(
                state=state.value,
                decided_by=principal(actor),
                decided_by_name=actor.name,
                decided_at=now,
                reason=reason,
            )
        )
        if decided.rowcount != 1:  # another administrator decided in between
            raise ControlRefused(409, "already_decided", "the alert was decided meanwhile")
        released = await release_held(conn, alert_id, now) if approve else {}
        urgent = bool(released) and await alert_is_urgent(conn, alert_id)
        if not approve:
            await _suppress(conn, alert_id, reason or "", now)
        await write_audit(
            conn,
            at=now,
            actor=actor,
            action="approve" if approve else "reject",
            entity="alert",
            entity_id=alert_id,
            before={"approval": ApprovalState.HELD.value},
            after={"approval": state.value, "released": sum(map(len, released.values()))},
            reason=reason,
        )
    return Decision(state, released, urgent)


async def _suppress(conn: AsyncConnection, alert_id: str, reason: str, now: datetime) -> None:
    await reject_held(conn, alert_id, reason, now)
    await end_escalations(conn, EscalationState.CANCELLED, now, alert_ids=[alert_id])


async def listing(
    database: Database, state: ApprovalState | None, limit: int
) -> list[dict[str, object]]:
    """Approvals, newest first, optionally in one state."""
    query = select(approvals).order_by(approvals.c.held_at.desc()).limit(limit)
    if state is not None:
        query = query.where(approvals.c.state == state.value)
    async with database.reading() as conn:
        return [
            {
                "alertId": row.alert_id,
                "state": row.state,
                "rule": row.rule,
                "submittedBy": row.submitted_by,
                "heldAt": row.held_at.isoformat(),
                "decidedBy": row.decided_by_name,
                "decidedAt": row.decided_at.isoformat() if row.decided_at else None,
                "reason": row.reason,
            }
            for row in (await conn.execute(query))
        ]
