"""CAP Acks and two-person approval: an alert whose rows are held for approval is not
disseminated yet, so no Ack ("Received and disseminated.") goes out for it. Approved and
sent, it gets its Ack; rejected, or withdrawn by a Cancel while held, it was never
disseminated and gets none. On the store alone, SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import cast

from sqlalchemy import update

from core.alert import Tlp
from dissemination.acks.capack import CapAcks
from dissemination.broker.publisher import AlertPublisher
from dissemination.controls.approval import decide, hold, withdraw
from dissemination.directory.store import STAKEHOLDER, Directory
from dissemination.intake.normalize import HandlingDefaults, alert_from_cap
from dissemination.ledger.alerts import Ledger, Payload
from dissemination.settings import CapAckSettings
from dissemination.store.audit import Actor
from dissemination.store.database import Database
from dissemination.store.rows import AlertState, DeliveryState, PlannedRow, suppress_owing
from dissemination.store.tables import deliveries
from testbed.alerts import cap_json
from testbed.directory import ACTOR, stakeholder_fields

NOW = datetime(2026, 11, 24, 15, 0, tzinfo=UTC)
DEFAULTS = HandlingDefaults(Tlp.AMBER_STRICT, Tlp.CLEAR)
ORIGINATOR = "alerts@fusion.example.gov"  # the sender of `testbed.alerts.cap_json`
SUBMITTER = "token:submitter"
APPROVER = Actor("approver", "Second administrator")


class Published:
    """The publisher the Acks go to: keeps their bodies."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []

    async def publish(
        self, body: bytes, content_type: str, routing_key: str, message_id: str, **_: object
    ) -> None:
        self.bodies.append(body)


def cap_acks(database: Database, published: Published) -> CapAcks:
    settings = CapAckSettings((ORIGINATOR,), "alerts.acks", "cap.ack", "us@fusion.example.gov")
    publisher = cast(AlertPublisher, published)
    return CapAcks(database, publisher, settings, lambda: NOW + timedelta(minutes=5))


async def held_alert(database: Database, identifier: str) -> str:
    """An alert of the Ack-receiving originator, its two rows held for approval."""
    directory = Directory(database)
    holders = []
    for name in ("Ana", "Ben"):
        record, _ = await directory.create(STAKEHOLDER, stakeholder_fields(name), ACTOR, NOW)
        holders.append(str(record["id"]))
    alert = alert_from_cap(cap_json(identifier), "cap-json", DEFAULTS)
    assert alert.sender == ORIGINATOR
    rows = [
        PlannedRow(h, None, None, "email", f"{h}@example.org", DeliveryState.HELD) for h in holders
    ]
    ledger = Ledger(database)
    async with database.transaction() as conn:
        await ledger.store(conn, alert, Payload(b"{}", "application/json"), AlertState.PLANNED, NOW)
        await ledger.plans.write_rows(conn, alert, rows, NOW)
        await hold(conn, alert.id, "local tlp>=RED", SUBMITTER, NOW)
    return alert.id


async def test_no_ack_while_held_and_one_once_approved_and_sent(store: Database) -> None:
    published = Published()
    acks = cap_acks(store, published)
    alert_id = await held_alert(store, "HELD-APPROVED")
    assert await acks.run_due() == 0, "Ack 'Received and disseminated.' while every row is held"

    await decide(store, alert_id, APPROVER, True, None, NOW + timedelta(minutes=1))
    assert await acks.run_due() == 0  # released, not sent yet
    async with store.transaction() as conn:
        await conn.execute(
            update(deliveries).where(deliveries.c.alert_id == alert_id).values(state="sent")
        )
    assert await acks.run_due() == 1
    assert b"Received and disseminated." in published.bodies[0]


async def test_no_ack_for_an_alert_rejected_at_approval(store: Database) -> None:
    published = Published()
    acks = cap_acks(store, published)
    alert_id = await held_alert(store, "HELD-REJECTED")
    await decide(store, alert_id, APPROVER, False, "not for release", NOW + timedelta(minutes=1))
    assert await acks.run_due() == 0, "Ack 'Received and disseminated.' for a rejected alert"
    assert published.bodies == []


async def test_no_ack_for_an_alert_withdrawn_while_held(store: Database) -> None:
    published = Published()
    acks = cap_acks(store, published)
    alert_id = await held_alert(store, "HELD-WITHDRAWN")
    async with store.transaction() as conn:  # as a Cancel of it does (`stop_pending`)
        await suppress_owing(conn, [alert_id], "cancelled by CANCEL-1", NOW)
        await withdraw(conn, [alert_id], "CANCEL-1", NOW)
    assert await acks.run_due() == 0, "Ack 'Received and disseminated.' for a withdrawn alert"
    assert published.bodies == []
