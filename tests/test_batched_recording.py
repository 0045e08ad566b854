"""Alerts of several messages recorded in one transaction (the intake's group commit), on
SQLite and PostgreSQL: each message gets the outcome it would get alone, duplicates and
conflicts are recognised inside a batch too, references see only what came before, a failed
batch stores none of itself, and one bad message does not sink its neighbours."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from core.alert import Alert, Tlp
from core.errors import RejectedInput
from dissemination.intake.normalize import HandlingDefaults, alert_from_cap
from dissemination.intake.pipeline import AlertPipeline, initial_state
from dissemination.ledger.alerts import AlertMessage, Ledger, Payload, PlannedAlert
from dissemination.ledger.alerts import RecordOutcome as Outcome
from dissemination.settings import IntakeSettings, StoreSettings
from dissemination.store.database import Database
from dissemination.store.tables import payloads
from testbed.alerts import cap_json

NOW = datetime(2026, 11, 24, 15, 0, tzinfo=UTC)
DEFAULTS = HandlingDefaults(Tlp.AMBER_STRICT, Tlp.CLEAR)
SENDER = "alerts@fusion.example.gov"
SENT = "2026-11-24T10:00:00-05:00"


@pytest.fixture
async def pipeline(store_url: str, tmp_path: Path) -> AsyncIterator[AlertPipeline]:
    database = Database.from_settings(StoreSettings(store_url, 5, 0.05, 0.2), tmp_path)
    yield AlertPipeline(Ledger(database), IntakeSettings(1_048_576, 64, "AMBER", "CLEAR"))
    await database.close()


def alert(identifier: str, **overrides: Any) -> Alert:
    return alert_from_cap(cap_json(identifier, **overrides), "cap-json", DEFAULTS)


def message(*alerts: Alert, body: bytes | None = None) -> AlertMessage:
    body = body if body is not None else ",".join(a.identifier for a in alerts).encode()
    planned = tuple(PlannedAlert(a, initial_state(a, NOW)) for a in alerts)
    return AlertMessage(Payload(body, "application/json"), planned, NOW)


def outcomes(recorded: Sequence[Any]) -> list[list[Outcome]]:
    """Each message's outcomes (none of these messages is refused)."""
    assert not any(isinstance(each, RejectedInput) for each in recorded)
    return [[each.outcome for each in per_message] for per_message in recorded]


async def payload_count(pipeline: AlertPipeline) -> int:
    async with pipeline.ledger.database.reading() as conn:
        return int(await conn.scalar(select(func.count()).select_from(payloads)) or 0)


async def test_each_message_of_a_batch_gets_the_outcome_it_would_get_alone(
    pipeline: AlertPipeline,
) -> None:
    batch = [
        message(alert("B-1")),
        message(alert("B-2")),
        message(alert("B-1"), body=b"B-1 rendered again"),  # the same alert again
        message(alert("B-2", status="Exercise"), body=b"B-2 changed"),  # same key, other content
        message(alert("B-3"), alert("B-4")),  # two alerts in one message
    ]
    recorded = await pipeline.record_messages(batch)
    assert outcomes(recorded) == [
        [Outcome.STORED],
        [Outcome.STORED],
        [Outcome.DUPLICATE],
        [Outcome.CONFLICT],
        [Outcome.STORED, Outcome.STORED],
    ]
    assert await pipeline.ledger.counts() == {"alerts": 4, "rejections": 0, "quarantine": 1}
    assert await payload_count(pipeline) == 5  # every payload kept, each once
    row = await pipeline.ledger.alert_row(alert("B-2").id)
    assert row is not None
    assert row["status"] == "Actual"  # the first of the two stays


async def test_a_redelivered_batch_is_recognised_and_changes_nothing(
    pipeline: AlertPipeline,
) -> None:
    batch = [message(alert(f"R-{i}")) for i in range(5)]
    assert outcomes(await pipeline.record_messages(batch)) == [[Outcome.STORED]] * 5
    assert outcomes(await pipeline.record_messages(batch)) == [[Outcome.DUPLICATE]] * 5
    assert await pipeline.ledger.counts() == {"alerts": 5, "rejections": 0, "quarantine": 0}


async def test_references_in_a_batch_see_what_came_before_them_only(
    pipeline: AlertPipeline,
) -> None:
    def update(identifier: str, of: str) -> Alert:
        return alert(identifier, msgType="Update", references=f"{SENDER},{of},{SENT}")

    batch = [
        message(alert("O-1")),
        message(update("U-1", of="O-1")),  # its original is earlier in the batch
        message(update("U-2", of="O-2")),  # its original comes after it
        message(alert("O-2")),
    ]
    recorded = await pipeline.record_messages(batch)
    assert outcomes(recorded) == [[Outcome.STORED]] * 4
    (first,) = await pipeline.ledger.references_of(alert("U-1").id)
    (second,) = await pipeline.ledger.references_of(alert("U-2").id)
    assert (first["resolved"], second["resolved"]) == (1, 0)


def poisonous(identifier: str) -> AlertMessage:
    """A message whose alert the store refuses (no `sent` instant: a NOT NULL column)."""
    broken = dataclasses.replace(alert(identifier), sent=None)  # type: ignore[arg-type]
    return message(broken)


async def test_a_batch_that_fails_stores_none_of_itself(pipeline: AlertPipeline) -> None:
    good = [message(alert(f"F-{i}")) for i in range(3)]
    with pytest.raises(Exception, match=r"(?i)null"):
        await pipeline.record_messages([*good, poisonous("F-bad")])
    assert await pipeline.ledger.counts() == {"alerts": 0, "rejections": 0, "quarantine": 0}
    assert await payload_count(pipeline) == 0


async def test_a_bad_message_does_not_sink_the_others_of_its_batch(
    pipeline: AlertPipeline,
) -> None:
    batch = [message(alert("G-1")), poisonous("G-bad"), message(alert("G-2"))]
    results = await asyncio.gather(
        *(pipeline.writer.submit(each) for each in batch), return_exceptions=True
    )
    assert isinstance(results[1], Exception)
    assert [outcomes([r])[0] for r in (results[0], results[2])] == [
        [Outcome.STORED],
        [Outcome.STORED],
    ]
    assert await pipeline.ledger.counts() == {"alerts": 2, "rejections": 0, "quarantine": 0}
