"""Defence in depth: clearance is checked again immediately before each send. A stakeholder
whose clearance is lowered, or who is deactivated, after planning is withheld at send time
with the reason, and nothing reaches the far end."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from aio_pika.abc import AbstractChannel

from dissemination.service import Service
from dissemination.settings import Settings, load_settings
from subscriptions.directory import STAKEHOLDER, Directory
from tests.brokerutil import wait_until
from tests.deliveryrig import (  # noqa: F401 - fixtures
    Sinks,
    custom_service_fixture,
    delivery_env,
    publish_alert,
    rows_of,
    settled,
    sinks_fixture,
)
from tests.people import ACTOR, enrol

pytestmark = pytest.mark.slow
Starter = Callable[..., Awaitable[tuple[Service, Settings, AbstractChannel]]]


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"clearance": {"maxTlp": "GREEN"}}, "tlp_above_clearance"),
        ({"active": False}, "stakeholder_inactive"),
    ],
)
async def test_a_clearance_lowered_after_planning_withholds_the_send(
    custom_service: Starter,
    service_env: dict[str, str],
    sinks: Sinks,
    change: dict[str, Any],
    reason: str,
) -> None:
    planner, settings, channel = await custom_service(delivery_channels="")
    person = await enrol(planner, "Lee", {"webhook": sinks.hooks.base + "ok"}, max_tlp="AMBER")
    alert_id = await publish_alert(channel, settings, "LOWERED", handling={"tlp": "AMBER"})

    async def planned() -> bool:
        rows = await rows_of(planner, alert_id)
        return [r["state"] for r in rows] == ["pending"]

    await wait_until(planned, what="the pending row")
    directory = Directory(planner.database)  # type: ignore[arg-type]
    current = await directory.get(STAKEHOLDER, person.id)
    assert current is not None
    fields = {name: current[name] for name in STAKEHOLDER.fields} | change
    assert await directory.update(STAKEHOLDER, person.id, fields, ACTOR, datetime.now(UTC))
    sender = Service(load_settings(delivery_env(service_env, sinks)), only=("webhook",))
    await sender.start()
    try:
        (row,) = await settled(planner, alert_id, 1)
    finally:
        await sender.stop()
    assert (row["state"], row["reason"]) == ("withheld", reason)
    assert "send time" in row["detail"]
    assert sinks.hooks.requests == []
