"""The directory pages and the rule editor in a real browser against the real service: an
administrator adds a stakeholder, a contact and a subscription through the forms and finds
the stakeholder by searching; the rule editor's preview lists the recent alerts the rule
would have matched, with their count, exactly as the API's match endpoint decides them; a
viewer cleared for GREEN sees an AMBER match only as its marks. Each page is scanned,
photographed at desktop and phone width and reflowed at 320 px."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from playwright.async_api import expect

from tests.alerts import fixture_document
from tests.brokerutil import wait_until
from tests.browser import Console, console_fixture, fits_narrowest, look  # noqa: F401 - fixture
from tests.consolerig import (  # noqa: F401 - fixtures
    Receiver,
    hook_fixture,
    signed_in,
    signed_in_page,
)
from tests.deliveryrig import recorded
from tests.people import enrol
from tests.staffrig import postgresql_only_fixture  # noqa: F401 - fixture

pytestmark = pytest.mark.slow
FUTURE = "2099-01-01T00:00:00-05:00"


async def test_an_administrator_adds_a_stakeholder_contact_and_subscription_through_the_forms(
    console: Console, hook: Receiver
) -> None:
    page = await signed_in_page(console, "ada", ["administrator"])
    await page.goto("/console/directory")
    await expect(page.get_by_role("heading", level=1)).to_have_text("Directory")
    await page.get_by_role("link", name="Add a stakeholder").click()
    await page.get_by_role("button", name="Add stakeholder").click()
    await expect(page.get_by_role("alert")).to_contain_text("name")
    await expect(page.get_by_label("Name", exact=True)).to_have_attribute("aria-invalid", "true")
    await look(page, "directory-stakeholder-new-desktop")
    await page.get_by_label("Name", exact=True).fill("Harbor Police Dispatch")
    await page.get_by_label("Organization").fill("Harbor City Police")
    await page.get_by_label("Sector").select_option("law_enforcement")
    await page.get_by_label("Cleared up to").select_option("AMBER")
    await page.get_by_label("Caveats held").fill("LES")
    await page.get_by_label("Law enforcement agency").check()
    await page.get_by_role("button", name="Add stakeholder").click()
    await expect(page.get_by_role("heading", level=1)).to_have_text("Harbor Police Dispatch")
    await expect(page.get_by_role("status").filter(has_text="Stakeholder added")).to_be_visible()

    await page.get_by_role("link", name="Edit Harbor Police Dispatch").click()
    await page.get_by_label("Organization").fill("Harbor City Police Department")
    await page.get_by_role("button", name="Save changes").click()
    await expect(page.get_by_role("status").filter(has_text="Stakeholder saved")).to_be_visible()
    await expect(page.locator("dl.facts")).to_contain_text("Harbor City Police Department")

    await page.get_by_label("Channel").select_option("webhook")
    await page.get_by_label("Address").fill(hook.url)
    await page.get_by_label("Label (optional)").fill("dispatch console")
    await page.get_by_role("button", name="Add contact").click()
    await expect(page.get_by_role("status").filter(has_text="Contact added")).to_be_visible()
    await expect(page.get_by_text("signing secret")).to_be_visible()
    await expect(page.get_by_role("table", name="Contacts")).to_contain_text(hook.url)

    await page.get_by_role("link", name="Add a subscription").click()
    await page.get_by_label("Rule (JSON)").fill('{"kinds": ["bolo"], "minSeverity": "Severe"}')
    await page.get_by_role("checkbox", name="email").uncheck()
    await page.get_by_role("checkbox", name="webhook").check()
    await page.get_by_role("button", name="Save subscription").click()
    await expect(page.get_by_role("status").filter(has_text="Subscription saved")).to_be_visible()
    subscriptions = page.get_by_role("table", name="Subscriptions")
    await expect(subscriptions).to_contain_text('"kinds": ["bolo"]')
    await expect(subscriptions).to_contain_text("webhook")
    await look(page, "directory-stakeholder-desktop")

    await page.goto("/console/directory")
    await page.get_by_label("Search stakeholders by name or organization").fill("harbor city")
    await page.get_by_role("button", name="Search").click()
    listed = page.get_by_role("table", name=re.compile("Stakeholders matching"))
    await expect(listed.get_by_role("link", name="Harbor Police Dispatch")).to_be_visible()
    await expect(listed).to_contain_text("TLP:AMBER")
    await look(page, "directory-desktop")

    # a distribution list made, filled and emptied through its forms
    await page.goto("/console/directory/lists")
    await page.get_by_role("button", name="Create list").click()
    await expect(page.get_by_label("List name")).to_have_attribute("aria-invalid", "true")
    await page.get_by_label("List name").fill("Port watch")
    await page.get_by_role("button", name="Create list").click()
    await expect(page.get_by_role("heading", level=1)).to_have_text("Port watch")
    list_url = page.url.split("?", 1)[0]
    await page.get_by_label("Stakeholder or list").select_option(label="Harbor Police Dispatch")
    await page.get_by_role("button", name="Add member").click()
    await expect(page.get_by_role("status").filter(has_text="Member added")).to_be_visible()
    reached = page.get_by_role("table", name=re.compile("Stakeholders reached"))
    await expect(reached).to_contain_text("Harbor Police Dispatch")
    await look(page, "directory-list-desktop")
    harbor_id = await reached.get_by_role("link").get_attribute("href")
    assert harbor_id is not None
    await page.goto(harbor_id)
    await expect(page.locator("dl.facts")).to_contain_text("Port watch")
    await page.goto(list_url)
    await page.get_by_role("button", name="Remove Harbor Police Dispatch").click()
    await expect(page.get_by_role("status").filter(has_text="Member removed")).to_be_visible()
    await expect(page.get_by_role("table", name="Direct members")).to_contain_text("No members.")

    for path, name, text in (
        ("/console/directory/contacts", "contacts", hook.url),
        ("/console/directory/subscriptions", "subscriptions", "webhook"),
        ("/console/directory/lists", "lists", "Port watch"),
    ):
        await page.goto(path)
        await expect(page.locator("main")).to_contain_text(text)
        await look(page, f"directory-{name}-desktop")

    phone = await signed_in_page(console, "ada2", ["administrator"], phone=True)
    for path, name in (
        ("/console/directory", "directory"),
        (harbor_id, "directory-stakeholder"),
        (list_url, "directory-list"),
        ("/console/directory/stakeholders/new", "directory-stakeholder-new"),
        ("/console/directory/contacts", "directory-contacts"),
        ("/console/directory/subscriptions", "directory-subscriptions"),
        ("/console/directory/lists", "directory-lists"),
    ):
        await phone.goto(path)
        await look(phone, f"{name}-phone")
        assert await fits_narrowest(phone), path
        await phone.set_viewport_size({"width": 390, "height": 844})


def local_alert(name: str, identifier: str, headline: str, tlp: str) -> dict[str, Any]:
    return fixture_document(name) | {
        "identifier": identifier,
        "headline": headline,
        "handling": {"tlp": tlp},
        "expires": FUTURE,
    }


async def test_the_rule_editor_previews_what_the_match_endpoint_decides(
    console: Console, hook: Receiver
) -> None:
    staff = console.staff
    desk = await enrol(staff.service, "Desk", {"webhook": hook.url}, rule={"kinds": ["bolo"]})
    publisher = await signed_in(staff, "pat", ["analyst"])
    documents = [
        local_alert("bolo_minimal.json", "PV-1", "Green bolo one", "GREEN"),
        local_alert("advisory_minimal.json", "PV-2", "Green advisory", "GREEN"),
        local_alert("bolo_minimal.json", "PV-3", "Amber bolo secret", "AMBER"),
        local_alert("bolo_minimal.json", "PV-4", "Green bolo two", "GREEN"),
    ]
    ids = []
    for document in documents:
        answer = await staff.call("POST", "/api/v1/alerts", body=document, session=publisher)
        assert answer.status == 202, answer.body
        ids.append(str(answer.body["id"]))
        await wait_until(lambda: recorded(staff.service, ids[-1]), what="the alert recorded")
    found = await staff.call(
        "GET", f"/api/v1/subscriptions?stakeholderId={desk.id}", token=staff.admin_token
    )
    [subscription] = found.body["items"]

    # what the API's match endpoint says of each recent alert, for this subscription
    by_api = set()
    for alert_id, document in zip(ids, documents, strict=True):
        answer = await staff.call("POST", "/api/v1/match", body=document, token=staff.admin_token)
        assert answer.status == 200, answer.body
        [result] = answer.body["alerts"]
        chosen = {s for t in result["targets"] for s in t["matchedSubscriptionIds"]}
        chosen |= {w["subscriptionId"] for w in result["withheld"]}
        if subscription["id"] in chosen:
            by_api.add(alert_id)
    assert by_api == {ids[0], ids[2], ids[3]}
    previewed = await staff.call(
        "POST",
        "/api/v1/match/rule",
        body={"stakeholderId": desk.id, "rule": subscription["rule"]},
        token=staff.admin_token,
    )
    assert previewed.status == 200, previewed.body
    assert (previewed.body["considered"], previewed.body["matched"]) == (4, 3)
    assert {a["id"] for a in previewed.body["alerts"]} == by_api

    page = await signed_in_page(console, "ada", ["administrator"])
    await page.goto(f"/console/directory/subscriptions/{subscription['id']}")
    count = page.locator("#preview-count")
    await expect(count).to_contain_text("3 of the 4 most recent alerts would have matched")
    matches = page.get_by_role("table", name="Matching recent alerts")
    links = await matches.locator("tbody a").evaluate_all(
        "links => links.map(a => a.getAttribute('href'))"
    )
    assert {href.rsplit("/", 1)[1] for href in links} == by_api
    await expect(matches).to_contain_text("Amber bolo secret")
    await look(page, "directory-rule-editor-desktop")

    # a changed rule is previewed before it is saved
    await page.get_by_label("Rule (JSON)").fill(json.dumps({"kinds": ["advisory"]}))
    await page.get_by_role("button", name="Preview matches").click()
    await expect(count).to_contain_text("1 of the 4 most recent alerts would have matched")
    await expect(matches).to_contain_text("Green advisory")
    await page.get_by_label("Rule (JSON)").fill('{"kinds": ["memo"]')
    await page.get_by_role("button", name="Preview matches").click()
    await expect(page.get_by_role("alert")).to_contain_text("not valid JSON")
    await expect(page.get_by_label("Rule (JSON)")).to_have_attribute("aria-invalid", "true")
    saved = await staff.call(
        "GET", f"/api/v1/subscriptions/{subscription['id']}", token=staff.admin_token
    )
    assert saved.body["rule"] == {"kinds": ["bolo"]}

    # a viewer cleared for GREEN: the AMBER alert is not tried, only counted
    green = await signed_in_page(console, "gil", ["viewer"], "GREEN", phone=True)
    await green.goto(f"/console/directory/subscriptions/{subscription['id']}")
    await expect(green.locator("#preview-count")).to_contain_text(
        "2 of the 3 most recent alerts would have matched; 1 more, above your clearance,"
        " was not tried."
    )
    green_matches = green.get_by_role("table", name="Matching recent alerts")
    await expect(green_matches.locator("tbody tr")).to_have_count(2)
    await expect(green_matches).not_to_contain_text("TLP:AMBER")
    assert "Amber bolo secret" not in await green.content()
    await expect(green.get_by_role("button", name="Save subscription")).to_have_count(0)
    await look(green, "directory-rule-editor-phone")
    assert await fits_narrowest(green)
    await green.goto("/console/directory")
    assert "Amber bolo secret" not in await green.content()
