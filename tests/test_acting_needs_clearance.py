"""Acting on an alert through the API needs the clearance to read it, as the console's same
actions do: cancelling its scheduled send, acknowledging on a stakeholder's behalf (whose 201
or 404 would otherwise tell who its recipients are) and an imminent-danger release are 403
`above_clearance` above the caller's clearance, and change nothing. A personal token
publishes only as the senders its owner still has."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select

from dissemination.controls.retention import run_retention
from dissemination.store.tables import acks, special_releases
from tests.alerts import TEST_SENDERS, fixture_document
from tests.brokerutil import wait_until
from tests.consolerig import signed_in
from tests.deliveryrig import recorded
from tests.people import enrol
from tests.staffrig import (  # noqa: F401 - fixtures
    Staff,
    sqlite_only_fixture,
    staff_fixture,
)

FUTURE = "2099-01-01T00:00:00Z"


def amber_bolo(**changes: Any) -> dict[str, Any]:
    return fixture_document("bolo_minimal.json") | {"handling": {"tlp": "AMBER"}} | changes


async def test_a_send_above_the_callers_clearance_cannot_be_cancelled(staff: Staff) -> None:
    desk = await enrol(staff.service, "Desk", {"email": "desk@example.org"})
    owner = await signed_in(staff, "ana", ["analyst"], clearance={"maxTlp": "AMBER"})
    other = await signed_in(staff, "gus", ["analyst"], clearance={"maxTlp": "GREEN"})
    alert = amber_bolo(headline="Amber operation")
    del alert["identifier"], alert["sent"]
    body = {"alert": alert, "audience": {"stakeholders": [desk.id]}, "sendAt": FUTURE}
    made = await staff.call("POST", "/api/v1/sends", body=body, session=owner)
    assert (made.status, made.body["state"]) == (202, "scheduled"), made.body
    path = f"/api/v1/sends/{made.body['id']}"

    refused = await staff.call("DELETE", path, session=other)
    assert (refused.status, refused.body["error"]["code"]) == (403, "above_clearance")
    assert (await staff.call("GET", path, session=owner)).body["state"] == "scheduled"
    assert (await staff.call("DELETE", path, session=owner)).status == 204
    assert (await staff.call("GET", path, session=owner)).body["state"] == "cancelled"


async def test_acknowledging_or_releasing_above_clearance_is_refused(staff: Staff) -> None:
    desk = await enrol(
        staff.service,
        "Desk",
        {"email": "desk@example.org"},
        ack_required=True,
        rule={"kinds": ["bolo"]},
    )
    bystander = await enrol(
        staff.service, "Bystander", {"email": "by@example.org"}, rule={"events": ["none"]}
    )
    analyst = await signed_in(staff, "pat", ["analyst"], clearance={"maxTlp": "AMBER"})
    posted = await staff.call(
        "POST",
        "/api/v1/alerts",
        body=amber_bolo(identifier="ACT-1", expires=FUTURE),
        session=analyst,
    )
    assert posted.status == 202, posted.body
    alert_id = posted.body["id"]

    async def owed() -> bool:
        async with staff.service.database.reading() as conn:
            query = select(func.count()).select_from(acks).where(acks.c.alert_id == alert_id)
            return bool(await conn.scalar(query))

    await wait_until(owed, what="the acknowledgment owed")
    green_admin = await signed_in(staff, "gail", ["administrator"], clearance={"maxTlp": "GREEN"})
    for stakeholder in (desk.id, bystander.id):  # a recipient and not: the same answer
        answer = await staff.call(
            "POST",
            f"/api/v1/alerts/{alert_id}/acks",
            body={"stakeholderId": stakeholder, "reason": "phoned in"},
            session=green_admin,
        )
        assert (answer.status, answer.body["error"]["code"]) == (403, "above_clearance")
    release = {"stakeholderId": bystander.id, "justification": "x" * 25, "channels": ["email"]}
    answer = await staff.call(
        "POST", f"/api/v1/alerts/{alert_id}/releases", body=release, session=green_admin
    )
    assert (answer.status, answer.body["error"]["code"]) == (403, "above_clearance")
    async with staff.service.database.reading() as conn:
        acknowledged = select(func.count()).where(
            acks.c.alert_id == alert_id, acks.c.acknowledged_at.is_not(None)
        )
        assert await conn.scalar(acknowledged) == 0
        assert await conn.scalar(select(func.count()).select_from(special_releases)) == 0

    cleared_admin = await signed_in(staff, "ada", ["administrator"], clearance={"maxTlp": "RED"})
    answer = await staff.call(
        "POST",
        f"/api/v1/alerts/{alert_id}/acks",
        body={"stakeholderId": desk.id, "reason": "phoned in"},
        session=cleared_admin,
    )
    assert answer.status == 201, answer.body


async def test_a_personal_token_loses_a_sender_its_owner_loses(staff: Staff) -> None:
    account_id, password = await staff.make_account(
        "pat", ["analyst"], senders=list(TEST_SENDERS), clearance={"maxTlp": "AMBER"}
    )
    session, _secret, _codes = await staff.enrolled("pat", password)
    made = await staff.call(
        "POST",
        "/api/v1/account/tokens",
        body={"name": "feed", "role": "publisher"},
        session=session,
    )
    assert made.status == 201, made.body
    token = made.body["secret"]
    document = fixture_document("bolo_minimal.json")  # sent as bolo@fusion.example.gov
    first = await staff.call("POST", "/api/v1/alerts", body=document, token=token)
    assert first.status == 202, first.body

    kept = [s for s in TEST_SENDERS if s != document["sender"]]
    changed = await staff.call(
        "PATCH", f"/api/v1/accounts/{account_id}", body={"senders": kept}, token=staff.admin_token
    )
    assert changed.status == 200, changed.body
    again = await staff.call(
        "POST", "/api/v1/alerts", body=document | {"identifier": "TOKEN-2"}, token=token
    )
    assert (again.status, again.body["error"]["code"]) == (403, "sender_not_allowed")


async def test_a_send_emptied_by_retention_is_judged_by_its_alerts_kept_marks(
    staff: Staff,
) -> None:
    desk = await enrol(staff.service, "Desk", {"email": "desk@example.org"})
    owner = await signed_in(staff, "ana", ["analyst"], clearance={"maxTlp": "AMBER"})
    green = await signed_in(staff, "gus", ["analyst"], clearance={"maxTlp": "GREEN"})
    alert = amber_bolo(headline="Amber operation")
    del alert["identifier"], alert["sent"]
    made = await staff.call(
        "POST",
        "/api/v1/sends",
        body={"alert": alert, "audience": {"stakeholders": [desk.id]}},
        session=owner,
    )
    assert made.status == 202, made.body
    path = f"/api/v1/sends/{made.body['id']}"

    async def released() -> bool:
        return bool((await staff.call("GET", path, session=owner)).body["state"] == "released")

    await wait_until(released, what="the send released")
    await wait_until(lambda: recorded(staff.service, made.body["alertId"]), what="its alert")
    later = datetime.now(UTC) + timedelta(days=3650)
    report = await run_retention(staff.service.database, later, later)
    assert report.sends == 1

    shown = await staff.call("GET", path, session=owner)  # cleared for the kept marks
    assert (shown.status, shown.body["headline"]) == (200, None), shown.body
    refused = await staff.call("GET", path, session=green)
    assert (refused.status, refused.body["error"]["code"]) == (403, "above_clearance")
    assert "TLP:AMBER" in refused.body["error"]["message"]
