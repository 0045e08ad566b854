"""Progress and reports against the running service: the alert list and its filters, one
alert's report (counts by state, time to first delivery, acknowledgment rate, who has not
acknowledged), its deliveries as JSON and CSV, the live Server-Sent Events streams, and the
CAP Ack published for originators that ask for one."""

from __future__ import annotations

import asyncio
import csv
import io
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import aio_pika
import aiohttp
import pytest
from aio_pika.abc import AbstractChannel
from defusedxml import ElementTree
from sqlalchemy import update

from dissemination.api.tokens import Role, TokenStore
from dissemination.ledger.progress import ack_series
from dissemination.service import Service
from dissemination.settings import Settings, load_settings
from dissemination.store.tables import cap_acks
from testbed.alerts import cap_json
from tests.brokerutil import open_connection
from tests.deliveryrig import (  # noqa: F401 - fixtures
    Sinks,
    delivery_env,
    delivery_settings_fixture,
    publish_alert,
    settled,
    sinks_fixture,
)
from tests.people import enrol

CAP_NS = "{urn:oasis:names:tc:emergency:cap:1.2}"
T0 = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


async def bearer(service: Service, role: Role = Role.VIEWER) -> dict[str, str]:
    assert service.database is not None
    _, secret = await TokenStore(service.database).create(f"{role}-p", role, datetime.now(UTC))
    return {"Authorization": f"Bearer {secret}"}


async def get(sinks: Sinks, path: str, headers: dict[str, str]) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(sinks.public_url + path, headers=headers) as response,
    ):
        if response.content_type == "application/json":
            return response.status, await response.json()
        return response.status, await response.text()


@pytest.mark.slow
async def test_an_alerts_report_counts_states_acks_and_who_has_not_acknowledged(
    service: Service, channel: AbstractChannel, settings: Settings, sinks: Sinks
) -> None:
    acked = await enrol(service, "Ada", {"webhook": sinks.hooks.base + "ok"}, ack_required=True)
    waiting = await enrol(service, "=Bo", {"email": "bo@example.org"}, ack_required=True)
    await enrol(service, "Cy", {"email": "cy@example.org"}, max_tlp="CLEAR")
    alert_id = await publish_alert(channel, settings, "REPORT-1")
    await settled(service, alert_id, 3)
    token = json.loads(sinks.hooks.requests[-1][1])["ack"]["token"]
    async with (
        aiohttp.ClientSession() as session,
        session.post(sinks.public_url + "/api/v1/acks", json={"token": token}) as response,
    ):
        assert response.status == 201
    viewer = await bearer(service)
    status, report = await get(sinks, f"/api/v1/alerts/{alert_id}", viewer)
    assert status == 200
    counts = report["counts"]
    assert (counts["targeted"], counts["sent"], counts["withheld"]) == (3, 2, 1)
    assert (counts["ackRequired"], counts["acknowledged"]) == (2, 1)
    assert report["notAcknowledged"] == [
        {"stakeholderId": waiting.id, "name": "=Bo", "organization": "Partner"}
    ]
    assert report["notAcknowledgedCount"] == 1
    assert report["timeToFirstDeliverySeconds"] >= 0
    assert report["ackRate"][-1]["acknowledged"] == 1
    assert report["ackRate"][-1]["rate"] == 0.5
    assert report["alert"]["handling"] == {"tlp": "GREEN", "caveats": []}

    status, listed = await get(sinks, f"/api/v1/alerts/{alert_id}/deliveries", viewer)
    assert status == 200
    by_name = {item["stakeholderName"]: item for item in listed["items"]}
    assert by_name["Ada"]["ackChannel"] == "webhook"
    assert by_name["Ada"]["stakeholderId"] == acked.id
    assert by_name["Cy"]["state"] == "withheld"
    status, text = await get(sinks, f"/api/v1/alerts/{alert_id}/deliveries.csv", viewer)
    assert status == 200
    table = list(csv.DictReader(io.StringIO(text)))
    assert len(table) == 3
    assert {row["stakeholderName"] for row in table} == {"Ada", "'=Bo", "Cy"}  # no formulas
    assert {row["resent"] for row in table} == {"false"}
    for path in ("", "/deliveries", "/deliveries.csv", "/events"):
        assert (await get(sinks, f"/api/v1/alerts/no-such{path}", viewer))[0] == 404
        assert (await get(sinks, f"/api/v1/alerts/{alert_id}{path}", {}))[0] == 401


@pytest.mark.slow
async def test_the_alert_list_filters_and_pages(
    service: Service, channel: AbstractChannel, settings: Settings, sinks: Sinks
) -> None:
    await enrol(service, "Dee", {"email": "dee@example.org"})
    first = await publish_alert(channel, settings, "LIST-1")
    await settled(service, first, 1)
    second = await publish_alert(channel, settings, "LIST-2", status="Exercise")
    await settled(service, second, 0)
    viewer = await bearer(service)
    status, page = await get(sinks, "/api/v1/alerts?limit=1", viewer)
    assert status == 200
    assert [item["id"] for item in page["items"]] == [second]
    status, page = await get(sinks, f"/api/v1/alerts?limit=1&after={page['next']}", viewer)
    assert [item["id"] for item in page["items"]] == [first]
    status, page = await get(sinks, "/api/v1/alerts?status=Actual&kind=cap", viewer)
    assert [item["id"] for item in page["items"]] == [first]
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).isoformat().replace("+", "%2B")
    status, page = await get(sinks, f"/api/v1/alerts?since={tomorrow}", viewer)
    assert page == {"items": [], "next": None}
    for bad in ("since=yesterday", "until=2026-11-24T00:00:00", "after=%%%", "colour=red"):
        status, body = await get(sinks, f"/api/v1/alerts?{bad}", viewer)
        assert (status, body["error"]["code"]) == (400, "invalid_parameter"), bad


async def next_event(stream: aiohttp.ClientResponse, alert_id: str) -> dict[str, Any]:
    """The next `progress` event about `alert_id` on an SSE stream."""
    while True:
        line = (await stream.content.readline()).decode()
        if line.startswith("data: "):
            event: dict[str, Any] = json.loads(line.removeprefix("data: "))
            if event["alertId"] == alert_id:
                return event


@pytest.mark.slow
async def test_progress_streams_follow_an_alert_and_all_alerts(
    service: Service, channel: AbstractChannel, settings: Settings, sinks: Sinks
) -> None:
    await enrol(service, "Eve", {"webhook": sinks.hooks.base + "ok"})
    viewer = await bearer(service)
    async with aiohttp.ClientSession(headers=viewer) as session:
        async with session.get(sinks.public_url + "/api/v1/events") as everything:
            assert everything.status == 200
            assert everything.content_type == "text/event-stream"
            alert_id = await publish_alert(channel, settings, "STREAM-1")
            event = await asyncio.wait_for(next_event(everything, alert_id), 30)
            while event["counts"]["sent"] < 1:
                event = await asyncio.wait_for(next_event(everything, alert_id), 30)
            assert event["counts"]["targeted"] == 1
        url = f"{sinks.public_url}/api/v1/alerts/{alert_id}/events"
        async with session.get(url) as one:
            event = await asyncio.wait_for(next_event(one, alert_id), 30)
            assert event["counts"]["sent"] == 1  # the current counts come at once


@pytest.fixture
async def cap_ack_run(
    service_env: dict[str, str], sinks: Sinks
) -> AsyncIterator[tuple[Service, Settings, AbstractChannel]]:
    env = delivery_env(service_env, sinks) | {
        "DISSEMINATION_CAP_ACK_SENDERS": "alerts@fusion.example.gov",
        "DISSEMINATION_ESCALATION_POLL_SECONDS": "0.1",
    }
    settings = load_settings(env)
    service = Service(settings)
    await service.start()
    connection = await open_connection(settings)
    try:
        yield service, settings, await connection.channel(publisher_confirms=True)
    finally:
        await connection.close()
        await service.stop()


@pytest.mark.slow
async def test_a_cap_ack_is_published_once_the_alert_is_disseminated(
    cap_ack_run: tuple[Service, Settings, AbstractChannel], sinks: Sinks
) -> None:
    service, settings, channel = cap_ack_run
    queue = await channel.declare_queue("", exclusive=True)
    await queue.bind(settings.cap_ack.exchange, routing_key="#")
    await enrol(service, "Fay", {"webhook": sinks.hooks.base + "ok"})
    alert_id = await publish_alert(channel, settings, "WANTS-ACK")
    await settled(service, alert_id, 1)
    message = await next_message(queue)
    root = ElementTree.fromstring(message.body)
    original = cap_json("WANTS-ACK")
    fields = {child.tag.removeprefix(CAP_NS): child.text or "" for child in root}
    assert fields["msgType"] == "Ack"
    assert fields["references"] == f"{original['sender']},WANTS-ACK,{original['sent']}"
    assert fields["sender"] == settings.cap_ack.sender
    assert fields["addresses"] == original["sender"]
    assert fields["sent"].endswith("-00:00")
    assert message.message_id == fields["identifier"]
    assert service.cap_acks is not None
    assert await service.cap_acks.run_due() == 0  # once only
    # An instance that died between claiming and publishing: another takes the claim over.
    assert service.database is not None
    async with service.database.transaction() as conn:
        await conn.execute(
            update(cap_acks).values(
                published_at=None, claimed_at=datetime.now(UTC) - timedelta(minutes=2)
            )
        )
    assert await service.cap_acks.run_due() == 1
    again = await next_message(queue)
    assert again.message_id == message.message_id
    other = await publish_alert(channel, settings, "NO-ACK", sender="someone@else.example")
    await settled(service, other, 1)
    assert await service.cap_acks.run_due() == 0  # its sender did not ask for one


async def next_message(queue: aio_pika.abc.AbstractQueue) -> aio_pika.abc.AbstractIncomingMessage:
    async with queue.iterator() as messages:
        async for message in messages:
            await message.ack()
            return message
    raise AssertionError("the queue closed")


def test_the_ack_rate_series_is_cumulative_in_at_most_120_buckets() -> None:
    moments = [T0 + timedelta(minutes=m) for m in (0.5, 0.7, 3.2)]
    series = ack_series(T0, moments, 4)
    assert [(p["acknowledged"], p["rate"]) for p in series] == [
        (2, 0.5),
        (2, 0.5),
        (2, 0.5),
        (3, 0.75),
    ]
    assert series[0]["at"] == (T0 + timedelta(minutes=1)).isoformat()
    long = ack_series(T0, [T0 + timedelta(hours=h) for h in range(1, 11)], 10)
    assert len(long) <= 120
    assert long[-1]["acknowledged"] == 10
    assert ack_series(None, moments, 4) == []
    assert ack_series(T0, [], 4) == []


@pytest.mark.slow
async def test_conflicting_marks_reach_only_those_cleared_for_the_strictest_and_are_reported(
    service: Service, channel: AbstractChannel, settings: Settings, sinks: Sinks
) -> None:
    await enrol(service, "Green only", {"webhook": sinks.hooks.base + "g"}, max_tlp="GREEN")
    await enrol(service, "Amber cleared", {"webhook": sinks.hooks.base + "a"}, max_tlp="AMBER")
    info = dict(cap_json()["info"][0])
    weaker, stricter = dict(info), dict(info)
    weaker["parameter"] = [{"valueName": "TLP", "value": "GREEN"}]
    stricter["parameter"] = [{"valueName": "TLP", "value": "AMBER"}]
    alert_id = await publish_alert(
        channel, settings, "TWO-MARKS", handling={"tlp": "GREEN"}, info=[weaker, stricter]
    )
    rows = await settled(service, alert_id, 2)
    by_state = sorted((row["state"], row["address"].rsplit("/", 1)[1]) for row in rows)
    assert by_state == [("sent", "a"), ("withheld", "g")]
    assert {row["reason"] for row in rows if row["state"] == "withheld"} == {"tlp_above_clearance"}
    assert sinks.hooks.calls == {"a": 1}
    [(_, body)] = sinks.hooks.requests
    assert json.loads(body)["alert"]["handling"]["tlp"] == "AMBER"
    status, report = await get(sinks, f"/api/v1/alerts/{alert_id}", await bearer(service))
    assert status == 200
    marks = report["alert"]["handling"]
    assert marks == {"tlp": "AMBER", "caveats": [], "conflict": ["GREEN", "AMBER"]}
