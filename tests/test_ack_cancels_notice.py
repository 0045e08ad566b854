"""An acknowledgment suppresses the escalation sends not yet made: the resends to the
stakeholder who acknowledged, and the supervisors' notices ("X has not acknowledged") about
them, which are rows of the supervisors. A notice about someone who has not acknowledged
stays. On the store alone (both SQLite and PostgreSQL), with the engine fired by hand."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from sqlalchemy import select, update

from core.alert import Alert, Tlp
from dissemination.acks.escalation import start_escalations
from dissemination.acks.escalator import EscalationEngine
from dissemination.acks.tracking import AckChannel, AckStore
from dissemination.broker.dispatch import DeliveryDispatcher
from dissemination.directory.store import (
    CONTACT,
    ESCALATION,
    STAKEHOLDER,
    SUBSCRIPTION,
    Directory,
    EntitySpec,
)
from dissemination.intake.normalize import HandlingDefaults, alert_from_cap
from dissemination.ledger.alerts import Ledger, Payload
from dissemination.store.database import Database
from dissemination.store.rows import AlertState, DeliveryState, PlannedRow, RowOrigin
from dissemination.store.tables import deliveries
from subscriptions.codec import validate_escalation, validate_subscription
from testbed.alerts import cap_json
from testbed.directory import ACTOR, stakeholder_fields

NOW = datetime(2026, 11, 24, 15, 0, tzinfo=UTC)
DEFAULTS = HandlingDefaults(Tlp.AMBER_STRICT, Tlp.CLEAR)
ABOUT_ID = "aboutId"  # `rows.NOTICE_ABOUT_ID`: whom a notice row (the supervisor's) is about


class IdleDispatcher:
    """Takes the engine's new rows and sends nothing, so they stay `pending`."""

    async def dispatch(self, pending: dict[str, list[str]], urgent: bool = False) -> None:
        return None


async def created(directory: Directory, spec: EntitySpec, fields: dict[str, Any]) -> str:
    record, _ = await directory.create(spec, fields, ACTOR, NOW)
    return str(record["id"])


async def person(directory: Directory, name: str, policy: str) -> tuple[str, PlannedRow]:
    """A stakeholder who must acknowledge under `policy`, and their planned email row."""
    holder = await created(directory, STAKEHOLDER, stakeholder_fields(name))
    subscription = await created(
        directory,
        SUBSCRIPTION,
        validate_subscription(
            {
                "stakeholderId": holder,
                "rule": {},
                "channels": ["email"],
                "ackRequired": True,
                "escalationId": policy,
            }
        ),
    )
    address = f"{name.lower()}@example.org"
    row = PlannedRow(
        holder, subscription, None, "email", address, DeliveryState.PENDING, ack_required=True
    )
    return holder, row


async def delivered(database: Database, rows: list[PlannedRow]) -> Alert:
    """An alert planned with `rows`, all of them sent now, and their escalations started."""
    ledger = Ledger(database)
    alert = alert_from_cap(cap_json("NOTICE-ACK-1"), "cap-json", DEFAULTS)
    async with database.transaction() as conn:
        await ledger.store(conn, alert, Payload(b"{}", "application/json"), AlertState.PLANNED, NOW)
        await ledger.plans.write_rows(conn, alert, rows, NOW)
        await conn.execute(
            update(deliveries).where(deliveries.c.alert_id == alert.id).values(state="sent")
        )
        await start_escalations(conn, [(alert.id, row.stakeholder_id) for row in rows], NOW)
    return alert


async def escalation_rows(database: Database, alert_id: str) -> list[dict[str, Any]]:
    async with database.reading() as conn:
        found = await conn.execute(
            select(deliveries).where(
                deliveries.c.alert_id == alert_id,
                deliveries.c.origin != RowOrigin.MATCH.value,
            )
        )
        return [dict(row) for row in found.mappings()]


async def test_an_acknowledgment_suppresses_the_notices_about_it_not_yet_sent(
    store: Database,
) -> None:
    directory = Directory(store)
    supervisor = await created(directory, STAKEHOLDER, stakeholder_fields("Sup"))
    contact = {"stakeholderId": supervisor, "channel": "email", "address": "sup@example.org"}
    await created(directory, CONTACT, contact | {"label": "", "active": True})
    steps = [
        {"afterSeconds": 60, "action": "resend"},
        {"afterSeconds": 120, "action": "notify", "supervisors": [supervisor]},
    ]
    policy = await created(
        directory, ESCALATION, validate_escalation({"name": "desk", "steps": steps})
    )
    ana, ana_row = await person(directory, "Ana", policy)
    ben, ben_row = await person(directory, "Ben", policy)
    alert = await delivered(store, [ana_row, ben_row])
    clock = [NOW + timedelta(seconds=61)]
    engine = EscalationEngine(store, cast(DeliveryDispatcher, IdleDispatcher()), lambda: clock[0])
    assert await engine.run_due() == 2  # each resent
    clock[0] = NOW + timedelta(seconds=121)
    assert await engine.run_due() == 2  # the supervisor told of each

    # Ana acknowledges before the worker has sent any of it; Ben does not
    outcome = await AckStore(store).acknowledge(alert.id, ana, AckChannel.LINK, clock[0])
    assert outcome is not None
    assert outcome.new

    rows = await escalation_rows(store, alert.id)
    states = {
        (r["origin"], r["stakeholder_id"], json.loads(r["detail"] or "{}").get("about")): (
            r["state"],
            r["reason"],
        )
        for r in rows
    }
    assert states == {
        ("escalation", ana, None): ("suppressed", "acknowledged"),
        ("notice", supervisor, "Ana"): ("suppressed", "acknowledged"),
        ("escalation", ben, None): ("pending", None),
        ("notice", supervisor, "Ben"): ("pending", None),
    }
    # a notice is matched by the id it records, never by the name it shows
    about = {
        json.loads(r["detail"])["about"]: json.loads(r["detail"])[ABOUT_ID]
        for r in rows
        if r["detail"]
    }
    assert about == {"Ana": ana, "Ben": ben}
