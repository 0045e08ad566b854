"""The ledger on SQLite and PostgreSQL: stored once, duplicates recognized, conflicting
duplicates quarantined, references linked, rejections kept, migrations idempotent."""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import exc, select, text

from core.alert import Tlp
from core.errors import ErrorDetail, StoreUnavailable
from dissemination.directory.store import (
    ESCALATION,
    STAKEHOLDER,
    SUBSCRIPTION,
    Directory,
    EntitySpec,
)
from dissemination.intake.normalize import HandlingDefaults, alert_from_cap
from dissemination.ledger import planrows
from dissemination.ledger.alerts import REJECTED_BODY_PREFIX, Ledger, Payload, RecordOutcome
from dissemination.settings import StoreSettings
from dissemination.store.audit import Actor
from dissemination.store.database import (
    Database,
    head_revision,
    migration_scripts,
    outage_as_store_unavailable,
)
from dissemination.store.rows import AlertState, DeliveryState, PlannedRow
from dissemination.store.tables import (
    acks,
    deliveries,
    dissemination_records,
    escalations,
    rejections,
)
from subscriptions.codec import validate_escalation, validate_subscription
from testbed.alerts import cap_json
from testbed.directory import stakeholder_fields

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
    [marks] = [each.handling for each in await ledger.referenced(update.references)]
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


async def _rejection_rows(ledger: Ledger) -> list[dict[str, Any]]:
    async with ledger.database.reading() as conn:
        result = await conn.execute(select(rejections).order_by(rejections.c.id))
        return [dict(row) for row in result.mappings()]


async def test_a_rejected_body_is_kept_as_a_prefix_with_its_size_and_hash(ledger: Ledger) -> None:
    body = bytes(range(256)) * 40_000  # 10 MB
    await ledger.record_rejection(
        source="amqp",
        reason="body_too_large",
        errors=[ErrorDetail("$", "too large")],
        payload=_payload(body),
        message_id="m-big",
        now=NOW,
    )
    (row,) = await _rejection_rows(ledger)
    assert row["body"] == body[:REJECTED_BODY_PREFIX]
    assert (row["body_size"], row["body_sha256"]) == (len(body), hashlib.sha256(body).hexdigest())


async def test_a_rejection_keeps_what_the_store_cannot_hold_in_a_form_it_can(
    ledger: Ledger,
) -> None:
    """An envelope the store cannot hold (NUL, an overlong content type) is still recorded:
    recording the rejection must never be what fails."""
    await ledger.record_rejection(
        source="amqp",
        reason="unsupported_content_type",
        errors=[ErrorDetail("$.a\x00", "bad \x00 " + "x" * 5000)],
        payload=Payload(b"{}", "application/json; p=\x00" + "p" * 300),
        message_id="m\x00-1",
        now=NOW,
    )
    (row,) = await _rejection_rows(ledger)
    assert "\x00" not in row["message_id"]
    assert "\x00" not in row["content_type"]
    assert len(row["content_type"]) <= 200
    assert "\x00" not in json.dumps(row["errors"])


async def test_the_migration_backfills_the_size_and_hash_of_kept_rejections(
    empty_store_url: str, tmp_path: Path
) -> None:
    database = Database.from_settings(StoreSettings(empty_store_url, 5, 0.05, 0.2), tmp_path)
    body = b"<alert>" + b"x" * 10_000
    try:
        assert await database.migrate("0011") == "0011"
        async with database.transaction() as conn:
            await conn.execute(
                text(
                    "INSERT INTO rejections (received_at, source, reason, errors, body)"
                    " VALUES (:at, 'amqp', 'invalid_xml', '[]', :body)"
                ),
                {"at": NOW.replace(tzinfo=None), "body": body},
            )
        assert await database.migrate() == head_revision()
        (row,) = await _rejection_rows(Ledger(database))
        assert (row["body_size"], row["body_sha256"]) == (
            len(body),
            hashlib.sha256(body).hexdigest(),
        )
        assert row["body"] == body  # kept whole: a migration does not cut what was recorded
    finally:
        await database.close()


def test_the_migrations_form_one_line_numbered_by_their_files() -> None:
    """Migrations written side by side and merged must be renumbered into one line: two heads
    stop every migration (alembic cannot choose)."""
    script = migration_scripts()
    assert script.get_heads() == [head_revision()]
    for revision in script.walk_revisions():
        filename = Path(revision.path).name
        assert filename.startswith(f"{revision.revision}_"), filename
        if revision.down_revision is not None:
            assert int(str(revision.down_revision)) == int(revision.revision) - 1, filename


async def test_migrations_are_idempotent(store_url: str, tmp_path: Path) -> None:
    database = Database.from_settings(StoreSettings(store_url, 5, 0.05, 0.2), tmp_path)
    try:
        assert await database.migrate() == head_revision()
        assert await database.migrate() == head_revision()
        assert await database.revision() == head_revision()
    finally:
        await database.close()


@pytest.mark.parametrize(
    ("sqlstate", "outage"),
    [
        ("40P01", True),  # deadlock detected
        ("40001", True),  # serialization failure
        ("53300", True),  # too many connections
        ("53100", True),  # disk full
        ("57014", True),  # statement timeout
        ("57P01", True),  # administrator shutdown
        ("55P03", True),  # lock not available
        ("22021", False),  # character not in repertoire: the data, every time
        ("23505", False),  # unique violation
        (None, False),
    ],
)
def test_transient_database_errors_are_outages_to_retry(sqlstate: str | None, outage: bool) -> None:
    """Intake dead-letters what fails for any other reason than an outage, so a deadlock or a
    serialization failure must be retried, never rejected."""
    original = type("PostgresError", (Exception,), {"sqlstate": sqlstate})("failed")
    error = exc.DBAPIError("INSERT ...", None, original)
    expected = StoreUnavailable if outage else exc.DBAPIError
    with pytest.raises(expected), outage_as_store_unavailable():
        raise error


async def test_a_plan_written_in_slices_owes_what_one_write_owes(
    ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A large audience is written a slice at a time in its alert's transaction. With a
    slice of one row, a stakeholder's rows fall into several slices and the outcome is still
    the one write's: every row, one acknowledgment token per stakeholder who owes one, the
    escalation of its first subscription that names a policy, each withholding recorded once,
    and every pending id by channel."""
    directory, actor = Directory(ledger.database), Actor(None, "test")

    async def created(spec: EntitySpec, fields: dict[str, Any]) -> str:
        record, _ = await directory.create(spec, fields, actor, NOW)
        return str(record["id"])

    policies = [
        await created(
            ESCALATION,
            validate_escalation(
                {"name": name, "steps": [{"afterSeconds": 60, "action": "resend"}]}
            ),
        )
        for name in ("first", "second")
    ]
    ana, ben, cy = [await created(STAKEHOLDER, stakeholder_fields(n)) for n in ("A", "B", "C")]
    ana_subscriptions = [
        await created(
            SUBSCRIPTION,
            validate_subscription(
                {
                    "stakeholderId": ana,
                    "rule": {},
                    "channels": ["webhook", "email"],
                    "ackRequired": True,
                    "escalationId": policy,
                }
            ),
        )
        for policy in policies
    ]

    def plan() -> list[PlannedRow]:
        pending = DeliveryState.PENDING
        return [
            PlannedRow(
                ana,
                ana_subscriptions[0],
                None,
                "webhook",
                "https://a.example/",
                pending,
                ack_required=True,
            ),
            PlannedRow(
                ana,
                ana_subscriptions[1],
                None,
                "email",
                "a@example.org",
                pending,
                ack_required=True,
            ),
            PlannedRow(
                ben,
                None,
                None,
                "webhook",
                "https://b.example/",
                DeliveryState.WITHHELD,
                reason="clearance",
                detail="TLP:AMBER above TLP:GREEN",
            ),
            PlannedRow(cy, None, None, "sms", "+15550100", pending, ack_required=True),
        ]

    async def written(identifier: str) -> tuple[Any, ...]:
        alert = alert_from_cap(cap_json(identifier), "cap-json", DEFAULTS)
        async with ledger.database.transaction() as conn:
            await ledger.store(conn, alert, _payload(), AlertState.PLANNED, NOW)
            pending = await ledger.plans.write_rows(conn, alert, plan(), NOW)
        async with ledger.database.reading() as conn:
            rows = sorted(
                (r.stakeholder_id, r.channel, r.state)
                for r in await conn.execute(
                    select(deliveries).where(deliveries.c.alert_id == alert.id)
                )
            )
            tokens = sorted(
                await conn.scalars(select(acks.c.stakeholder_id).where(acks.c.alert_id == alert.id))
            )
            escalated = (
                await conn.execute(
                    select(escalations.c.stakeholder_id, escalations.c.policy_id).where(
                        escalations.c.alert_id == alert.id
                    )
                )
            ).all()
            withheld = (
                await conn.execute(
                    select(
                        dissemination_records.c.stakeholder_id,
                        dissemination_records.c.justification,
                    ).where(dissemination_records.c.alert_id == alert.id)
                )
            ).all()
        shape = {channel: len(ids) for channel, ids in pending.items()}
        return rows, tokens, sorted(escalated), withheld, shape

    whole = await written("PLAN-WHOLE")
    monkeypatch.setattr(planrows, "PLAN_SLICE", 1)
    sliced = await written("PLAN-SLICED")
    assert sliced == whole
    rows, tokens, escalated, withheld, shape = sliced
    assert len(rows) == 4
    assert tokens == sorted([ana, cy])
    assert escalated == [(ana, policies[0])]
    assert withheld == [(ben, "clearance: TLP:AMBER above TLP:GREEN")]
    assert shape == {"webhook": 1, "email": 1, "sms": 1}
