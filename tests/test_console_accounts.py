"""The accounts pages without a browser: an administrator changes an account's roles and
clearance, ends its sessions, makes a personal token of their own (the secret shown once)
and revokes it; each change is in the audit log as the API writes it. A wrong first code at
enrolment brings back the enrolment page saying why."""

from __future__ import annotations

import re

from tests.consoleforms import signed_in
from tests.consolerig import post_form
from tests.staffrig import (  # noqa: F401 - fixtures
    Staff,
    sqlite_only_fixture,
    staff_fixture,
)


async def test_an_administrator_changes_an_account_and_ends_its_sessions(staff: Staff) -> None:
    admin = await signed_in(staff, "ada", ["administrator"], "RED")
    analyst = await signed_in(staff, "ana", ["analyst"], "AMBER")
    base = f"/console/accounts/{analyst.account_id}"
    changed = await admin.post(
        base + "/update",
        [
            ("displayName", "Ana"),
            ("organization", "County"),
            ("roles", "viewer"),
            ("clearance.maxTlp", "GREEN"),
            ("active", "1"),
        ],
    )
    assert changed.status == 200, changed.text[:1000]
    assert "The account is changed." in changed.text
    record = await staff.call(
        "GET", f"/api/v1/accounts/{analyst.account_id}", token=staff.admin_token
    )
    assert (record.body["roles"], record.body["clearance"]["maxTlp"]) == (["viewer"], "GREEN")
    # taking the analyst role away ended the session; the page says nothing was left
    ended = await admin.post(base + "/sessions", [])
    assert "0 sessions ended." in ended.text
    refused = await admin.post(base + "/update", [("organization", "County")])
    assert refused.status == 422
    assert 'id="roles-error"' in refused.text
    actions = [e["action"] for e in await staff.audit("account", analyst.account_id)]
    assert "update" in actions


async def test_an_administrator_makes_and_revokes_a_personal_token(staff: Staff) -> None:
    admin = await signed_in(staff, "ada", ["administrator"], "RED")
    base = f"/console/accounts/{admin.account_id}"
    made = await admin.post(base + "/token", [("name", "nightly export"), ("role", "viewer")])
    assert made.status == 200, made.text[:1000]
    secret = re.search(r'id="shown-secret">([^<]+)<', made.text)
    assert secret is not None
    check = await staff.call("GET", "/api/v1/account/tokens", token=secret.group(1))
    assert check.status == 200
    page = await admin.get(base)
    assert secret.group(1) not in page.text
    token_id = check.body["items"][0]["id"]
    revoked = await admin.post(base + "/revoke", [("tokenId", token_id)])
    assert "Token nightly export is revoked." in revoked.text
    after = await staff.call("GET", "/api/v1/account/tokens", token=secret.group(1))
    assert after.status == 401
    too_long = await admin.post(
        base + "/token", [("name", "x"), ("role", "viewer"), ("expiresInDays", "99999")]
    )
    assert too_long.status == 422
    assert 'id="expiresInDays-error"' in too_long.text
    other = await signed_in(staff, "ola", ["analyst"])
    foreign = await admin.post(
        f"/console/accounts/{other.account_id}/token", [("name", "x"), ("role", "viewer")]
    )
    assert foreign.status == 403


async def test_a_wrong_first_code_at_enrolment_is_refused_on_the_enrolment_page(
    staff: Staff,
) -> None:
    _id, password = await staff.make_account("nia", ["viewer"], "GREEN")
    session = staff.signed(await staff.sign_in("nia", password))
    begun = await post_form(staff, "/console/enrol", {}, session)
    assert begun.status == 200, begun.body[:1000]
    assert "Set up your second factor" in begun.body
    refused = await post_form(staff, "/console/enrol/confirm", {"code": "000000"}, session)
    assert refused.status == 422, refused.body[:1000]
    assert "Set up your second factor" in refused.body
    assert "wrong or expired code" in refused.body
