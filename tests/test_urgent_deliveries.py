"""An imminent threat does not wait behind a fan-out: while a large alert's deliveries fill a
worker (its sends stalled at the receiver, more of its tasks queued behind them), an urgent
alert's delivery goes out at once, on the urgent queue and send slots of its own; the queued
work then finishes, nothing lost. The ordinary lane claims nothing more while urgent rows
are under way, and an imminent threat's follow-up and fallback rows go the urgent way too."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import select, text

from core.clock import utc_now
from dissemination.acks.followup import follow_up
from dissemination.delivery.lanes import SendLane
from dissemination.service import Service
from dissemination.store.audit import Actor
from dissemination.store.tables import deliveries
from testbed.alerts import cap_json
from tests.brokerutil import wait_until
from tests.deliveryrig import (  # noqa: F401 (fixtures)
    RecordingDispatcher,
    Sinks,
    StartService,
    custom_service_fixture,
    publish_alert,
    recorded,
    rows_of,
    settled,
    sinks_fixture,
)
from tests.people import enrol

BULK = 6
"""The large alert's recipients: three tasks of two rows, one held by the worker at a time,
two rows sent at a time, so two stall at the receiver and two tasks wait on the queue."""


async def _recipients(service: Service, sinks: Sinks) -> None:
    for n in range(BULK):
        await enrol(
            service,
            f"Bulk {n}",
            {"webhook": sinks.hooks.base + "stall"},
            rule={"categories": ["Safety"]},
        )
    await enrol(
        service, "Urgent", {"webhook": sinks.hooks.base + "ok-urgent"}, rule={"categories": ["Met"]}
    )


@pytest.mark.slow
async def test_an_urgent_alert_overtakes_a_fan_out_in_progress(
    custom_service: StartService, sinks: Sinks
) -> None:
    service, settings, channel = await custom_service(
        delivery_concurrency="2", broker_task_batch_size="2", broker_delivery_prefetch="1"
    )
    await _recipients(service, sinks)
    hooks = sinks.hooks
    bulk_info = {
        "language": "en-US",
        "category": ["Safety"],
        "event": "Road closures",
        "urgency": "Expected",
        "severity": "Moderate",
        "certainty": "Likely",
        "headline": "Road closures for the parade",
        "expires": "2099-01-01T00:00:00-05:00",
    }
    bulk = await publish_alert(channel, settings, "BULK-1", info=[bulk_info])
    await hooks.called("stall", 2)  # the first task's two rows, stalled at the receiver

    urgent = await publish_alert(channel, settings, "URGENT-1")  # Met, Immediate, Severe
    await hooks.called("ok-urgent", 1)
    assert hooks.calls["stall"] == 2  # the fan-out has not moved meanwhile

    hooks.release.set()
    assert [row["state"] for row in await settled(service, urgent, 1)] == ["sent"]
    rows = await settled(service, bulk, BULK)
    assert [row["state"] for row in rows] == ["sent"] * BULK
    assert hooks.calls["stall"] == BULK


async def test_the_ordinary_lane_claims_nothing_while_urgent_rows_are_under_way() -> None:
    urgent = SendLane(2, 2)
    ordinary = SendLane(2, 2, yields_to=urgent)
    assert not ordinary.full()
    urgent.unsettled = 3  # claimed, not yet settled
    assert ordinary.full()
    assert not urgent.full()  # the urgent lane yields to none

    async def room_for_ordinary() -> None:
        async with ordinary.room:
            await ordinary.room.wait_for(lambda: not ordinary.full())

    waiting = asyncio.create_task(room_for_ordinary())
    await urgent.release(2)
    await asyncio.sleep(0)  # let the waiter look: one urgent row is still under way
    assert not waiting.done()
    await urgent.release(1)
    await asyncio.wait_for(waiting, 5)  # woken by the last urgent row's release
    ordinary.unsettled = 4
    assert ordinary.full()  # its own limit still holds: twice its concurrency


@pytest.mark.slow
@pytest.mark.parametrize(("urgency", "urgent"), [("Immediate", True), ("Expected", False)])
async def test_a_follow_up_of_an_imminent_threat_goes_ahead_of_others_queued(
    custom_service: StartService, sinks: Sinks, urgency: str, urgent: bool
) -> None:
    service, settings, channel = await custom_service()
    await enrol(service, "Riley Quinn", {"webhook": sinks.hooks.base + "ok"}, ack_required=True)
    info = dict(cap_json()["info"][0], urgency=urgency, severity="Extreme")
    alert_id = await publish_alert(channel, settings, f"FOLLOW-{urgency}", info=[info])
    await settled(service, alert_id, 1)
    made = await follow_up(service.database, alert_id, Actor(None, "analyst"), utc_now())
    assert (made.recipients, [len(ids) for ids in made.rows.values()]) == (1, [1])
    assert made.urgent is urgent


@pytest.mark.slow
async def test_an_urgent_alert_s_fallback_to_the_next_channel_goes_the_urgent_way(
    custom_service: StartService, sinks: Sinks
) -> None:
    service, settings, channel = await custom_service()
    await enrol(
        service,
        "Riley Quinn",
        {"webhook": sinks.hooks.base + "missing", "email": "riley@example.org"},
    )
    (webhooks,) = [w for w in service.workers if w.channel == "webhook"]
    recording = RecordingDispatcher(webhooks.dispatcher)
    webhooks.dispatcher = recording
    alert_id = await publish_alert(channel, settings, "FALLBACK-URGENT")  # Immediate, Severe
    rows = await settled(service, alert_id, 2)  # the webhook's 404, then the email
    states = {row["channel"]: row["state"] for row in rows}
    assert states == {"webhook": "failed", "email": "sent"}
    (email,) = [row["id"] for row in rows if row["channel"] == "email"]
    assert recording.by_urgency == {True: [email], False: []}


@pytest.mark.slow
async def test_an_urgent_alert_s_retry_waits_in_an_urgent_retry_queue(
    custom_service: StartService, sinks: Sinks
) -> None:
    service, settings, channel = await custom_service()
    await enrol(service, "Riley Quinn", {"webhook": sinks.hooks.base + "flaky"})  # 503 once
    (webhooks,) = [w for w in service.workers if w.channel == "webhook"]
    recording = RecordingDispatcher(webhooks.dispatcher)
    webhooks.dispatcher = recording
    alert_id = await publish_alert(channel, settings, "RETRY-URGENT")  # Immediate, Severe
    (row,) = await settled(service, alert_id, 1)
    assert (row["state"], row["attempts"]) == ("sent", 2)  # back, by the urgent retry tier
    assert recording.delayed == {True: [row["id"]], False: []}


@pytest.mark.slow
async def test_an_urgent_alert_is_stored_while_another_intake_transaction_waits(
    custom_service: StartService, store_kind: str
) -> None:
    """An urgent alert commits in a transaction of its own: here the other one is a Cancel
    held at its original's pending row (locked by the test), as a large fan-out's planning
    would hold the queue of messages to commit. PostgreSQL only: SQLite has one writer."""
    if store_kind == "sqlite":
        pytest.skip("SQLite commits one transaction at a time whatever the service does")
    service, settings, channel = await custom_service(delivery_channels="")
    await enrol(service, "Riley Quinn", {"email": "riley@example.org"})
    calm = dict(cap_json()["info"][0], urgency="Expected", severity="Moderate")
    original = cap_json("HELD-ORIGINAL", handling={"tlp": "GREEN"}, info=[calm])
    original_id = await publish_alert(channel, settings, "HELD-ORIGINAL", info=[calm])
    await settled_as(service, original_id, "pending")
    reference = f"{original['sender']},{original['identifier']},{original['sent']}"
    async with service.database.engine.connect() as blocker:
        await blocker.execute(
            select(deliveries.c.id).where(deliveries.c.alert_id == original_id).with_for_update()
        )
        cancel = await publish_alert(
            channel, settings, "HELD-CANCEL", msgType="Cancel", references=reference, info=[calm]
        )
        await wait_until(lambda: waiting_on_a_lock(service), what="the Cancel to wait")
        urgent = await publish_alert(channel, settings, "NOT-HELD-URGENT")
        await settled_as(service, urgent, "pending")  # stored and planned meanwhile
        assert not await recorded(service, cancel)
        await blocker.rollback()
    await settled_as(service, cancel, "pending")


async def settled_as(service: Service, alert_id: str, state: str) -> None:
    async def planned() -> bool:
        rows = await rows_of(service, alert_id)
        return len(rows) == 1 and rows[0]["state"] == state

    await wait_until(planned, what=f"a {state} row")


async def waiting_on_a_lock(service: Service) -> bool:
    async with service.database.reading() as conn:
        waiting = await conn.scalar(
            text(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE wait_event_type = 'Lock' AND datname = current_database()"
            )
        )
    return bool(waiting)
