"""Escalation of overdue acknowledgments, against the running service with an injected clock
(so ten-minute steps take milliseconds): the policy API, each step firing at its delay and
not before (resend, next channel, supervisor notice), and nothing after an acknowledgment, a
Cancel or the alert's expiry; two engines on one store firing each step once. The kill -9
test is in test_delivery_processes."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest
from aio_pika.abc import AbstractChannel
from sqlalchemy import select

from dissemination.acks.escalator import EscalationEngine
from dissemination.api.tokens import Role, TokenStore
from dissemination.directory.store import CONTACT, STAKEHOLDER, Directory
from dissemination.service import Service
from dissemination.settings import Settings, load_settings
from dissemination.store.database import Database
from dissemination.store.tables import dissemination_records, escalations
from subscriptions.codec import validate_stakeholder
from testbed.alerts import cap_json
from testbed.directory import ACTOR
from tests.brokerutil import open_connection, publish, wait_until
from tests.deliveryrig import (  # noqa: F401 - fixtures
    RecordingDispatcher,
    Sinks,
    delivery_env,
    publish_alert,
    rows_of,
    settled,
    sinks_fixture,
)
from tests.fakeclock import FakeClock
from tests.people import create, enrol

pytestmark = pytest.mark.slow


@dataclass
class Clocked:
    service: Service
    settings: Settings
    channel: AbstractChannel
    clock: FakeClock
    admin: dict[str, str]

    @property
    def engine(self) -> EscalationEngine:
        assert self.service.escalator is not None
        return self.service.escalator


@pytest.fixture
async def clocked(service_env: dict[str, str], sinks: Sinks) -> AsyncIterator[Clocked]:
    """The service on a fake clock; its engine's own polling is left idle (once an hour), so
    the test decides when due steps are looked for."""
    env = delivery_env(service_env, sinks) | {"DISSEMINATION_ESCALATION_POLL_SECONDS": "3600"}
    settings = load_settings(env)
    clock = FakeClock(datetime.now(UTC))
    service = Service(settings, clock=clock)
    await service.start()
    connection = await open_connection(settings)
    assert service.database is not None
    _, secret = await TokenStore(service.database).create("esc-admin", Role.ADMIN, clock())
    try:
        yield Clocked(
            service,
            settings,
            await connection.channel(publisher_confirms=True),
            clock,
            {"Authorization": f"Bearer {secret}"},
        )
    finally:
        await connection.close()
        await service.stop()


async def api(
    sinks: Sinks, method: str, path: str, headers: dict[str, str], body: Any = None
) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, sinks.public_url + path, json=body, headers=headers) as response,
    ):
        return response.status, await response.json() if response.status != 204 else None


async def supervisor(
    service: Service, name: str, email: str, *, channel: str = "email", max_tlp: str = "AMBER"
) -> str:
    """A stakeholder with an email (or `channel`) contact and no subscription of its own."""
    fields = validate_stakeholder(
        {
            "name": name,
            "organization": "Fusion center",
            "sector": "government",
            "clearance": {"maxTlp": max_tlp},
        }
    )
    stakeholder_id, _ = await create(service, STAKEHOLDER, fields)
    contact = {"stakeholderId": stakeholder_id, "channel": channel, "address": email}
    await create(service, CONTACT, contact | {"label": "", "active": True})
    return stakeholder_id


async def policy(run: Clocked, sinks: Sinks, steps: list[dict[str, Any]]) -> str:
    status, body = await api(
        sinks, "POST", "/api/v1/escalations", run.admin, {"name": "desk", "steps": steps}
    )
    assert status == 201, body
    return str(body["id"])


async def escalation_of(run: Clocked, alert_id: str) -> dict[str, Any]:
    assert run.service.database is not None
    async with run.service.database.reading() as conn:
        row = (
            (await conn.execute(select(escalations).where(escalations.c.alert_id == alert_id)))
            .mappings()
            .one()
        )
    return dict(row)


async def by_webhook(run: Clocked, sinks: Sinks, policy_id: str, name: str = "Riley Quinn") -> None:
    """Someone reached by webhook who must acknowledge, under the escalation policy."""
    await enrol(
        run.service,
        name,
        {"webhook": sinks.hooks.base + "ok"},
        ack_required=True,
        escalation_id=policy_id,
    )


async def test_the_policy_api_validates_steps_and_supervisors(
    clocked: Clocked, sinks: Sinks
) -> None:
    run = clocked
    boss = await supervisor(run.service, "Shift lead", "lead@example.org")
    steps = [
        {"afterSeconds": 600, "action": "resend"},
        {"afterSeconds": 1200, "action": "notify", "supervisors": [boss]},
    ]
    status, created = await api(
        sinks, "POST", "/api/v1/escalations", run.admin, {"name": "desk", "steps": steps}
    )
    assert status == 201
    assert created["steps"][1]["channels"] == ["email"]  # the default applied
    bad_bodies = {
        "out of order": [steps[1], steps[0]],
        "notify without supervisors": [{"afterSeconds": 60, "action": "notify"}],
        "supervisors on a resend": [
            {"afterSeconds": 60, "action": "resend", "supervisors": [boss]}
        ],
        "unknown action": [{"afterSeconds": 60, "action": "page"}],
        "zero delay": [{"afterSeconds": 0, "action": "resend"}],
        "no steps": [],
    }
    for what, bad in bad_bodies.items():
        status, body = await api(
            sinks, "POST", "/api/v1/escalations", run.admin, {"name": "x", "steps": bad}
        )
        assert status == 422, what
    ghost = [{"afterSeconds": 60, "action": "notify", "supervisors": ["no-such-person"]}]
    status, body = await api(
        sinks, "POST", "/api/v1/escalations", run.admin, {"name": "x", "steps": ghost}
    )
    assert (status, body["error"]["code"]) == (422, "unknown_stakeholder")
    person = await enrol(run.service, "Pat", {"email": "pat@example.org"})
    subscription = {"stakeholderId": person.id, "rule": {}, "channels": ["email"]}
    status, body = await api(
        sinks,
        "POST",
        "/api/v1/subscriptions",
        run.admin,
        subscription | {"escalationId": "no-such-policy"},
    )
    assert (status, body["error"]["code"]) == (422, "unknown_escalation")
    status, body = await api(
        sinks,
        "POST",
        "/api/v1/subscriptions",
        run.admin,
        subscription | {"escalationId": created["id"]},
    )
    assert status == 201
    named_by = body["id"]
    path = f"/api/v1/escalations/{created['id']}"
    status, body = await api(sinks, "PATCH", path, run.admin, {"name": "night desk"})
    assert (status, body["name"]) == (200, "night desk")
    status, listed = await api(sinks, "GET", "/api/v1/escalations", run.admin)
    assert [item["id"] for item in listed["items"]] == [created["id"]]
    status, body = await api(sinks, "DELETE", path, run.admin)
    assert (status, body["error"]["code"]) == (409, "policy_in_use")  # the subscription names it
    named = f"/api/v1/subscriptions/{named_by}"
    assert (await api(sinks, "DELETE", named, run.admin))[0] == 204
    assert (await api(sinks, "DELETE", path, run.admin))[0] == 204
    assert (await api(sinks, "GET", path, run.admin))[0] == 404


async def test_each_step_fires_at_its_delay_and_not_before(clocked: Clocked, sinks: Sinks) -> None:
    run = clocked
    boss = await supervisor(run.service, "Shift lead", "lead@example.org")
    policy_id = await policy(
        run,
        sinks,
        [
            {"afterSeconds": 600, "action": "resend"},
            {"afterSeconds": 1200, "action": "next_channel"},
            {"afterSeconds": 1800, "action": "notify", "supervisors": [boss]},
        ],
    )
    await enrol(
        run.service,
        "Riley Quinn",
        {"webhook": sinks.hooks.base + "ok", "email": "riley@example.org"},
        ack_required=True,
        escalation_id=policy_id,
    )
    alert_id = await publish_alert(run.channel, run.settings, "ESC-STEPS")
    await settled(run.service, alert_id, 1)
    started = await escalation_of(run, alert_id)
    assert (started["state"], started["next_at"]) == ("active", run.clock() + timedelta(minutes=10))

    run.clock.advance(599)
    assert await run.engine.run_due() == 0
    run.clock.advance(1)
    assert await run.engine.run_due() == 1
    rows = await settled(run.service, alert_id, 2)
    assert sorted((r["channel"], r["origin"], r["state"]) for r in rows) == [
        ("webhook", "escalation", "sent"),
        ("webhook", "match", "sent"),
    ]
    assert len({headers["webhook-id"] for headers, _ in sinks.hooks.requests}) == 2

    run.clock.advance(599)
    assert await run.engine.run_due() == 0
    run.clock.advance(1)
    assert await run.engine.run_due() == 1
    rows = await settled(run.service, alert_id, 3)
    (moved,) = [r for r in rows if r["channel"] == "email"]
    assert (moved["origin"], moved["address"], moved["state"]) == (
        "escalation",
        "riley@example.org",
        "sent",
    )
    mail = (await sinks.smtp.message(0)).parsed()
    assert "/ack/" in mail.get_body(("plain",)).get_content()  # type: ignore[union-attr]

    run.clock.advance(600)
    assert await run.engine.run_due() == 1
    rows = await settled(run.service, alert_id, 4)
    (notice,) = [r for r in rows if r["origin"] == "notice"]
    assert (notice["stakeholder_id"], notice["address"]) == (boss, "lead@example.org")
    told = (await sinks.smtp.message(1)).parsed()
    text = told.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert "Riley Quinn has not acknowledged this alert 30 minutes after it was delivered" in text
    assert "/ack/" not in text  # the supervisor is told, not asked to acknowledge
    assert (await escalation_of(run, alert_id))["state"] == "done"
    run.clock.advance(86400)
    assert await run.engine.run_due() == 0
    registry, name = run.service.metrics.registry, "dissemination_escalation_steps_total"
    for action in ("resend", "next_channel", "notify"):
        assert registry.get_sample_value(name, {"action": action}) == 1, action


async def test_supervisors_notices_by_webhook_carry_the_alert_only_when_cleared(
    clocked: Clocked, sinks: Sinks
) -> None:
    """Both notices reach webhook receivers as `unacknowledged` bodies (the receivers check
    each against schemas/webhook-v1.json)."""
    run = clocked
    cleared = await supervisor(run.service, "Lead", sinks.hooks.base + "lead", channel="webhook")
    uncleared = await supervisor(
        run.service, "Clerk", sinks.hooks.base + "clerk", channel="webhook", max_tlp="GREEN"
    )
    policy_id = await policy(
        run,
        sinks,
        [
            {
                "afterSeconds": 60,
                "action": "notify",
                "supervisors": [cleared, uncleared],
                "channels": ["webhook"],
            }
        ],
    )
    await by_webhook(run, sinks, policy_id)
    alert_id = await publish_alert(
        run.channel, run.settings, "ESC-HOOK-NOTICE", handling={"tlp": "AMBER"}
    )
    await settled(run.service, alert_id, 1)
    run.clock.advance(60)
    assert await run.engine.run_due() == 1
    rows = await settled(run.service, alert_id, 3)
    assert sorted(r["state"] for r in rows) == ["sent", "sent", "sent"]
    notices = {
        headers["webhook-id"]: json.loads(body)
        for headers, body in sinks.hooks.requests
        if json.loads(body)["type"] == "unacknowledged"
    }
    by_address = {
        r["address"].rsplit("/", 1)[-1]: notices[r["id"]] for r in rows if r["id"] in notices
    }
    assert set(by_address) == {"lead", "clerk"}
    lead, clerk = by_address["lead"], by_address["clerk"]
    assert (lead["notAcknowledgedBy"], lead["afterSeconds"]) == ("Riley Quinn", 60)
    assert lead["contentWithheld"] is False
    assert lead["alert"]["identifier"] == "ESC-HOOK-NOTICE"
    assert "ack" not in lead  # the supervisor is told, not asked to acknowledge
    assert clerk["contentWithheld"] is True
    assert clerk["alert"] == {"id": alert_id, "handling": {"tlp": "AMBER", "caveats": []}}


@pytest.mark.parametrize("change", ["clearance_lowered", "deactivated"])
async def test_a_notice_retried_after_its_supervisor_changed_is_checked_again_when_sent(
    clocked: Clocked, sinks: Sinks, change: str
) -> None:
    """A notice planned while its supervisor was cleared fails once (503) and waits for its
    retry; meanwhile the supervisor's clearance is lowered, or they are deactivated. The retry
    carries only the alert's id and marks, or is withheld, by the check at send time."""
    run = clocked
    lead = await supervisor(run.service, "Lead", sinks.hooks.base + "flaky", channel="webhook")
    steps = [
        {"afterSeconds": 60, "action": "notify", "supervisors": [lead], "channels": ["webhook"]}
    ]
    await by_webhook(run, sinks, await policy(run, sinks, steps))
    alert_id = await publish_alert(
        run.channel, run.settings, "ESC-NOTICE-LATER", handling={"tlp": "AMBER"}
    )
    await settled(run.service, alert_id, 1)
    run.clock.advance(60)
    assert await run.engine.run_due() == 1
    await sinks.hooks.called("flaky", 1)

    async def waiting_for_its_retry() -> bool:
        rows = await rows_of(run.service, alert_id)
        return any(r["origin"] == "notice" and r["state"] == "pending" for r in rows)

    await wait_until(waiting_for_its_retry, what="the notice to wait for its retry")
    directory = Directory(run.service.database)
    current = await directory.get(STAKEHOLDER, lead)
    assert current is not None
    fields = {name: current[name] for name in STAKEHOLDER.fields} | (
        {"clearance": {"maxTlp": "GREEN"}} if change == "clearance_lowered" else {"active": False}
    )
    assert await directory.update(STAKEHOLDER, lead, fields, ACTOR, run.clock())
    run.clock.advance(5)  # past the retry's not_before
    rows = await settled(run.service, alert_id, 2)
    (notice,) = [r for r in rows if r["origin"] == "notice"]
    bodies = [json.loads(body) for _, body in sinks.hooks.requests]
    told = [body for body in bodies if body["type"] == "unacknowledged"]
    assert told[0]["contentWithheld"] is False  # the first try, while still cleared
    if change == "deactivated":
        assert (notice["state"], notice["reason"]) == ("withheld", "stakeholder_inactive")
        assert len(told) == 1
        return
    assert notice["state"] == "sent"
    assert len(told) == 2
    assert told[1]["contentWithheld"] is True
    assert told[1]["alert"] == {"id": alert_id, "handling": {"tlp": "AMBER", "caveats": []}}
    assert run.service.database is not None
    async with run.service.database.reading() as conn:
        justification = await conn.scalar(
            select(dissemination_records.c.justification).where(
                dissemination_records.c.delivery_id == notice["id"]
            )
        )
    assert justification is not None
    assert "alert content withheld: TLP:AMBER is above the clearance TLP:GREEN" in justification


async def test_an_acknowledgment_stops_the_escalation(clocked: Clocked, sinks: Sinks) -> None:
    run = clocked
    policy_id = await policy(
        run,
        sinks,
        [
            {"afterSeconds": 60, "action": "resend"},
            {"afterSeconds": 120, "action": "resend"},
        ],
    )
    await by_webhook(run, sinks, policy_id, "Ack'd")
    alert_id = await publish_alert(run.channel, run.settings, "ESC-ACK")
    await settled(run.service, alert_id, 1)
    run.clock.advance(60)
    assert await run.engine.run_due() == 1
    await settled(run.service, alert_id, 2)
    token = json.loads(sinks.hooks.requests[-1][1])["ack"]["token"]
    status, _ = await api(sinks, "POST", "/api/v1/acks", {}, {"token": token})
    assert status == 201
    run.clock.advance(600)
    assert await run.engine.run_due() == 0
    assert (await escalation_of(run, alert_id))["state"] == "acknowledged"
    assert len(await rows_of(run.service, alert_id)) == 2


async def test_a_cancel_or_the_alerts_expiry_ends_the_escalation(
    clocked: Clocked, sinks: Sinks
) -> None:
    run = clocked
    steps = [{"afterSeconds": 600, "action": "resend"}, {"afterSeconds": 1200, "action": "resend"}]
    policy_id = await policy(run, sinks, steps)
    await enrol(
        run.service,
        "Sam",
        {"webhook": sinks.hooks.base + "ok"},
        ack_required=True,
        escalation_id=policy_id,
    )
    cancelled_id = await publish_alert(run.channel, run.settings, "ESC-CANCEL")
    expires = (run.clock() + timedelta(minutes=15)).isoformat(timespec="seconds")
    info = dict(cap_json("ESC-EXPIRES")["info"][0], expires=expires)
    expiring_id = await publish_alert(run.channel, run.settings, "ESC-EXPIRES", info=[info])
    await settled(run.service, cancelled_id, 1)
    await settled(run.service, expiring_id, 1)
    original = cap_json("ESC-CANCEL")
    cancel = cap_json(
        "ESC-CANCEL-2",
        msgType="Cancel",
        references=f"{original['sender']},ESC-CANCEL,{original['sent']}",
        handling={"tlp": "GREEN"},
    )
    await publish(run.channel, run.settings, json.dumps(cancel).encode())

    async def cancelled() -> bool:
        return bool((await escalation_of(run, cancelled_id))["state"] == "cancelled")

    await wait_until(cancelled, what="the Cancel to end the escalation")
    run.clock.advance(600)
    assert await run.engine.run_due() == 1  # the expiring alert's first step, not the other's
    assert len(await rows_of(run.service, cancelled_id)) == 1
    run.clock.advance(600)  # 20 minutes: past the expiry
    assert await run.engine.run_due() == 0
    assert (await escalation_of(run, expiring_id))["state"] == "expired"


async def test_two_engines_on_one_store_fire_each_step_once(clocked: Clocked, sinks: Sinks) -> None:
    run = clocked
    policy_id = await policy(run, sinks, [{"afterSeconds": 60, "action": "resend"}])
    count = 12
    for n in range(count):
        await enrol(
            run.service,
            f"member-{n}",
            {"webhook": f"{sinks.hooks.base}m{n}"},
            ack_required=True,
            escalation_id=policy_id,
        )
    alert_id = await publish_alert(run.channel, run.settings, "ESC-TWO")
    await settled(run.service, alert_id, count)
    settings = run.settings
    other_store = Database.from_settings(settings.store, settings.data_path)
    try:
        other = EscalationEngine(other_store, run.engine.dispatcher, run.clock)
        run.clock.advance(60)
        fired = await asyncio.gather(run.engine.run_due(), other.run_due())
    finally:
        await other_store.close()
    assert sum(fired) == count
    rows = await settled(run.service, alert_id, 2 * count)
    assert sum(r["origin"] == "escalation" for r in rows) == count
    ids = [headers["webhook-id"] for headers, _ in sinks.hooks.requests]
    assert len(ids) == len(set(ids)) == 2 * count


async def test_an_imminent_threat_s_escalation_steps_go_ahead_of_others_queued(
    clocked: Clocked, sinks: Sinks
) -> None:
    run = clocked
    policy_id = await policy(run, sinks, [{"afterSeconds": 600, "action": "resend"}])
    await by_webhook(run, sinks, policy_id)
    urgent = await publish_alert(run.channel, run.settings, "ESC-URGENT")  # Immediate, Severe
    calm = dict(cap_json()["info"][0], urgency="Expected", severity="Moderate")
    ordinary = await publish_alert(run.channel, run.settings, "ESC-ORDINARY", info=[calm])
    await settled(run.service, urgent, 1)
    await settled(run.service, ordinary, 1)
    recording = RecordingDispatcher(run.engine.dispatcher)
    run.engine.dispatcher = recording

    run.clock.advance(600)
    assert await run.engine.run_due() == 2
    resends = {
        alert_id: [
            r["id"] for r in await settled(run.service, alert_id, 2) if r["origin"] != "match"
        ]
        for alert_id in (urgent, ordinary)
    }
    assert recording.by_urgency == {True: resends[urgent], False: resends[ordinary]}
