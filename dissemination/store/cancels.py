"""Which stored alerts a Cancel has stopped: those an Actual Cancel refers to, and those a
Test, Exercise or System Cancel refers to unless they are Actual (an exercise never stops a
real alert). The ledger applies the same rule when it records a Cancel
(`PlanRows.stop_pending`); here it is a query, for the steps that look later (a retry
mid-send, an escalation step)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Select, or_, select

from core.alert import MsgType, Status
from dissemination.store.tables import alert_references, alerts

_CANCEL = alerts.alias("cancel")
_CANCELLED = alerts.alias("cancelled")


def cancelled_alert_ids() -> Select[Any]:
    """A select of the ids of every alert a Cancel has stopped (filter it further with
    `.where(alert_references.c.ref_alert_id ...)`)."""
    return (
        select(alert_references.c.ref_alert_id)
        .join(_CANCEL, _CANCEL.c.id == alert_references.c.alert_id)
        .join(_CANCELLED, _CANCELLED.c.id == alert_references.c.ref_alert_id)
        .where(
            _CANCEL.c.msg_type == MsgType.CANCEL.value,
            or_(
                _CANCEL.c.status == Status.ACTUAL.value,
                _CANCELLED.c.status != Status.ACTUAL.value,
            ),
        )
    )
