"""Claims and settles on PostgreSQL read the rows they name by index however small the
`deliveries` table was when their statements first ran: after more than five runs PostgreSQL
may keep one plan for a prepared statement, and one kept while the table was small reads all
of it (a sequential scan) for every claim and settle of the first large fan-out that follows,
until autovacuum analyzes the table."""

from __future__ import annotations

import contextlib
import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text

from dissemination.acks.tracking import AckIssuer
from dissemination.api.directory import load_matcher
from dissemination.delivery.claims import DeliveryStore, Settlement
from dissemination.directory.store import Directory
from dissemination.intake.pipeline import AlertPipeline
from dissemination.ledger.alerts import Ledger, Payload
from dissemination.ledger.planning import Planner
from dissemination.settings import IntakeSettings
from dissemination.store.database import Database
from dissemination.store.rows import DeliveryState
from testbed.alerts import cap_json
from testbed.directory import enrol_many
from testbed.smalltable import claim_and_settle_nothing

pytestmark = pytest.mark.parametrize("store_kind", ["postgresql"])
TARGETS = 2000
CHUNK = 10
"""Claims of a few rows of thousands, as a small alert's: read by index at any table size
PostgreSQL plans for (a large claim of a small table is cheaper read whole)."""


async def sequential_scans_of_deliveries(database: Database) -> int:
    """The server's count, once every pooled connection has handed in its own: a backend
    reports its counts when it goes idle at most once a second, unless told to at once."""
    async with contextlib.AsyncExitStack() as held:
        for _ in range(database.engine.pool.checkedin()):  # type: ignore[attr-defined]
            conn = await held.enter_async_context(database.reading())
            await conn.execute(text("SELECT pg_stat_force_next_flush()"))
    async with database.reading() as conn:
        return int(
            await conn.scalar(
                text("SELECT seq_scan FROM pg_stat_user_tables WHERE relname = 'deliveries'")
            )
        )


async def planned_rows(database: Database) -> list[str]:
    """One alert to every enrolled stakeholder, taken in: its pending row ids."""
    planner = Planner(await load_matcher(Directory(database)))
    pipeline = AlertPipeline(
        Ledger(database, planner, AckIssuer(timedelta(hours=24))),
        IntakeSettings(1_048_576, 64, "AMBER", "CLEAR"),
    )
    alert = cap_json(f"PLANS-{uuid.uuid4().hex[:8]}", handling={"tlp": "GREEN"})
    result = await pipeline.process(Payload(json.dumps(alert).encode(), "application/json"))
    return result.waiting("webhook")


async def test_a_fan_out_after_small_beginnings_never_scans_the_whole_table(
    store: Database,
) -> None:
    await enrol_many(store, TARGETS, "webhook", lambda n: f"https://hooks.example.org/{n}")
    delivery = DeliveryStore(store)
    await claim_and_settle_nothing(delivery, 8)  # while the table is empty
    pending = await planned_rows(store)
    assert len(pending) == TARGETS
    before = await sequential_scans_of_deliveries(store)
    for start in range(0, 10 * CHUNK, CHUNK):
        claim = await delivery.claim(pending[start : start + CHUNK], datetime.now(UTC))
        assert len(claim.rows) == CHUNK
        sent = [Settlement(row, DeliveryState.SENT, "HTTP 204", "204") for row in claim.rows]
        await delivery.settle(sent, datetime.now(UTC))
    assert await sequential_scans_of_deliveries(store) == before
