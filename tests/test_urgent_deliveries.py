"""An imminent threat does not wait behind a fan-out: while a large alert's deliveries fill a
worker (its sends stalled at the receiver, more of its tasks queued behind them), an urgent
alert's delivery goes out at once, on the urgent queue and send slots of its own; the queued
work then finishes, nothing lost."""

from __future__ import annotations

import pytest

from dissemination.service import Service
from tests.deliveryrig import (  # noqa: F401 (fixtures)
    Sinks,
    StartService,
    custom_service_fixture,
    publish_alert,
    settled,
    sinks_fixture,
)
from tests.people import enrol

pytestmark = pytest.mark.slow

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
