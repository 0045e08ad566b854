"""A Cancel stops what the alert it cancels still owes whether or not it is itself sent, on
SQLite and PostgreSQL: one that has expired already (a short-lived NWS CAN taken in after a
backlog) is recorded `expired` and sent to nobody, and still suppresses the original's
pending rows and withdraws it from approval. A Draft cancels nothing."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from dissemination.controls.approvalrules import ApprovalPolicy
from dissemination.ledger.alerts import RecordOutcome
from dissemination.store.database import Database
from dissemination.store.tables import approvals
from testbed.alerts import cap_json
from tests.test_intake_reference_race import (
    id_of,
    matcher_for,
    payload,
    pipeline_for,
    reference_to,
    rows_of,
)

PAST = "2020-01-01T00:00:00-00:00"


def expired_cancel_of(original: dict[str, Any], identifier: str, **changes: Any) -> dict[str, Any]:
    cancel = cap_json(identifier, msgType="Cancel", references=reference_to(original), **changes)
    cancel["info"] = [dict(cancel["info"][0], expires=PAST)]
    return cancel


async def test_an_expired_cancel_stops_the_rows_its_original_still_owes(store: Database) -> None:
    pipeline = pipeline_for(store, matcher_for("eve", "RED"))
    original = cap_json("EXP-ORIG")  # expires in 2099
    assert len((await pipeline.process(payload(original))).waiting("email")) == 1
    draft = expired_cancel_of(original, "EXP-DRAFT", status="Draft")
    await pipeline.process(payload(draft))
    assert await rows_of(store, id_of(original)) == [("eve@example.org", "pending", None)]

    cancel = expired_cancel_of(original, "EXP-CAN")
    result = await pipeline.process(payload(cancel))
    assert result.outcomes == {id_of(cancel): RecordOutcome.STORED}
    assert result.waiting("email") == []  # the Cancel itself goes to nobody
    stored = await pipeline.ledger.alert_row(id_of(cancel))
    assert stored is not None
    assert stored["state"] == "expired"
    assert await rows_of(store, id_of(cancel)) == []
    assert await rows_of(store, id_of(original)) == [
        ("eve@example.org", "suppressed", "cancelled by EXP-CAN")
    ]


async def test_an_expired_cancel_withdraws_an_original_held_for_approval(
    store: Database,
) -> None:
    policy = ApprovalPolicy(("* tlp>=AMBER",))
    pipeline = pipeline_for(store, matcher_for("eve", "RED"), policy)
    original = cap_json("HELD-ORIG", handling={"tlp": "AMBER"})
    await pipeline.process(payload(original))
    assert await rows_of(store, id_of(original)) == [("eve@example.org", "held", None)]
    cancel = expired_cancel_of(original, "HELD-CAN", handling={"tlp": "AMBER"})
    await pipeline.process(payload(cancel))
    assert await rows_of(store, id_of(original)) == [
        ("eve@example.org", "suppressed", "cancelled by HELD-CAN")
    ]
    async with store.reading() as conn:
        approval = (
            await conn.execute(
                select(approvals.c.state, approvals.c.reason).where(
                    approvals.c.alert_id == id_of(original)
                )
            )
        ).one()
    assert tuple(approval) == ("withdrawn", "cancelled by HELD-CAN")
