"""Compose and send, the dissemination record and the audit log, and accounts, in a real
browser against the service on PostgreSQL with loopback email and webhook sinks: a BOLO to
a distribution list from sign-in to delivery (the dry run naming who receives it and who is
withheld and why), an invalid form kept as typed with its errors beside the fields, a
scheduled send, the record's filters and CSV export, a GREEN administrator who sees nothing
of an AMBER alert there, and an administrator creating an analyst's account."""

from __future__ import annotations

import asyncio
import csv
import io
import re
import time
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, Page, expect

from dissemination.api.tokens import Role, TokenStore
from tests.alerts import TEST_SENDERS, fixture_document
from tests.brokerutil import wait_until
from tests.browser import Console, console_service, fits_narrowest, look
from tests.deliveryrig import Sinks, delivery_env, settled
from tests.deliveryrig import sinks_fixture as sinks_fixture
from tests.people import Enrolled, enrol

pytestmark = pytest.mark.slow
BOLO_SENDER = TEST_SENDERS[2]


@pytest.fixture
def store_kind() -> str:
    return "postgresql"


@pytest.fixture
async def console(
    service_env: dict[str, str], browser: Browser, sinks: Sinks
) -> AsyncIterator[Console]:
    async for rig in console_service(delivery_env(service_env, sinks), browser):
        yield rig


async def analyst(console: Console, username: str, max_tlp: str = "AMBER") -> tuple[str, str]:
    """An analyst who publishes as the BOLO sender, enrolled: password, TOTP secret."""
    _id, password = await console.staff.make_account(
        username, ["analyst"], max_tlp, senders=[BOLO_SENDER]
    )
    _session, secret, _codes = await console.staff.enrolled(username, password)
    return password, secret


async def watch_desk(console: Console, sinks: Sinks) -> tuple[str, list[Enrolled]]:
    """A list of three: Ana by email, Ben by webhook, Cal by email but cleared for GREEN."""
    service = console.staff.service
    ana = await enrol(service, "Ana", {"email": "ana@example.org"})
    ben = await enrol(service, "Ben", {"webhook": sinks.hooks.base + "ok"})
    cal = await enrol(service, "Cal", {"email": "cal@example.org"}, max_tlp="GREEN")
    members = [{"kind": "stakeholder", "id": m.id} for m in (ana, ben, cal)]
    body = {"name": "Watch desk", "members": members}
    created = await console.staff.call(
        "POST", "/api/v1/lists", body=body, token=console.staff.admin_token
    )
    assert created.status == 201, created.body
    return str(created.body["id"]), [ana, ben, cal]


async def too_wide(page: Page) -> Any:
    """What sticks out past the viewport (for the failure message)."""
    return await page.evaluate(
        """() => [...document.querySelectorAll('body *')]
        .filter(e => e.getBoundingClientRect().right > document.documentElement.clientWidth)
        .slice(0, 8).map(e => e.tagName + '#' + e.id + '.' + e.className + ' '
        + Math.round(e.getBoundingClientRect().right))"""
    )


def by_id(page: Page, name: str) -> Any:
    return page.locator(f'[id="{name}"]')


async def fill_bolo(page: Page, details: str = "White box truck taken overnight.") -> None:
    await by_id(page, "issuingAgency.name").fill("Example County Sheriff's Office")
    await page.get_by_label("Subject type").select_option("vehicle")
    await page.get_by_label("Reason", exact=False).first.select_option("stolen")
    await page.get_by_label("Details").fill(details)
    await by_id(page, "vehicles.0.description").fill("White 16 ft box truck")
    await page.get_by_label("TLP").select_option("AMBER")


async def test_a_bolo_to_a_list_from_sign_in_to_delivery(
    console: Console, sinks: Sinks, record_property: Callable[[str, object], None]
) -> None:
    _list_id, (_ana, _ben, _cal) = await watch_desk(console, sinks)
    password, secret = await analyst(console, "ava")
    page = await console.page()
    started = time.perf_counter()
    scanning = 0.0  # the accessibility scans and screenshots are not the flow's time
    await console.sign_in(page, "ava", password, secret)
    await page.get_by_role("link", name="Compose").click()
    scanned = time.perf_counter()
    await look(page, "compose-kinds-desktop")
    scanning += time.perf_counter() - scanned
    await page.get_by_role("link", name="Be on the lookout (BOLO)").click()
    await expect(page.get_by_role("heading", level=1)).to_have_text(
        "Compose: Be on the lookout (BOLO)"
    )
    await fill_bolo(page)
    await page.get_by_label("Watch desk").check()
    await page.get_by_role("button", name="Dry run").click()
    summary = page.locator("#plan-summary")
    await expect(summary).to_contain_text("2 recipients would receive it; 1 withheld")
    recipients = page.get_by_role("table", name="Recipients")
    await expect(recipients).to_contain_text("ana@example.org")
    await expect(recipients).to_contain_text(sinks.hooks.base + "ok")
    withheld = page.get_by_role("table", name="Withheld")
    await expect(withheld.get_by_role("row", name=re.compile("Cal"))).to_contain_text(
        "tlp above clearance"
    )
    await expect(page.get_by_label("Watch desk")).to_be_checked()  # the form is still filled
    scanned = time.perf_counter()
    await look(page, "compose-desktop")
    scanning += time.perf_counter() - scanned
    await page.get_by_role("button", name="Send now").click()
    await expect(page).to_have_url(re.compile(r"/console/compose/sends/"))
    await expect(page.locator("#send-state")).to_have_text("released")
    await expect(page.locator("dl.facts")).to_contain_text("Watch desk")
    released = time.perf_counter() - started - scanning

    async def delivered() -> bool:
        mailed = {to for m in sinks.smtp.messages for to in m.rcpt_tos}
        return mailed == {"ana@example.org"} and len(sinks.hooks.requests) == 1

    await wait_until(delivered, timeout=30, what="the BOLO at Ana's inbox and Ben's webhook")
    elapsed = time.perf_counter() - started - scanning
    record_property("sign_in_to_delivered_bolo_seconds", round(elapsed, 3))
    print(
        f"sign-in to delivered BOLO: {elapsed:.2f} s (released after {released:.2f} s; "
        f"without {scanning:.2f} s of scans)"
    )
    assert not any("cal@example.org" in m.rcpt_tos for m in sinks.smtp.messages)
    await look(page, "compose-sent-desktop")
    phone = await console.page(phone=True)
    await console.sign_in(phone, "ava", password, secret)
    await phone.goto("/console/compose?kind=bolo")
    await look(phone, "compose-phone")
    assert await fits_narrowest(phone), await too_wide(phone)


async def test_an_invalid_form_keeps_what_was_typed_and_a_send_can_be_scheduled(
    console: Console, sinks: Sinks
) -> None:
    _list_id, (_ana, _ben, _cal) = await watch_desk(console, sinks)
    password, secret = await analyst(console, "ava")
    page = await console.page()
    await console.sign_in(page, "ava", password, secret)
    await page.goto("/console/compose?kind=bolo")
    await fill_bolo(page)
    await page.get_by_label("Reason", exact=False).first.select_option("")
    await page.get_by_label("Case number").fill("24-0094")
    await page.get_by_label("Ana").check()
    await page.get_by_role("button", name="Send now").click()
    summary = page.get_by_role("alert")
    await expect(summary).to_contain_text("There is a problem")
    reason = page.get_by_label("Reason", exact=False).first
    await expect(reason).to_have_attribute("aria-invalid", "true")
    await expect(page.locator('[id="reason-error"]')).to_contain_text("required")
    await expect(page.get_by_label("Case number")).to_have_value("24-0094")
    await expect(page.get_by_label("Details")).to_have_value("White box truck taken overnight.")
    await expect(page.get_by_label("Ana")).to_be_checked()
    await look(page, "compose-errors-desktop")
    # fixed and scheduled for tomorrow
    await reason.select_option("stolen")
    due = (console.staff.clock() + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%S")
    await page.get_by_label("Send at (UTC)").fill(due)
    await page.get_by_role("button", name="Schedule").click()
    await expect(page.get_by_role("heading", level=1)).to_contain_text("Scheduled")
    await expect(page.locator("#send-state")).to_have_text("scheduled")
    listed = await console.staff.call("GET", "/api/v1/sends", token=console.staff.admin_token)
    assert [s["state"] for s in listed.body["items"]] == ["scheduled"]
    assert not sinks.smtp.messages
    await look(page, "compose-scheduled-desktop")
    phone = await console.page(phone=True)
    await console.sign_in(phone, "ava", password, secret)
    await phone.goto(page.url)
    await look(phone, "compose-sent-phone")
    await phone.goto("/console/compose")
    await look(phone, "compose-kinds-phone")
    # and cancelled before it is due
    await page.get_by_role("button", name="Cancel this send").click()
    await expect(page.locator("#send-state")).to_have_text("cancelled")
    listed = await console.staff.call("GET", "/api/v1/sends", token=console.staff.admin_token)
    assert [s["state"] for s in listed.body["items"]] == ["cancelled"]


async def sent_by_api(console: Console, list_id: str, tlp: str) -> str:
    """A BOLO to the list, sent through the API: its alert id once its rows settle."""
    store = TokenStore(console.staff.service.database)
    _info, token = await store.create(
        f"publisher-{tlp}", Role.PUBLISHER, console.staff.clock(), TEST_SENDERS
    )
    document = fixture_document("bolo_minimal.json") | {"handling": {"tlp": tlp}}
    del document["identifier"], document["sent"]
    body = {"alert": document, "audience": {"lists": [list_id]}}
    answer = await console.staff.call("POST", "/api/v1/sends", body=body, token=token)
    assert answer.status == 202, answer.body
    await settled(console.staff.service, answer.body["alertId"], 3)
    return str(answer.body["alertId"])


async def test_the_record_filters_and_exports_and_the_audit_log_follows(
    console: Console, sinks: Sinks, tmp_path: Path
) -> None:
    list_id, (_ana, _ben, cal) = await watch_desk(console, sinks)
    amber = await sent_by_api(console, list_id, "AMBER")
    _id, password = await console.staff.make_account("ada", ["administrator"], "RED")
    _session, secret, _codes = await console.staff.enrolled("ada", password)
    page = await console.page()
    await console.sign_in(page, "ada", password, secret)
    await page.get_by_role("link", name="Record").click()
    table = page.get_by_role("table", name="Entries, newest first")
    await expect(table.locator("tbody tr")).to_have_count(3)
    await page.get_by_label("Outcome").select_option("withheld")
    await page.get_by_label("Alert id").fill(amber)
    await page.get_by_role("button", name="Show").click()
    await expect(page).to_have_url(re.compile(r"what=withheld"))
    await expect(table.locator("tbody tr")).to_have_count(1)
    await expect(table).to_contain_text(cal.id)
    await look(page, "record-desktop")
    async with page.expect_download() as download_info:
        await page.get_by_role("link", name="CSV").click()
    download = await download_info.value
    saved = tmp_path / "record.csv"
    await download.save_as(saved)
    rows = list(csv.DictReader(io.StringIO(saved.read_text())))
    assert [(r["alert_id"], r["stakeholder_id"], r["outcome"]) for r in rows] == [
        (amber, cal.id, "withheld")
    ]
    await page.get_by_role("link", name="Audit log").click()
    await page.get_by_label("Entity", exact=True).fill("send")
    await page.get_by_role("button", name="Show").click()
    audit = page.get_by_role("table", name="Entries, oldest first")
    await expect(audit).to_contain_text("release")
    await look(page, "audit-desktop")
    phone = await console.page(phone=True)
    await console.sign_in(phone, "ada", password, secret)
    await phone.goto("/console/record")
    await look(phone, "record-phone")
    assert await fits_narrowest(phone)
    await phone.set_viewport_size({"width": 390, "height": 844})
    await phone.goto("/console/audit")
    await look(phone, "audit-phone")
    assert await fits_narrowest(phone), await too_wide(phone)


async def test_an_administrator_cleared_for_green_sees_nothing_of_an_amber_alert(
    console: Console, sinks: Sinks
) -> None:
    list_id, _people = await watch_desk(console, sinks)
    amber = await sent_by_api(console, list_id, "AMBER")
    _id, green_password = await console.staff.make_account("gus", ["administrator"], "GREEN")
    _session, green_secret, _codes = await console.staff.enrolled("gus", green_password)
    green = await console.page()
    await console.sign_in(green, "gus", green_password, green_secret)
    await green.goto("/console/record")
    await expect(green.locator("#record-summary")).to_contain_text(
        "3 about alerts above your clearance are not shown"
    )
    body = await green.locator("main").inner_text()
    assert amber not in body
    assert "cal@example.org" not in body
    await green.goto("/console/audit?entity=send")
    await expect(green.get_by_text("Withheld: above your clearance").first).to_be_visible()
    assert "White box truck" not in await green.locator("main").inner_text()
    assert "ana@example.org" not in await green.content()
    answer = await green.request.get(f"/console/record/export?format=json&alert={amber}")
    assert answer.status == 403


async def test_an_administrator_creates_an_analyst_and_sees_the_password_once(
    console: Console,
) -> None:
    _id, password = await console.staff.make_account("ada", ["administrator"], "RED")
    _session, secret, _codes = await console.staff.enrolled("ada", password)
    page = await console.page()
    await console.sign_in(page, "ada", password, secret)
    await page.get_by_role("link", name="Accounts").click()
    await look(page, "accounts-desktop")
    await page.get_by_label("Username").fill("nia")
    await page.get_by_label("Display name").fill("Nia Analyst")
    await page.get_by_label("Organization").fill("County Fusion Center")
    await page.get_by_label("analyst").check()
    await page.get_by_label("Cleared up to").select_option("AMBER")
    await page.get_by_role("button", name="Create account").click()
    shown = page.locator("#temporary-password")
    await expect(shown).to_be_visible()
    temporary = (await shown.inner_text()).strip()
    assert len(temporary) >= 12
    table = page.get_by_role("table", name="Staff accounts")
    await expect(table.get_by_role("row", name=re.compile("nia"))).to_contain_text("analyst")
    await page.reload()
    await expect(page.locator("#temporary-password")).to_have_count(0)
    assert temporary not in await page.content()
    # the new analyst signs in with it; the analyst may not see the accounts page
    signed = await console.staff.sign_in("nia", temporary)
    assert signed.status == 201, signed.body
    await page.get_by_role("link", name="nia").click()
    await expect(page.get_by_role("heading", level=1)).to_have_text("Account nia")
    await page.get_by_role("button", name="Reset password").click()
    await expect(page.locator("#shown-secret")).to_be_visible()
    await look(page, "account-desktop")
    phone = await console.page(phone=True)
    await console.sign_in(phone, "ada", password, secret)
    await phone.goto(page.url.removesuffix("/password"))
    await look(phone, "account-phone")
    assert await fits_narrowest(phone), await too_wide(phone)
    await phone.set_viewport_size({"width": 390, "height": 844})
    await phone.goto("/console/accounts")
    await look(phone, "accounts-phone")
    assert await fits_narrowest(phone), await too_wide(phone)

    viewer_password, viewer_secret = await console.enrolled_account("val", ["analyst"])
    other = await console.page()
    await console.sign_in(other, "val", viewer_password, viewer_secret)
    answer = await other.goto("/console/accounts")
    assert answer is not None
    assert answer.status == 403
    await expect(other.get_by_role("heading", level=1)).to_contain_text("403")
    await expect(other.get_by_role("navigation", name="Console")).not_to_contain_text("Accounts")


async def test_a_bolo_sent_from_the_console_is_acknowledged_through_its_emailed_link(
    console: Console, sinks: Sinks
) -> None:
    """The rest of the analyst's flow: the board's counts move as the sinks receive and as the
    recipient acknowledges through the link in the email, and the alert's page shows who."""
    await watch_desk(console, sinks)
    password, secret = await analyst(console, "ida")
    page = await console.page()
    await console.sign_in(page, "ida", password, secret)
    board = await console.page()  # a second tab, left open on the live board
    await console.sign_in(board, "ida", password, secret)
    await expect(board.locator("#board")).to_have_attribute("data-live", "open")
    await page.goto("/console/compose?kind=bolo")
    await fill_bolo(page, "Box truck seen heading north.")
    await page.get_by_label("Watch desk").check()
    await page.get_by_label("Ask recipients to acknowledge").check()
    await page.get_by_role("button", name="Send now").click()
    await expect(page.locator("#send-state")).to_have_text("released")
    alert_id = (await page.locator("dl.facts code").first.inner_text()).strip()
    mail = await asyncio.wait_for(sinks.smtp.message(0), 30)
    plain = mail.parsed().get_body(("plain",))
    assert plain is not None
    link = re.search(r"http://127\.0\.0\.1:\d+/ack/\S+", str(plain.get_content()))
    assert link is not None, "the email carries no acknowledgment link"
    row = board.locator(f'[id="alert-{alert_id}"]')
    await expect(board.locator("#board-news")).to_be_visible()  # offered, never slipped in
    await board.reload()
    await expect(board.locator("#board")).to_have_attribute("data-live", "open")
    await expect(row.locator('[data-count="acknowledged"]')).to_have_text("0 of 2 (0%)")
    await page.goto(link.group(0))
    await page.get_by_role("button", name="Confirm receipt").click()
    # the open board's row changes by itself, without a reload
    await expect(row.locator('[data-count="acknowledged"]')).to_have_text("1 of 2 (50%)")
    await expect(board.locator("#live-status")).to_contain_text("1 acknowledged")
    await page.goto(f"/console/alerts/{alert_id}")
    await expect(page.locator("#acknowledged")).to_contain_text("Ana")
    await expect(page.locator("#not-acknowledged")).to_contain_text("Ben")
