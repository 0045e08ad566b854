"""An alert is never sent after it expired, whatever held its rows back: approval, quiet
hours, a retry or an escalation step. The rows are claimed only while the alert is current;
after its expiry they end `suppressed` with reason `expired`, and nothing reaches a sink.
Runs the real service on a clock the test moves."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from dissemination.service import Service
from dissemination.settings import load_settings
from tests.alerts import fixture_document
from tests.approvalrig import call, held_rows, submit, token
from tests.deliveryrig import (  # noqa: F401 - fixtures
    Sinks,
    delivery_env,
    settled,
    sinks_fixture,
)
from tests.fakeclock import FakeClock
from tests.people import enrol

pytestmark = pytest.mark.slow


@pytest.fixture
async def clocked_service(
    service_env: dict[str, str], sinks: Sinks
) -> AsyncIterator[tuple[Service, FakeClock]]:
    clock = FakeClock(datetime.now(UTC))
    service = Service(load_settings(delivery_env(service_env, sinks)), clock=clock)
    await service.start()
    try:
        yield service, clock
    finally:
        await service.stop()


async def approve_after(
    service: Service, clock: FakeClock, sinks: Sinks, identifier: str, rows: int, minutes: int
) -> str:
    """Submit a RED advisory expiring in ten minutes (held for approval), move the clock on
    `minutes`, and have another administrator approve it; returns its id."""
    alice = await token(service, "alice")
    bob = await token(service, "bob")
    expires = (clock.now + timedelta(minutes=10)).isoformat(timespec="seconds")
    document = fixture_document("advisory_minimal.json") | {
        "identifier": identifier,
        "handling": {"tlp": "RED"},
        "expires": expires,
    }
    alert_id = await submit(sinks, alice, document)
    await held_rows(service, alert_id, rows)
    clock.advance(minutes * 60)
    status, approved = await call(sinks, "POST", f"/api/v1/alerts/{alert_id}/approve", bob, {})
    assert status == 200, approved
    assert approved["released"] == rows
    return alert_id


async def test_an_alert_approved_after_it_expired_is_never_sent(
    clocked_service: tuple[Service, FakeClock], sinks: Sinks
) -> None:
    service, clock = clocked_service
    await enrol(service, "Duty officer", {"email": "duty@example.org"}, max_tlp="RED")
    await enrol(service, "Field unit", {"sms": "+12025550142"}, max_tlp="RED")
    alert_id = await approve_after(service, clock, sinks, "EXPIRES-WHILE-HELD", 2, minutes=11)
    rows = await settled(service, alert_id, 2)
    assert {(row["state"], row["reason"]) for row in rows} == {("suppressed", "expired")}
    assert [row["attempts"] for row in rows] == [0, 0]
    assert sinks.smtp.messages == []
    assert sinks.twilio.messages == []


async def test_rows_of_a_current_alert_are_still_sent(
    clocked_service: tuple[Service, FakeClock], sinks: Sinks
) -> None:
    service, clock = clocked_service
    await enrol(service, "Duty officer", {"email": "duty@example.org"}, max_tlp="RED")
    alert_id = await approve_after(service, clock, sinks, "STILL-CURRENT", 1, minutes=9)
    [row] = await settled(service, alert_id, 1)
    assert row["state"] == "sent"
    assert len(sinks.smtp.messages) == 1
