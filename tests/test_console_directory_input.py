"""Bad input to the approvals and directory pages, without a browser: an invalid rule (not
JSON, or a field the rule schema refuses) and an invalid stakeholder come back as the form
with an error summary and the field marked invalid; unknown ids are a 404 page; a rejection
without a reason is a clear error; a post without the form token is refused (403); roles
that may not change the directory are refused. Nothing is changed by a refused post."""

from __future__ import annotations

import re
from urllib.parse import quote

from tests.consolerig import DESK_CLEARED, get_page, post_form, send_held, signed_in
from tests.deliveryrig import rows_of
from tests.people import enrol
from tests.staffrig import (  # noqa: F401 - fixtures
    Signed,
    Staff,
    sqlite_only_fixture,
    staff_fixture,
)


def invalid_field(html: str, field_id: str) -> bool:
    """The page marks the field with this id invalid."""
    tag = re.search(
        rf"<(?:input|textarea|select|fieldset)[^>]*\bid=\"{re.escape(field_id)}\"[^>]*>", html
    )
    return tag is not None and 'aria-invalid="true"' in tag.group(0)


async def subscriptions_of(staff: Staff, stakeholder_id: str) -> list[dict[str, object]]:
    found = await staff.call(
        "GET", f"/api/v1/subscriptions?stakeholderId={stakeholder_id}", token=staff.admin_token
    )
    return list(found.body["items"])


async def test_an_invalid_rule_is_shown_against_the_rule_field(staff: Staff) -> None:
    admin = await signed_in(staff, "ada", ["administrator"])
    desk = await enrol(staff.service, "Desk", {"email": "desk@example.org"})
    [subscription] = await subscriptions_of(staff, desk.id)
    path = f"/console/directory/subscriptions/{subscription['id']}"
    for rule, says in (
        ('{"kinds": ["bolo"]', "not valid JSON"),
        ('["bolo"]', "must be a JSON object"),
        ('{"kinds": ["memo"]}', "rule.kinds[0]"),
        ('{"colour": "red"}', "colour"),
        ('{"lists": ["no-such-list"]}', "no distribution list"),
    ):
        for action in ("preview", "save"):
            answer = await post_form(
                staff, path, {"rule": rule, "channels": "email", "action": action}, admin
            )
            assert answer.status == 422, (rule, action, answer.status)
            assert 'class="error-summary"' in answer.body
            assert says in answer.body, (rule, says)
            assert invalid_field(answer.body, "rule"), rule
    no_channel = await post_form(staff, path, {"rule": "{}", "action": "save"}, admin)
    assert no_channel.status == 422
    assert invalid_field(no_channel.body, "channels")
    assert (await subscriptions_of(staff, desk.id)) == [subscription]  # nothing changed


async def test_an_invalid_stakeholder_or_contact_is_shown_against_its_fields(staff: Staff) -> None:
    admin = await signed_in(staff, "ada", ["administrator"])
    fields = {"name": "", "organization": "Org", "sector": "government", "max_tlp": "GREEN"}
    answer = await post_form(staff, "/console/directory/stakeholders", fields, admin)
    assert answer.status == 422
    assert invalid_field(answer.body, "name")
    zone = fields | {"name": "Somebody", "timezone": "Mars/Olympus"}
    answer = await post_form(staff, "/console/directory/stakeholders", zone, admin)
    assert answer.status == 422
    assert invalid_field(answer.body, "timezone")
    assert "unknown time zone" in answer.body
    desk = await enrol(staff.service, "Desk", {"email": "desk@example.org"})
    edited = fields | {"name": "   ", "sector": "astrology"}
    answer = await post_form(staff, f"/console/directory/stakeholders/{desk.id}", edited, admin)
    assert answer.status == 422
    assert invalid_field(answer.body, "name")
    assert invalid_field(answer.body, "sector")
    contact = {"channel": "webhook", "address": "http://203.0.113.9/hook"}
    path = f"/console/directory/stakeholders/{desk.id}/contacts"
    answer = await post_form(staff, path, contact, admin)
    assert answer.status == 422
    assert invalid_field(answer.body, "address")
    listed = await staff.call("GET", "/api/v1/stakeholders", token=staff.admin_token)
    assert [s["name"] for s in listed.body["items"]] == ["Desk"]


async def test_unknown_ids_are_a_not_found_page(staff: Staff) -> None:
    admin = await signed_in(staff, "ada", ["administrator"])
    for path in (
        "/console/directory/stakeholders/no-such-one",
        "/console/directory/stakeholders/no-such-one/subscriptions/new",
        "/console/directory/stakeholders/no-such-one/edit",
        "/console/directory/subscriptions/no-such-one",
        "/console/directory/lists/no-such-one",
    ):
        answer = await get_page(staff, path, admin)
        assert answer.status == 404, path
        assert "<h1>404: no " in answer.body
    for path, fields in (
        ("/console/directory/stakeholders/nobody/contacts", {"channel": "email"}),
        ("/console/directory/stakeholders/nobody", {"name": "X", "organization": "Y"}),
        ("/console/directory/subscriptions/nobody", {"rule": "{}", "action": "preview"}),
        ("/console/approvals/nobody/reject", {"reason": "Not sourced"}),
        ("/console/approvals/nobody/approve", {}),
        ("/console/releases/nobody/review", {"note": "Looked at it"}),
        ("/console/directory/lists/nobody/members", {"member": "stakeholder:x"}),
        ("/console/directory/lists/nobody/members/remove", {"member": "stakeholder:x"}),
    ):
        answer = await post_form(staff, path, fields, admin)
        assert answer.status == 404, path
        assert "<h1>404: " in answer.body


async def test_a_rejection_needs_a_reason(staff: Staff) -> None:
    desk = await enrol(staff.service, "Desk", {"webhook": "http://127.0.0.1:9/hook"},
                       clearance=DESK_CLEARED)  # fmt: skip
    alert_id = await send_held(staff, await signed_in(staff, "ana", ["analyst"]), desk.id, "BOLO")
    approver = await signed_in(staff, "apo", ["approver"])
    path = f"/console/approvals/{alert_id}/reject"
    for reason in ("", "   ", "no"):
        answer = await post_form(staff, path, {"reason": reason}, approver)
        assert answer.status == 422
        assert "reason" in answer.body
        assert invalid_field(answer.body, f"reason-{alert_id}")
        assert f'href="#reason-{alert_id}"' in answer.body  # the summary links to the field
    rows = await rows_of(staff.service, alert_id)
    assert [row["state"] for row in rows] == ["held"]


async def test_a_post_without_the_form_token_is_refused(staff: Staff) -> None:
    admin = await signed_in(staff, "ada", ["administrator"])
    desk = await enrol(staff.service, "Desk", {"email": "desk@example.org"})
    [subscription] = await subscriptions_of(staff, desk.id)
    for path, fields in (
        ("/console/directory/stakeholders", {"name": "X", "organization": "Y"}),
        (f"/console/directory/stakeholders/{desk.id}", {"name": "X", "organization": "Y"}),
        (f"/console/directory/stakeholders/{desk.id}/contacts", {"channel": "email"}),
        (f"/console/directory/stakeholders/{desk.id}/subscriptions", {"action": "save"}),
        (f"/console/directory/subscriptions/{subscription['id']}", {"action": "save"}),
        ("/console/approvals/some-alert/approve", {}),
        ("/console/approvals/some-alert/reject", {"reason": "Not sourced"}),
        ("/console/releases/some-release/review", {"note": "Looked"}),
        ("/console/directory/lists", {"name": "Watch"}),
    ):
        answer = await post_form(staff, path, fields, admin, with_token=False)
        assert answer.status == 403, path
        assert "stale or foreign" in answer.body
    assert (await subscriptions_of(staff, desk.id)) == [subscription]


async def test_roles_that_may_not_change_the_directory_are_refused(staff: Staff) -> None:
    viewer: Signed = await signed_in(staff, "vic", ["viewer"])
    desk = await enrol(staff.service, "Desk", {"email": "desk@example.org"})
    [subscription] = await subscriptions_of(staff, desk.id)
    page = await get_page(staff, "/console/directory", viewer)
    assert page.status == 200
    assert "Add a stakeholder" not in page.body
    for query, shown in (("dES", True), ("%", False), ("_esk", False), ("Partner", True)):
        found = await get_page(staff, f"/console/directory?q={quote(query)}", viewer)
        assert found.status == 200
        assert ('href="/console/directory/stakeholders/' + desk.id in found.body) is shown, query
    assert (await get_page(staff, "/console/directory/stakeholders/new", viewer)).status == 403
    assert (await get_page(staff, "/console/approvals", viewer)).status == 403
    path = f"/console/directory/subscriptions/{subscription['id']}"
    preview = await post_form(staff, path, {"rule": "{}", "action": "preview"}, viewer)
    assert preview.status == 200
    assert "Save subscription" not in preview.body
    saved = await post_form(
        staff, path, {"rule": '{"kinds": ["sar"]}', "channels": "email", "action": "save"}, viewer
    )
    assert saved.status == 403
    assert (await subscriptions_of(staff, desk.id)) == [subscription]


async def test_the_rule_preview_api_refuses_bad_input(staff: Staff) -> None:
    desk = await enrol(staff.service, "Desk", {"email": "desk@example.org"})
    for body, code, path in (
        ({}, "schema_violation", "$.stakeholderId"),
        ({"stakeholderId": desk.id}, "schema_violation", "$.rule"),
        ({"stakeholderId": desk.id, "rule": {}, "extra": 1}, "schema_violation", "$.extra"),
        ({"stakeholderId": desk.id, "rule": {}, "limit": 0}, "schema_violation", "$.limit"),
        ({"stakeholderId": desk.id, "rule": {}, "limit": True}, "schema_violation", "$.limit"),
        ({"stakeholderId": desk.id, "rule": {"kinds": ["memo"]}}, "schema_violation",
         "$.rule.kinds[0]"),
        ({"stakeholderId": "nobody", "rule": {}}, "unknown_stakeholder", "$.stakeholderId"),
        ({"stakeholderId": desk.id, "rule": {"lists": ["nope"]}}, "unknown_list",
         "$.rule.lists[0]"),
    ):  # fmt: skip
        answer = await staff.call("POST", "/api/v1/match/rule", body=body, token=staff.admin_token)
        assert answer.status == 422, body
        assert answer.body["error"]["code"] == code, body
        assert path in [d["path"] for d in answer.body["error"]["details"]], body
    fine = await staff.call(
        "POST",
        "/api/v1/match/rule",
        body={"stakeholderId": desk.id, "rule": {}},
        token=staff.admin_token,
    )
    assert fine.status == 200
    assert fine.body == {"considered": 0, "matched": 0, "alerts": []}
