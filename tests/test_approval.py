"""Two-person approval and imminent-danger releases.

An alert that matches an approval rule (default: local alerts at TLP:RED or carrying PII) is
stored with its delivery rows `held`; nothing reaches anyone until an administrator other
than its submitter approves it. A rejection records its reason and sends nothing; a Cancel
withdraws a held alert. An imminent-danger release sends to a stakeholder outside the rules
only with a typed justification, is recorded, and stays flagged until another administrator
reviews it. Everything runs against the real broker, both stores and loopback sinks.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import select

from core.alert import Tlp, alert_id_for
from core.errors import ConfigError
from dissemination.api.tokens import Role
from dissemination.controls import approval, record
from dissemination.controls.approvalrules import ApprovalPolicy, approval_policy, parse_rule
from dissemination.intake.normalize import HandlingDefaults, alert_from_cap, alert_from_local
from dissemination.service import Service
from dissemination.settings import load_settings
from dissemination.store.audit import Actor
from dissemination.store.tables import approvals, audit_log
from testbed.alerts import cap_json
from tests.alerts import fixture_document
from tests.approvalrig import call, held_rows, submit, token
from tests.deliveryrig import (  # noqa: F401 - fixtures
    Sinks,
    delivery_settings_fixture,
    rows_of,
    settled,
    sinks_fixture,
)
from tests.people import enrol

DEFAULTS = HandlingDefaults(Tlp.AMBER_STRICT, Tlp.CLEAR)
DEFAULT_RULES = ("local tlp>=RED", "local pii")
FUTURE = "2099-01-01T00:00:00-05:00"
GREEN_PII = {"tlp": "GREEN", "caveats": ["PII"]}


# --- rules (pure) ---------------------------------------------------------------------


def local(name: str, **changes: Any) -> Any:
    document = fixture_document(name) | {"expires": FUTURE} | changes
    return alert_from_local(document, DEFAULTS)


@pytest.mark.parametrize(
    ("alert", "held_by"),
    [
        (local("advisory_minimal.json", handling={"tlp": "RED"}), "local tlp>=RED"),
        (local("advisory_minimal.json", handling={"tlp": "AMBER+STRICT"}), None),
        (
            local("advisory_minimal.json", handling={"tlp": "GREEN", "caveats": ["PII"]}),
            "local pii",
        ),
        (local("bolo_full.json", handling={"tlp": "GREEN"}), "local pii"),  # personal fields
        (local("sar_full.json"), "local pii"),  # unsanitized: marked PII on intake
        (local("sar_update.json", msgType="Cancel", handling={"tlp": "RED"}), None),
    ],
)
def test_default_rules_hold_local_alerts_at_red_or_with_pii(
    alert: Any, held_by: str | None
) -> None:
    assert ApprovalPolicy(DEFAULT_RULES).hold_rule(alert) == held_by


def test_cap_alerts_are_not_held_by_default_but_can_be() -> None:
    red = alert_from_cap(cap_json("RED-1", handling={"tlp": "RED"}), "cap-json", DEFAULTS)
    assert ApprovalPolicy(DEFAULT_RULES).hold_rule(red) is None
    assert ApprovalPolicy(("cap|bolo caveat=LES", "* tlp>=AMBER+STRICT")).hold_rule(red) == (
        "* tlp>=AMBER+STRICT"
    )
    assert ApprovalPolicy(("cap any",)).hold_rule(red) == "cap any"
    assert ApprovalPolicy(()).hold_rule(red) is None


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("local", "expected '<kinds> <condition>'"),
        ("local tlp>=PURPLE", "unknown TLP 'PURPLE'"),
        ("memo tlp>=RED", "unknown kind 'memo'"),
        ("local caveat=", "the condition must be"),
        ("local severity>=Extreme", "the condition must be"),
    ],
)
def test_a_bad_rule_is_refused_with_what_is_wrong(text: str, problem: str) -> None:
    with pytest.raises(ValueError, match=r"\S") as raised:
        parse_rule(text)
    assert problem in str(raised.value)
    settings = load_settings({"DISSEMINATION_APPROVAL_RULES": text})
    with pytest.raises(ConfigError) as config:
        approval_policy(settings.approval.rules)
    assert "approval.rules" in str(config.value)
    assert problem in str(config.value)


def test_approval_can_be_switched_off() -> None:
    assert load_settings({"DISSEMINATION_APPROVAL_RULES": ""}).approval.rules == ()
    assert load_settings({}).approval.rules == DEFAULT_RULES


# --- through the service ----------------------------------------------------------------


def red_advisory(identifier: str) -> dict[str, Any]:
    document = fixture_document("advisory_minimal.json")
    return document | {"identifier": identifier, "handling": {"tlp": "RED"}, "expires": FUTURE}


async def audit_actions(service: Service, alert_id: str) -> list[tuple[str, str, str | None]]:
    assert service.database is not None
    async with service.database.reading() as conn:
        result = await conn.execute(
            select(audit_log.c.action, audit_log.c.actor_name, audit_log.c.reason)
            .where(audit_log.c.entity_id == alert_id)
            .order_by(audit_log.c.id)
        )
        return [tuple(row) for row in result]


@pytest.mark.slow
async def test_a_held_alert_goes_out_only_when_another_administrator_approves(
    service: Service, sinks: Sinks
) -> None:
    await enrol(service, "Named analyst", {"sms": "+12025550142"}, max_tlp="RED")
    await enrol(service, "Duty officer", {"email": "duty@example.org"}, max_tlp="RED")
    alice = await token(service, "alice")
    bob = await token(service, "bob")
    viewer = await token(service, "vera", Role.VIEWER)
    alert_id = await submit(sinks, alice, red_advisory("HOLD-1"))
    rows = await held_rows(service, alert_id, 2)
    assert {row["channel"] for row in rows} == {"sms", "email"}

    status, listing = await call(sinks, "GET", "/api/v1/approvals?state=held", alice)
    assert status == 200
    [item] = listing["items"]
    assert item["alertId"] == alert_id
    assert item["rule"] == "local tlp>=RED"
    assert item["submittedBy"].startswith("token:")

    path = f"/api/v1/alerts/{alert_id}/approve"
    status, refused = await call(sinks, "POST", path, alice, {})
    assert (status, refused["error"]["code"]) == (403, "same_administrator")
    status, _ = await call(sinks, "POST", path, viewer, {})
    assert status == 403
    assert sinks.twilio.messages == []
    assert sinks.smtp.messages == []
    assert {row["state"] for row in await rows_of(service, alert_id)} == {"held"}

    status, approved = await call(sinks, "POST", path, bob, {"comment": "checked with the desk"})
    assert status == 200, approved
    assert approved == {"id": alert_id, "state": "approved", "released": 2, "dispatched": True}
    rows = await settled(service, alert_id, 2)
    assert {row["state"] for row in rows} == {"sent"}
    assert len(sinks.twilio.messages) == 1
    assert len(sinks.smtp.messages) == 1
    status, again = await call(sinks, "POST", path, bob, {})
    assert (status, again["error"]["code"]) == (409, "already_decided")

    assert ("approve", "bob", "checked with the desk") in await audit_actions(service, alert_id)
    assert service.database is not None
    released = await record.export(service.database, alert_id=alert_id)
    assert [entry["outcome"] for entry in released] == ["released", "released"]


@pytest.mark.slow
async def test_a_rejected_alert_records_its_reason_and_sends_nothing(
    service: Service, sinks: Sinks
) -> None:
    await enrol(service, "Named analyst", {"email": "analyst@example.org"}, max_tlp="RED")
    alice = await token(service, "alice")
    bob = await token(service, "bob")
    alert_id = await submit(sinks, alice, red_advisory("HOLD-2"))
    await held_rows(service, alert_id, 1)
    reject = f"/api/v1/alerts/{alert_id}/reject"
    for body in ({}, {"reason": ""}, {"reason": "ok", "extra": 1}, {"reason": 7}):
        status, invalid = await call(sinks, "POST", reject, bob, body)
        assert (status, invalid["error"]["code"]) == (422, "schema_violation"), body
    status, _ = await call(
        sinks, "POST", "/api/v1/alerts/no-such-alert/reject", bob, {"reason": "not sourced"}
    )
    assert status == 404

    status, rejected = await call(sinks, "POST", reject, bob, {"reason": "source not vetted"})
    assert status == 200
    assert rejected["state"] == "rejected"
    assert rejected["released"] == 0
    [row] = await rows_of(service, alert_id)
    assert (row["state"], row["reason"], row["detail"]) == (
        "suppressed",
        "approval_rejected",
        "source not vetted",
    )
    status, late = await call(sinks, "POST", f"/api/v1/alerts/{alert_id}/approve", bob, {})
    assert (status, late["error"]["code"]) == (409, "already_decided")
    assert ("reject", "bob", "source not vetted") in await audit_actions(service, alert_id)
    assert sinks.smtp.messages == []


@pytest.mark.slow
async def test_a_cancel_withdraws_a_held_alert_and_is_not_held_itself(
    service: Service, sinks: Sinks
) -> None:
    await enrol(service, "Named analyst", {"email": "analyst@example.org"}, max_tlp="RED")
    alice = await token(service, "alice")
    original = red_advisory("HOLD-3")
    alert_id = await submit(sinks, alice, original)
    await held_rows(service, alert_id, 1)
    cancel = fixture_document("advisory_cancel.json") | {
        "references": [{k: original[k] for k in ("sender", "identifier", "sent")}],
        "handling": {"tlp": "RED"},
        "expires": FUTURE,
    }
    cancel_id = await submit(sinks, alice, cancel)
    cancel_rows = await settled(service, cancel_id, 1)
    assert cancel_rows[0]["state"] == "sent"  # the Cancel reaches the analyst
    assert service.database is not None
    async with service.database.reading() as conn:
        states = dict((await conn.execute(select(approvals.c.alert_id, approvals.c.state))).all())
    assert states == {alert_id: "withdrawn"}
    [row] = await rows_of(service, alert_id)
    assert row["state"] == "suppressed"
    assert [message.parsed()["X-Alert-Id"] for message in sinks.smtp.messages] == [cancel_id]


@pytest.mark.slow
async def test_an_imminent_danger_release_reaches_someone_outside_the_rules_and_is_reviewed(
    service: Service, sinks: Sinks
) -> None:
    await enrol(service, "Cleared", {"webhook": sinks.hooks.base + "ok"}, max_tlp="AMBER")
    outsider = await enrol(
        service,
        "School principal",
        {"email": "principal@example.org"},
        max_tlp="GREEN",
        rule={"kinds": ["sar"]},
    )
    alice = await token(service, "alice")
    bob = await token(service, "bob")
    document = cap_json("DANGER-1", handling={"tlp": "AMBER"})
    status, _ = await call(sinks, "POST", "/api/v1/alerts", alice, document)
    alert_id = alert_id_for(document["sender"], "DANGER-1", document["sent"])
    await settled(service, alert_id, 1)
    assert sinks.smtp.messages == []

    path = f"/api/v1/alerts/{alert_id}/releases"
    base = {"stakeholderId": outsider.id}
    for body in (base, base | {"justification": "too short"}, base | {"channels": ["fax"]}):
        status, invalid = await call(sinks, "POST", path, alice, body)
        assert (status, invalid["error"]["code"]) == (422, "schema_violation"), body
    why = "Credible threat against the school named in the alert; principal must lock down now."
    status, _ = await call(
        sinks, "POST", path, alice, {"stakeholderId": "nobody", "justification": why}
    )
    assert status == 404
    status, made = await call(sinks, "POST", path, alice, base | {"justification": why})
    assert status == 201, made
    assert made["flaggedForReview"] is True
    rows = await settled(service, alert_id, 2)
    [released] = [row for row in rows if row["origin"] == "imminent_danger"]
    assert released["state"] == "sent"
    assert [message.rcpt_tos for message in sinks.smtp.messages] == [("principal@example.org",)]
    assert service.database is not None
    entries = await record.export(service.database, alert_id=alert_id)
    [entry] = [e for e in entries if e["delivery_id"] == released["id"]]
    assert entry["outcome"] == "released"
    assert "imminent-danger release (28 CFR 23.20(e)(2))" in entry["justification"]
    assert why in entry["justification"]
    assert "released by alice" in entry["justification"]
    assert ("imminent_danger_release", "alice", why) in await audit_actions(service, alert_id)

    status, flagged = await call(sinks, "GET", "/api/v1/releases?flagged=true", bob)
    assert [item["id"] for item in flagged["items"]] == [made["id"]]
    review = f"/api/v1/releases/{made['id']}/review"
    status, own = await call(sinks, "POST", review, alice, {"note": "looked at it"})
    assert (status, own["error"]["code"]) == (403, "same_administrator")
    status, reviewed = await call(
        sinks, "POST", review, bob, {"note": "justified: threat confirmed"}
    )
    assert status == 200
    assert reviewed == {"id": made["id"], "flaggedForReview": False}
    status, flagged = await call(sinks, "GET", "/api/v1/releases?flagged=true", bob)
    assert flagged["items"] == []
    status, twice = await call(sinks, "POST", review, bob, {"note": "again"})
    assert (status, twice["error"]["code"]) == (409, "already_reviewed")


@pytest.mark.slow
async def test_a_held_alert_cannot_be_released_around_its_approval(
    service: Service, sinks: Sinks
) -> None:
    person = await enrol(service, "Named analyst", {"email": "analyst@example.org"}, max_tlp="RED")
    alice = await token(service, "alice")
    alert_id = await submit(sinks, alice, red_advisory("HOLD-4"))
    await held_rows(service, alert_id, 1)
    why = "Imminent threat to life at the venue; the analyst must be told at once."
    status, refused = await call(
        sinks,
        "POST",
        f"/api/v1/alerts/{alert_id}/releases",
        alice,
        {"stakeholderId": person.id, "justification": why},
    )
    assert (status, refused["error"]["code"]) == (409, "not_releasable")
    assert sinks.smtp.messages == []


@pytest.mark.slow
@pytest.mark.parametrize(("urgency", "urgent"), [("Immediate", True), ("Expected", False)])
async def test_an_approved_imminent_threat_goes_ahead_of_others_queued(
    service: Service, sinks: Sinks, urgency: str, urgent: bool
) -> None:
    """The rows approval releases go onto the urgent queues when the alert is an imminent
    threat (`Alert.urgent`), as they would have had it not been held."""
    await enrol(service, "Duty officer", {"email": "duty@example.org"}, max_tlp="RED")
    alice = await token(service, "alice")
    document = red_advisory(f"HOLD-{urgency}") | {"urgency": urgency, "severity": "Extreme"}
    alert_id = await submit(sinks, alice, document)
    await held_rows(service, alert_id, 1)
    assert service.database is not None
    decision = await approval.decide(
        service.database, alert_id, Actor("bob-token", "bob"), True, None, datetime.now(UTC)
    )
    assert [len(ids) for ids in decision.released.values()] == [1]
    assert decision.urgent is urgent
