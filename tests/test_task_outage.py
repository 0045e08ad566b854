"""A delivery task that meets a store outage is handed back to its queue only after the
worker's outage backoff, and the backoff starts over once a task gets through: handed back
at once, every task span through the broker as fast as the store failed, and where a requeue
counts against a delivery limit (RabbitMQ 4.0-4.2) a short outage dropped the task."""

from __future__ import annotations

from datetime import datetime

import pytest
from aio_pika.abc import AbstractChannel

from core.errors import StoreUnavailable
from dissemination.delivery.claims import Claim
from dissemination.retrying import Backoff
from dissemination.service import Service
from dissemination.settings import Settings
from tests.deliveryrig import (  # noqa: F401 - fixtures
    Sinks,
    delivery_settings_fixture,
    publish_alert,
    rows_of,
    settled,
    sinks_fixture,
)
from tests.people import enrol


class CountedBackoff(Backoff):
    """The worker's outage backoff, counted, without the wait."""

    def __init__(self) -> None:
        super().__init__(0.0, 0.0)
        self.waits = 0
        self.resets = 0

    def next_delay(self) -> float:
        self.waits += 1
        return 0.0

    def reset(self) -> None:
        self.resets += 1
        super().reset()


async def test_a_task_meeting_an_outage_waits_the_backoff_before_it_is_handed_back(
    service: Service,
    channel: AbstractChannel,
    settings: Settings,
    sinks: Sinks,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    await enrol(service, "Desk", {"webhook": sinks.hooks.base + "ok"})
    worker = next(w for w in service.workers if w.channel == "webhook")
    backoff = CountedBackoff()
    monkeypatch.setattr(worker, "outage_backoff", backoff)
    real_claim = worker.store.claim
    outage = 3

    async def claim(ids: list[str], now: datetime) -> Claim:
        nonlocal outage
        if outage:
            outage -= 1
            raise StoreUnavailable("the store restarted")
        return await real_claim(ids, now)

    monkeypatch.setattr(worker.store, "claim", claim)
    alert_id = await publish_alert(channel, settings, "TASK-OUTAGE")
    await settled(service, alert_id, 1)
    assert [row["state"] for row in await rows_of(service, alert_id)] == ["sent"]
    assert (backoff.waits, backoff.resets) == (3, 1)  # one wait a failure, then over
    assert backoff.failures == 0
