"""Planning at intake, on both stores: matched targets become pending ledger rows and
withheld ones withheld rows, in the alert's transaction; delivery tasks carry the pending
row ids; an Update reaches the earlier recipients even after their rule is gone."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Any

import pytest
from aio_pika.abc import AbstractChannel
from sqlalchemy import select

from core.alert import alert_id_for
from dissemination.api.directory import ADMIN
from dissemination.broker.dispatch import delivery_queue, urgent_queue
from dissemination.directory.store import CONTACT, STAKEHOLDER, SUBSCRIPTION, Directory, EntitySpec
from dissemination.directory.sync import apply_change
from dissemination.service import Service
from dissemination.settings import Settings, load_settings
from dissemination.store.audit import Actor
from dissemination.store.tables import alerts, deliveries
from subscriptions.codec import validate_stakeholder, validate_subscription
from testbed.alerts import cap_json
from tests.brokerutil import get_all, publish, wait_until

pytestmark = pytest.mark.slow
ACTOR = Actor(None, "test")


@pytest.fixture
def settings(service_env: dict[str, str]) -> Settings:
    """No delivery workers: the tasks stay on their queues for the tests to read."""
    return load_settings(service_env | {"DISSEMINATION_DELIVERY_CHANNELS": ""})


async def _create(service: Service, spec: EntitySpec, fields: dict[str, Any]) -> str:
    assert service.database is not None
    assert service.http is not None
    record, _ = await Directory(service.database).create(spec, fields, ACTOR, datetime.now(UTC))
    apply_change(service.http.app[ADMIN].matcher, spec, record, record["id"])
    return str(record["id"])


async def _person(service: Service, name: str, max_tlp: str, kind: str = "individual") -> str:
    fields = validate_stakeholder(
        {
            "name": name,
            "organization": "Example County",
            "sector": "emergency_management",
            "kind": kind,
            "clearance": {"maxTlp": max_tlp},
        }
    )
    sid = await _create(service, STAKEHOLDER, fields)
    await _create(
        service,
        CONTACT,
        {
            "stakeholderId": sid,
            "channel": "email",
            "address": f"{name}@example.org",
            "label": "",
            "active": True,
        },
    )
    return sid


async def _subscribe(service: Service, sid: str, rule: dict[str, Any], **more: Any) -> str:
    fields = validate_subscription(
        {"stakeholderId": sid, "rule": rule, "channels": ["email"], **more}
    )
    return await _create(service, SUBSCRIPTION, fields)


async def _rows(service: Service, alert_id: str) -> list[dict[str, Any]]:
    assert service.database is not None
    async with service.database.reading() as conn:
        result = await conn.execute(
            select(deliveries)
            .where(deliveries.c.alert_id == alert_id)
            .order_by(deliveries.c.address)
        )
        return [dict(r) for r in result.mappings()]


async def _state(service: Service, alert_id: str) -> str | None:
    assert service.database is not None
    async with service.database.reading() as conn:
        return await conn.scalar(select(alerts.c.state).where(alerts.c.id == alert_id))


def _id(document: dict[str, Any]) -> str:
    return alert_id_for(document["sender"], document["identifier"], document["sent"])


async def test_targets_and_withheld_become_rows_and_tasks(
    service: Service, channel: AbstractChannel, settings: Settings
) -> None:
    cleared = await _person(service, "cleared", "AMBER")
    limited = await _person(service, "limited", "GREEN")
    for sid in (cleared, limited):
        await _subscribe(service, sid, {"categories": ["Met"]})
    document = cap_json("PLAN-1", handling={"tlp": "AMBER"})
    await publish(channel, settings, json.dumps(document).encode())
    alert_id = _id(document)

    async def planned() -> bool:
        return await _state(service, alert_id) == "planned"

    await wait_until(planned, what="the alert to be planned")
    rows = await _rows(service, alert_id)
    assert [(r["address"], r["state"], r["reason"]) for r in rows] == [
        ("cleared@example.org", "pending", None),
        ("limited@example.org", "withheld", "tlp_above_clearance"),
    ]
    # an actual alert, Immediate and Severe: an imminent threat, onto the urgent queue
    (task,) = await get_all(channel, urgent_queue(settings.broker, "email"), 1)
    body = json.loads(task.body)
    assert body["deliveries"] == [rows[0]["id"]]
    assert 0 <= time.time() - body["published_at"] < 60  # for the worker's time in the queue
    assert await get_all(channel, delivery_queue(settings.broker, "email"), 1, timeout=0.5) == []


@pytest.mark.parametrize(
    ("status", "urgency", "severity", "urgent"),
    [
        ("Actual", "Immediate", "Extreme", True),
        ("Actual", "Immediate", "Moderate", False),
        ("Actual", "Expected", "Extreme", False),
        ("Exercise", "Immediate", "Extreme", False),
    ],
)
async def test_only_an_imminent_threat_goes_onto_the_urgent_queue(
    service: Service,
    channel: AbstractChannel,
    settings: Settings,
    status: str,
    urgency: str,
    severity: str,
    urgent: bool,
) -> None:
    person = await _person(service, "someone", "AMBER")
    await _subscribe(service, person, {"categories": ["Met"]}, includeExercises=True)
    document = cap_json("PLAN-URGENT", status=status)
    calm = dict(document["info"][0], urgency="Past", severity="Minor")
    document["info"] = [calm, dict(calm, urgency=urgency, severity=severity)]  # any block
    await publish(channel, settings, json.dumps(document).encode())
    urgent_name = urgent_queue(settings.broker, "email")
    other_name = delivery_queue(settings.broker, "email")
    (task,) = await get_all(channel, urgent_name if urgent else other_name, 1)
    assert len(json.loads(task.body)["deliveries"]) == 1
    left = await get_all(channel, other_name if urgent else urgent_name, 1, timeout=0.5)
    assert left == []


async def test_update_reaches_earlier_recipients_after_their_rule_is_gone(
    service: Service, channel: AbstractChannel, settings: Settings
) -> None:
    sid = await _person(service, "earlier", "AMBER")
    subscription = await _subscribe(service, sid, {"categories": ["Met"]})
    original = cap_json("UPD-1")
    await publish(channel, settings, json.dumps(original).encode())

    async def planned(alert_id: str) -> bool:
        return await _state(service, alert_id) == "planned"

    await wait_until(lambda: planned(_id(original)), what="the original to be planned")
    assert service.database is not None
    assert service.http is not None
    await Directory(service.database).delete(SUBSCRIPTION, subscription, ACTOR, datetime.now(UTC))
    apply_change(service.http.app[ADMIN].matcher, SUBSCRIPTION, None, subscription)
    reference = f"{original['sender']},{original['identifier']},{original['sent']}"
    update = cap_json("UPD-2", msgType="Update", references=reference)
    await publish(channel, settings, json.dumps(update).encode())
    await wait_until(lambda: planned(_id(update)), what="the update to be planned")
    rows = await _rows(service, _id(update))
    assert [(r["address"], r["state"], r["origin"]) for r in rows] == [
        ("earlier@example.org", "pending", "referenced")
    ]


async def test_draft_and_expired_alerts_get_no_rows(
    service: Service, channel: AbstractChannel, settings: Settings
) -> None:
    sid = await _person(service, "anyone", "RED")
    await _subscribe(service, sid, {})
    draft = cap_json("NOPLAN-1", status="Draft")
    expired = cap_json("NOPLAN-2")
    expired["info"][0]["expires"] = "2020-01-01T00:00:00-00:00"
    for document in (draft, expired):
        await publish(channel, settings, json.dumps(document).encode())

    async def recorded() -> bool:
        return None not in [await _state(service, _id(d)) for d in (draft, expired)]

    await wait_until(recorded, what="both alerts recorded")
    assert [await _state(service, _id(d)) for d in (draft, expired)] == ["draft", "expired"]
    assert await _rows(service, _id(draft)) == []
    assert await _rows(service, _id(expired)) == []
