"""The approval queue in a real browser against the real service and a webhook receiver on
127.0.0.1: an approver approves what an analyst sent and it reaches the sink; a rejected one
never does; the author sees their own held alert but the two-person rule refuses their
decision (its message shown); a flagged imminent-danger release is listed for review; a
viewer cleared for GREEN sees an AMBER held alert only as marks and counts. Each page is
scanned, photographed at desktop and phone width and reflowed at 320 px."""

from __future__ import annotations

import re

import pytest
from playwright.async_api import expect

from tests.browser import Console, console_fixture, fits_narrowest, look  # noqa: F401 - fixture
from tests.consolerig import (  # noqa: F401 - fixtures
    CLEARED,
    DESK_CLEARED,
    Receiver,
    hook_fixture,
    send_held,
    signed_in,
    signed_in_page,
)
from tests.deliveryrig import rows_of
from tests.people import enrol
from tests.staffrig import postgresql_only_fixture  # noqa: F401 - fixture

pytestmark = pytest.mark.slow


async def test_an_approver_approves_one_analyst_send_and_rejects_another(
    console: Console, hook: Receiver
) -> None:
    staff = console.staff
    desk = await enrol(staff.service, "Duty desk", {"webhook": hook.url}, clearance=DESK_CLEARED)
    ana = await signed_in(staff, "ana", ["analyst"])
    kept = await send_held(staff, ana, desk.id, "Stolen box truck seen on Route 9")
    dropped = await send_held(staff, ana, desk.id, "Unverified tip about a van")

    page = await signed_in_page(console, "apo", ["approver"])
    await page.goto("/console/approvals")
    await expect(page.get_by_role("heading", level=1)).to_have_text("Approvals")
    kept_card = page.get_by_role("article", name="Stolen box truck seen on Route 9")
    dropped_card = page.get_by_role("article", name="Unverified tip about a van")
    await expect(kept_card).to_contain_text("Ana (ana)")
    await expect(kept_card).to_contain_text("TLP:AMBER")
    await expect(kept_card).to_contain_text("PII")
    await expect(kept_card).to_contain_text("1 delivery to 1 stakeholder (webhook 1)")
    await look(page, "approvals-desktop")

    # a rejection needs its reason
    await dropped_card.get_by_role("button", name="Reject").click()
    summary = page.get_by_role("alert")
    await expect(summary).to_contain_text("reason")
    reason = page.get_by_role("article", name="Unverified tip about a van").get_by_label(
        "Reason for rejecting"
    )
    await expect(reason).to_have_attribute("aria-invalid", "true")
    await reason.fill("Source not vetted")
    await (
        page.get_by_role("article", name="Unverified tip about a van")
        .get_by_role("button", name="Reject")
        .click()
    )
    await expect(page.get_by_role("status").filter(has_text="Rejected")).to_be_visible()
    assert [r["state"] for r in await rows_of(staff.service, dropped)] == ["suppressed"]
    decided = page.get_by_role("table", name="Recently decided")
    await expect(decided).to_contain_text("rejected")
    await expect(decided).to_contain_text("Source not vetted")

    await kept_card.get_by_label("Comment (optional)").fill("Checked with the desk")
    await kept_card.get_by_role("button", name="Approve and send").click()
    await expect(page.get_by_role("status").filter(has_text="Approved")).to_be_visible()
    assert await hook.next() == kept
    # the rejection was recorded before the approval; the approved one has arrived, the
    # rejected one never did and its row can no longer be sent
    assert dropped not in hook.seen
    assert [r["state"] for r in await rows_of(staff.service, dropped)] == ["suppressed"]
    await expect(page.get_by_text("No alert is waiting for a decision.")).to_be_visible()

    phone = await signed_in_page(console, "apo2", ["approver"], phone=True)
    await phone.goto("/console/approvals")
    await look(phone, "approvals-phone")
    assert await fits_narrowest(phone)


async def test_the_author_sees_their_held_alert_but_cannot_decide_it(
    console: Console, hook: Receiver
) -> None:
    staff = console.staff
    desk = await enrol(staff.service, "Duty desk", {"webhook": hook.url}, clearance=DESK_CLEARED)
    _id, password = await staff.make_account(
        "ada", ["administrator"], senders=["bolo@fusion.example.gov"], clearance=CLEARED
    )
    ada, secret, _codes = await staff.enrolled("ada", password)
    own = await send_held(staff, ada, desk.id, "My own held BOLO")
    # an imminent-danger release ada makes is flagged for another administrator's review
    cleared = await send_held(staff, await signed_in(staff, "abe", ["analyst"]), desk.id, "Other")
    await staff.call("POST", f"/api/v1/alerts/{cleared}/approve", body={}, session=ada)
    assert await hook.next() == cleared
    why = "Credible threat to the desk named in the alert; they must know at once."
    made = await staff.call(
        "POST",
        f"/api/v1/alerts/{cleared}/releases",
        body={"stakeholderId": desk.id, "justification": why},
        session=ada,
    )
    assert made.status == 201, made.body
    assert await hook.next() == cleared

    page = await console.page()
    await console.sign_in(page, "ada", password, secret)
    await page.goto("/console/approvals")
    card = page.get_by_role("article", name="My own held BOLO")
    await expect(card).to_contain_text("(you)")
    await expect(card).to_contain_text("needs another approver")
    await card.get_by_role("button", name="Approve and send").click()
    await expect(page.get_by_role("alert")).to_contain_text(
        "an administrator other than the one who submitted it"
    )
    assert [r["state"] for r in await rows_of(staff.service, own)] == ["held"]
    release = page.get_by_role("article", name=re.compile("Release by ada"))
    await expect(release).to_contain_text(why)
    await release.get_by_label("Review note").fill("Looked at it myself")
    await release.get_by_role("button", name="Mark reviewed").click()
    await expect(page.get_by_role("alert")).to_contain_text("reviewed by another administrator")
    await look(page, "approvals-own-desktop")
    assert own not in hook.seen

    # another administrator reviews the release
    bea = await signed_in_page(console, "bea", ["administrator"])
    await bea.goto("/console/approvals")
    release = bea.get_by_role("article", name=re.compile("Release by ada"))
    await release.get_by_label("Review note").fill("Justified: the threat was confirmed")
    await release.get_by_role("button", name="Mark reviewed").click()
    await expect(bea.get_by_role("status").filter(has_text="marked reviewed")).to_be_visible()
    await expect(bea.get_by_text("No release is waiting for review.")).to_be_visible()
    flagged = await staff.call("GET", "/api/v1/releases?flagged=true", session=ada)
    assert flagged.body["items"] == []


async def test_a_green_approver_sees_an_amber_held_alert_only_as_marks_and_counts(
    console: Console, hook: Receiver
) -> None:
    staff = console.staff
    desk = await enrol(staff.service, "Duty desk", {"webhook": hook.url}, clearance=DESK_CLEARED)
    ana = await signed_in(staff, "ana", ["analyst"])
    await send_held(staff, ana, desk.id, "Secret amber headline")
    page = await signed_in_page(console, "gus", ["approver"], "GREEN")
    await page.goto("/console/approvals")
    card = page.get_by_role("article", name="bolo alert above your clearance")
    await expect(card).to_contain_text("TLP:AMBER")
    await expect(card).to_contain_text("Held deliveries")
    content = await page.content()
    for secret_text in ("Secret amber headline", "bolo@fusion.example.gov", "Duty desk"):
        assert secret_text not in content
    await look(page, "approvals-green-desktop")
