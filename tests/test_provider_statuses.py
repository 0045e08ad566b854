"""Provider statuses in the ledger, on SQLite and PostgreSQL: a status that overtakes the
recording of its send is kept and applied by the settle, the two never miss each other
whichever commits first, the first final status stands, and unmatched ones are forgotten
after a day."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from core.alert import Tlp
from dissemination.intake.normalize import HandlingDefaults, alert_from_cap
from dissemination.ledger.alerts import Ledger, Payload
from dissemination.store.database import Database
from dissemination.store.rows import (
    AlertState,
    DeliveryState,
    PlannedRow,
    ProviderStatus,
    RowOutcome,
    claim_due,
    forget_unmatched_statuses,
    insert_planned,
    record_provider_status,
    settle_sending,
)
from dissemination.store.tables import deliveries, provider_statuses
from testbed.alerts import cap_json

NOW = datetime(2026, 11, 24, 15, 0, tzinfo=UTC)
SID = "SM" + "0" * 32
DELIVERED = ProviderStatus("sms", SID, "delivered")
UNDELIVERED = ProviderStatus("sms", SID, "undelivered", "30003", "undelivered: Twilio error 30003")

Step = Callable[[AsyncConnection], Awaitable[None]]


async def sending_row(database: Database) -> str:
    """An SMS row of a stored alert, claimed: `sending`, its provider id not yet known."""
    alert = alert_from_cap(
        cap_json("STATUS-1"), "cap-json", HandlingDefaults(Tlp.AMBER_STRICT, Tlp.CLEAR)
    )
    payload = Payload(b"{}", "application/json")
    await Ledger(database).record_alert(alert, payload, AlertState.RECEIVED, NOW)
    planned = PlannedRow("s-1", None, None, "sms", "+12025550100", DeliveryState.PENDING)
    values = planned.values(alert.id, NOW)
    async with database.transaction() as conn:
        await insert_planned(conn, database, [values])
        assert await claim_due(conn, [values["id"]], NOW) == [values["id"]]
    return str(values["id"])


def settle_sent(row_id: str) -> Step:
    async def step(conn: AsyncConnection) -> None:
        outcome = RowOutcome(row_id, "sms", DeliveryState.SENT, "accepted: queued", SID)
        await settle_sending(conn, [outcome], NOW)

    return step


def report(status: ProviderStatus, at: datetime = NOW) -> Step:
    async def step(conn: AsyncConnection) -> None:
        await record_provider_status(conn, status, at)

    return step


async def run(database: Database, step: Step) -> None:
    async with database.transaction() as conn:
        await step(conn)


async def row_of(database: Database, row_id: str) -> dict[str, Any]:
    async with database.reading() as conn:
        row = (await conn.execute(select(deliveries).where(deliveries.c.id == row_id))).one()
    return dict(row._mapping)


async def kept(database: Database) -> list[tuple[str, str]]:
    async with database.reading() as conn:
        result = await conn.execute(
            select(provider_statuses.c.provider_id, provider_statuses.c.status).order_by(
                provider_statuses.c.provider_id
            )
        )
        return [(provider_id, status) for provider_id, status in result]


async def test_a_status_that_overtakes_the_send_is_kept_then_applied(store: Database) -> None:
    row_id = await sending_row(store)
    await run(store, report(DELIVERED))
    assert await kept(store) == [(SID, "delivered")]
    assert (await row_of(store, row_id))["state"] == "sending"
    await run(store, settle_sent(row_id))
    row = await row_of(store, row_id)
    assert (row["state"], row["provider_id"], row["reason"]) == (
        "delivered",
        SID,
        "accepted: queued",
    )
    assert await kept(store) == []
    await run(store, report(UNDELIVERED))  # late, and a replay: nothing changes or is kept
    await run(store, report(DELIVERED))
    assert await row_of(store, row_id) == row
    assert await kept(store) == []


async def test_the_first_final_status_stands(store: Database) -> None:
    row_id = await sending_row(store)
    await run(store, report(UNDELIVERED))
    await run(store, report(DELIVERED))
    assert await kept(store) == [(SID, "undelivered")]
    await run(store, settle_sent(row_id))
    row = await row_of(store, row_id)
    assert (row["state"], row["reason"]) == ("failed", "undelivered: Twilio error 30003")


@pytest.mark.parametrize("first", ["settle", "status"])
async def test_a_status_and_the_settle_of_its_send_never_miss_each_other(
    store: Database, first: str
) -> None:
    """Whichever transaction starts first, the other waits for it to end, then sees it."""
    row_id = await sending_row(store)
    steps = [settle_sent(row_id), report(DELIVERED)]
    one, other = steps if first == "settle" else steps[::-1]
    async with store.transaction() as conn:
        await one(conn)
        waiting = asyncio.create_task(run(store, other))
        await asyncio.sleep(0.5)
        assert not waiting.done()
    await waiting
    assert (await row_of(store, row_id))["state"] == "delivered"
    assert await kept(store) == []


async def test_statuses_no_send_matched_are_forgotten_after_a_day(store: Database) -> None:
    for sid, age in (("SMold", timedelta(days=1, seconds=1)), ("SMnew", timedelta(hours=23))):
        await run(store, report(ProviderStatus("sms", sid, "delivered"), NOW - age))
    async with store.transaction() as conn:
        assert await forget_unmatched_statuses(conn, "email", NOW) == 0
        assert await forget_unmatched_statuses(conn, "sms", NOW) == 1
    assert await kept(store) == [("SMnew", "delivered")]
