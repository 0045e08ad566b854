"""Handling marks hold on every path. Defence in depth: clearance is checked again
immediately before each send, so a stakeholder whose clearance is lowered, or who is
deactivated, after planning is withheld at send time with the reason, and nothing reaches the
far end. An Update carries at least the marks of the alert it updates, and a SAR not released
in its sanitized form goes only to law enforcement entitled to PII."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from aio_pika.abc import AbstractChannel

from core.alert import Handling, Tlp
from dissemination.directory.store import STAKEHOLDER, Directory
from dissemination.intake.decoding import DecodeLimits, decode_alerts
from dissemination.intake.normalize import HandlingDefaults
from dissemination.ledger.alerts import Ledger
from dissemination.service import Service
from dissemination.settings import Settings, load_settings
from testbed.alerts import cap_json
from testbed.directory import ACTOR
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
from tests.people import enrol
from tests.samples import FIXTURES_DIR

Starter = Callable[..., Awaitable[tuple[Service, Settings, AbstractChannel]]]


@pytest.mark.slow
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
    directory = Directory(planner.database)
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


@pytest.mark.slow
async def test_an_update_inherits_the_stricter_marks_of_the_alert_it_updates(
    custom_service: Starter, sinks: Sinks
) -> None:
    planner, settings, channel = await custom_service(delivery_channels="")
    await enrol(planner, "Green only", {"webhook": sinks.hooks.base + "g"}, max_tlp="GREEN")
    original = cap_json("MARKED", handling={"tlp": "AMBER", "caveats": ["LES"]})
    first = await publish_alert(channel, settings, "MARKED", handling=original["handling"])
    await settled(planner, first, 1)
    reference = f"{original['sender']},MARKED,{original['sent']}"
    update = await publish_alert(
        channel,
        settings,
        "MARKED-UPDATE",
        msgType="Update",
        references=reference,
        handling={"tlp": "GREEN"},
    )
    (row,) = await settled(planner, update, 1)
    assert (row["state"], row["reason"]) == ("withheld", "tlp_above_clearance")
    stored = await Ledger(planner.database).alert_row(update)
    assert stored is not None
    assert (stored["tlp"], stored["caveats"]) == ("AMBER", ["LES"])
    assert stored["document"]["handling"]["tlp"] == "AMBER"
    assert [r["state"] for r in await rows_of(planner, first)] == ["withheld"]


def test_marks_are_raised_never_lowered() -> None:
    amber = Handling(Tlp.AMBER, ("LES",))
    assert Handling(Tlp.GREEN).at_least(amber) == Handling(Tlp.AMBER, ("LES",))
    assert Handling(Tlp.RED, ("PII",)).at_least(amber) == Handling(Tlp.RED, ("PII", "LES"))
    strict = Handling(Tlp.AMBER_STRICT, ("LES",))
    assert strict.at_least(amber) is strict


@pytest.mark.parametrize("sanitized", [False, True])
def test_an_unsanitized_sar_goes_only_to_law_enforcement_entitled_to_pii(sanitized: bool) -> None:
    document = json.loads((FIXTURES_DIR / "alerts" / "sar_minimal.json").read_text())
    document |= {"sanitized": sanitized, "handling": {"tlp": "AMBER", "caveats": ["FOUO"]}}
    (alert,) = decode_alerts(
        json.dumps(document).encode(),
        "application/json",
        DecodeLimits(max_bytes=1_000_000, max_depth=32),
        HandlingDefaults(Tlp.AMBER_STRICT, Tlp.CLEAR),
    )
    expected = ("FOUO",) if sanitized else ("FOUO", "LES", "PII")
    assert alert.handling == Handling(Tlp.AMBER, expected)
