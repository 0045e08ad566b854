"""The ledger on SQLite and PostgreSQL: stored once, duplicates recognized, conflicting
duplicates quarantined, references linked, rejections kept, migrations idempotent."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from core.alert import Tlp
from core.errors import ErrorDetail
from dissemination.intake.normalize import HandlingDefaults, alert_from_cap
from dissemination.ledger.alerts import Ledger, Payload, RecordOutcome
from dissemination.settings import StoreSettings
from dissemination.store.database import Database, head_revision
from dissemination.store.rows import AlertState
from tests.alerts import cap_json

NOW = datetime(2026, 11, 24, 15, 0, tzinfo=UTC)
DEFAULTS = HandlingDefaults(Tlp.AMBER_STRICT, Tlp.CLEAR)


@pytest.fixture
async def ledger(store_url: str, tmp_path: Path) -> AsyncIterator[Ledger]:
    database = Database.from_settings(StoreSettings(store_url, 5, 0.05, 0.2), tmp_path)
    yield Ledger(database)
    await database.close()


def _payload(body: bytes = b"{}") -> Payload:
    return Payload(body, "application/json")


async def test_stores_an_alert_once_and_recognizes_a_duplicate(ledger: Ledger) -> None:
    alert = alert_from_cap(cap_json("A-1"), "cap-json", DEFAULTS)
    first = await ledger.record_alert(alert, _payload(b"one"), AlertState.RECEIVED, NOW)
    again = await ledger.record_alert(
        alert, _payload(b"one rendered differently"), AlertState.RECEIVED, NOW
    )
    assert (first, again) == (RecordOutcome.STORED, RecordOutcome.DUPLICATE)
    assert await ledger.counts() == {"alerts": 1, "rejections": 0, "quarantine": 0}
    row = await ledger.alert_row(alert.id)
    assert row is not None
    assert row["state"] == "received"
    assert row["tlp"] == "CLEAR"
    assert row["sent_at"] == datetime(2026, 11, 24, 15, 0, tzinfo=UTC)
    assert row["document"]["identifier"] == "A-1"


async def test_same_key_with_other_content_is_quarantined_not_stored_twice(ledger: Ledger) -> None:
    original = alert_from_cap(cap_json("A-2"), "cap-json", DEFAULTS)
    changed_doc = cap_json("A-2")
    changed_doc["info"][0]["headline"] = "A different headline"
    changed = alert_from_cap(changed_doc, "cap-json", DEFAULTS)
    assert original.id == changed.id
    await ledger.record_alert(original, _payload(b"a"), AlertState.RECEIVED, NOW)
    outcome = await ledger.record_alert(changed, _payload(b"b"), AlertState.RECEIVED, NOW)
    assert outcome is RecordOutcome.CONFLICT
    assert await ledger.counts() == {"alerts": 1, "rejections": 0, "quarantine": 1}
    row = await ledger.alert_row(original.id)
    assert row is not None
    assert row["headline"] == "Flash flood warning for Example County"


async def test_update_links_known_references_and_records_unknown_ones(ledger: Ledger) -> None:
    original = alert_from_cap(cap_json("A-3"), "cap-json", DEFAULTS)
    await ledger.record_alert(original, _payload(), AlertState.RECEIVED, NOW)
    references = (
        f"{original.sender},{original.identifier},{original.sent_text} "
        "someone@example.org,NEVER-SEEN,2026-01-01T00:00:00-00:00"
    )
    update = alert_from_cap(
        cap_json("A-3-U", msgType="Update", references=references), "cap-json", DEFAULTS
    )
    assert (
        await ledger.record_alert(update, _payload(b"u"), AlertState.RECEIVED, NOW)
        == RecordOutcome.STORED
    )
    links = await ledger.references_of(update.id)
    assert [(link["ref_alert_id"], link["resolved"]) for link in links] == [
        (original.id, 1),
        (update.references[1].alert_id, 0),
    ]


@pytest.mark.parametrize(
    ("sender", "sent"),
    [
        ("W-NWS.WEBMASTER@NOAA.GOV", "2026-11-24T10:00:00-05:00"),  # other case, same instant
        ("w-nws.webmaster@noaa.gov", "2026-11-24T16:00:00+01:00"),  # another offset
        ("W-Nws.Webmaster@Noaa.Gov", "2026-11-24T15:00:00+00:00"),  # +00:00 for -00:00
    ],
)
async def test_a_reference_resolves_by_meaning_not_by_spelling(
    ledger: Ledger, sender: str, sent: str
) -> None:
    original = alert_from_cap(
        cap_json("A-4", sender="w-nws.webmaster@noaa.gov", sent="2026-11-24T15:00:00-00:00"),
        "cap-json",
        DEFAULTS,
    )
    await ledger.record_alert(original, _payload(), AlertState.RECEIVED, NOW)
    update = alert_from_cap(
        cap_json("A-4-U", msgType="Update", references=f"{sender},A-4,{sent}"),
        "cap-json",
        DEFAULTS,
    )
    assert update.references[0].alert_id != original.id  # spelled differently
    await ledger.record_alert(update, _payload(b"u"), AlertState.RECEIVED, NOW)
    [link] = await ledger.references_of(update.id)
    assert (link["ref_alert_id"], link["resolved"]) == (original.id, 1)
    [marks] = await ledger.marks_of(update.references)
    assert (marks.tlp, marks.caveats) == (original.handling.tlp, original.handling.caveats)


async def test_a_reference_to_another_instant_or_identifier_does_not_resolve(
    ledger: Ledger,
) -> None:
    original = alert_from_cap(cap_json("A-5"), "cap-json", DEFAULTS)
    await ledger.record_alert(original, _payload(), AlertState.RECEIVED, NOW)
    references = (
        f"{original.sender},A-5,2026-11-24T15:00:01-00:00 "
        f"{original.sender},a-5,{original.sent_text} "
        f"{original.sender},A-5,not-a-time"
    )
    update = alert_from_cap(
        cap_json("A-5-U", msgType="Update", references=references), "cap-json", DEFAULTS
    )
    await ledger.record_alert(update, _payload(b"u"), AlertState.RECEIVED, NOW)
    links = await ledger.references_of(update.id)
    assert [link["resolved"] for link in links] == [0, 0, 0]


async def test_rejections_keep_the_body_and_the_reasons(ledger: Ledger) -> None:
    rejection_id = await ledger.record_rejection(
        source="amqp",
        reason="schema_violation",
        errors=[ErrorDetail("$.status", "'Bogus' is not one of [...]")],
        payload=_payload(b"{bad}"),
        message_id="m-1",
        now=NOW,
    )
    assert rejection_id >= 1
    assert (await ledger.counts())["rejections"] == 1


async def test_migrations_are_idempotent(store_url: str, tmp_path: Path) -> None:
    database = Database.from_settings(StoreSettings(store_url, 5, 0.05, 0.2), tmp_path)
    try:
        assert await database.migrate() == head_revision()
        assert await database.migrate() == head_revision()
        assert await database.revision() == head_revision()
    finally:
        await database.close()
