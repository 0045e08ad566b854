"""Retention and ad-hoc sends: a send keeps the alert it published (`sends.body`) and its
headline; purging the alert empties them in the same run, leaves sends of a revalidated
alert alone, and catches up with sends whose alert was never stored or was purged before
sends were. The audit log is append-only, so a send's entries hold the alert's id and marks,
never its headline or content."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select, update

from core.alert import Alert, Tlp
from dissemination.controls.retention import run_retention
from dissemination.intake.normalize import HandlingDefaults, alert_from_cap
from dissemination.ledger.alerts import Ledger, Payload
from dissemination.ledger.sends import NewSend, Sends
from dissemination.store.audit import Actor
from dissemination.store.database import Database
from dissemination.store.rows import AlertState
from dissemination.store.tables import alerts, audit_log, payloads, sends
from subscriptions.audience import Audience
from testbed.alerts import cap_json

NOW = datetime(2032, 11, 24, 15, 0, tzinfo=UTC)
CUTOFF = NOW - timedelta(days=1826)
LONG_AGO = NOW - timedelta(days=6 * 365)
DEFAULTS = HandlingDefaults(Tlp.AMBER_STRICT, Tlp.CLEAR)
ANALYST = Actor(None, "analyst")
SUBJECT = "John Q. Subject"
PERSONAL = (SUBJECT, "1980-01-02", "ABC123")


def bolo(identifier: str) -> tuple[Alert, Payload]:
    """An analyst's BOLO naming a person, as a send stores it."""
    document = cap_json(identifier)
    document["info"][0]["headline"] = f"BOLO: {SUBJECT}, DOB 1980-01-02, plate ABC123"
    document["info"][0]["description"] = f"{SUBJECT} was last seen driving plate ABC123."
    alert = alert_from_cap(document, "cap-json", DEFAULTS)
    return alert, Payload(json.dumps(document).encode(), "application/json")


async def sent(
    database: Database, identifier: str, *, stored: bool = True, made: datetime = LONG_AGO
) -> tuple[str, Alert]:
    """A send of a BOLO made at `made`, its alert stored in the ledger then (as intake stores
    a released send's alert) unless `stored` is False."""
    alert, payload = bolo(identifier)
    send_id = str(uuid.uuid4())
    await Sends(database).create(
        NewSend(send_id, alert, payload, Audience(send_id), made, None, ANALYST), made
    )
    async with database.transaction() as conn:
        await conn.execute(update(sends).where(sends.c.id == send_id).values(state="released"))
        if stored:
            await Ledger(database).store(conn, alert, payload, AlertState.PLANNED, made)
    return send_id, alert


async def send_rows(database: Database) -> dict[str, Any]:
    async with database.reading() as conn:
        rows = await conn.execute(select(sends.c.id, sends.c.body, sends.c.headline))
        return {row.id: row for row in rows}


async def audit_text(database: Database) -> str:
    """Every audit entry's before, after and reason, as one text."""
    async with database.reading() as conn:
        rows = await conn.execute(select(audit_log.c.before, audit_log.c.after, audit_log.c.reason))
        return json.dumps([list(row) for row in rows])


def holds_personal_data(row: Any) -> bool:
    text = bytes(row.body).decode() + (row.headline or "")
    return any(part in text for part in PERSONAL)


async def test_purging_an_alert_empties_its_sends_and_keeps_a_revalidated_ones(
    store: Database,
) -> None:
    purged_send, purged = await sent(store, "BOLO-OLD")
    kept_send, kept = await sent(store, "BOLO-KEPT")
    async with store.transaction() as conn:
        await conn.execute(update(payloads).values(received_at=LONG_AGO))
        await conn.execute(update(alerts).where(alerts.c.id == kept.id).values(revalidated_at=NOW))

    report = await run_retention(store, CUTOFF, NOW)

    rows = await send_rows(store)
    assert bytes(rows[purged_send].body) == b""
    assert rows[purged_send].headline is None
    assert holds_personal_data(rows[kept_send])  # revalidated: the alert and its send stay
    for text in PERSONAL:
        assert text not in await audit_text(store)
    assert (report.alerts, report.sends) == (1, 1)
    shown = await Sends(store).get(purged_send)
    assert shown is not None
    assert (shown["alertId"], shown["state"], shown["headline"]) == (purged.id, "released", None)
    again = await run_retention(store, CUTOFF, NOW)
    assert (again.alerts, again.sends) == (0, 0)


async def test_sends_no_alert_keeps_are_purged_once_older_than_the_period(
    store: Database,
) -> None:
    cancelled, _ = await sent(store, "BOLO-CANCELLED", stored=False)
    refused, _ = await sent(store, "BOLO-REFUSED", stored=False)  # intake refused its alert
    purged_before, earlier = await sent(store, "BOLO-PURGED-EARLIER")
    recent, _ = await sent(store, "BOLO-RECENT", stored=False, made=NOW - timedelta(days=30))
    waiting, _ = await sent(store, "BOLO-WAITING", stored=False)
    async with store.transaction() as conn:
        await conn.execute(update(sends).where(sends.c.id == cancelled).values(state="cancelled"))
        await conn.execute(update(sends).where(sends.c.id == waiting).values(state="scheduled"))
        # an alert purged by a version that left its sends as they were
        await conn.execute(
            update(alerts)
            .where(alerts.c.id == earlier.id)
            .values(headline=None, document={"id": earlier.id, "purged": True}, purged_at=NOW)
        )

    would = await run_retention(store, CUTOFF, NOW, dry_run=True)
    report = await run_retention(store, CUTOFF, NOW)

    rows = await send_rows(store)
    for send_id in (cancelled, refused, purged_before):
        assert not holds_personal_data(rows[send_id]), send_id
        assert bytes(rows[send_id].body) == b""
    assert holds_personal_data(rows[recent])  # within the period
    assert holds_personal_data(rows[waiting])  # not yet released: its release needs it
    assert (would.sends, report.alerts, report.sends) == (3, 0, 3)
    assert (await run_retention(store, CUTOFF, NOW, dry_run=True)).sends == 0


async def test_a_sends_audit_entries_name_its_alert_and_marks_not_its_content(
    store: Database,
) -> None:
    alert, payload = bolo("BOLO-AUDITED")
    send_id = str(uuid.uuid4())
    due = NOW + timedelta(hours=1)
    made = await Sends(store).create(
        NewSend(send_id, alert, payload, Audience(send_id), due, "token:t", ANALYST), NOW
    )
    assert made["headline"] == alert.headline  # the API shows it from the send while it lasts
    assert await Sends(store).cancel(send_id, ANALYST, NOW) is not None

    async with store.reading() as conn:
        entries = {
            row.action: row
            for row in await conn.execute(
                select(audit_log.c.action, audit_log.c.before, audit_log.c.after).where(
                    audit_log.c.entity == "send"
                )
            )
        }
    assert set(entries) == {"create", "cancel"}
    for entry in entries.values():
        for side in (entry.before, entry.after):
            assert side is None or "headline" not in side
    for text in PERSONAL:
        assert text not in await audit_text(store)
    created = entries["create"].after
    assert created["alertId"] == alert.id
    assert created["handling"] == {  # what the audit API redacts the entry by
        "tlp": alert.handling.tlp.value,
        "caveats": list(alert.handling.caveats),
    }
