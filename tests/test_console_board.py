"""The live board and an alert's page in a real browser, against the service on PostgreSQL
with real sinks (aiohttp webhook receivers, aiosmtpd): counts that move without a reload as
the sinks receive and people acknowledge, filters in the URL, deliveries and
acknowledgments with the actions of the alert's page, and a viewer cleared for GREEN who
never sees an AMBER alert's content on the board, its row, its page or the raw stream. Each
page is scanned by axe-core, reflowed at 320 px and photographed at desktop and phone
width."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aio_pika.abc import AbstractChannel
from playwright.async_api import Browser, Locator, Page, expect

from core.alert import alert_id_for
from dissemination.api.app import SESSION_COOKIE
from dissemination.settings import Settings, load_settings
from testbed.alerts import cap_json
from tests.alerts import fixture_document
from tests.brokerutil import open_connection, publish, wait_until
from tests.browser import Console, console_service, fits_narrowest, look
from tests.deliveryrig import (  # noqa: F401 - fixtures
    Sinks,
    delivery_env,
    publish_alert,
    rows_of,
    settled,
    sinks_fixture,
)
from tests.people import enrol

GREEN_HEADLINE = "Flash flood warning for Example County"
AMBER_HEADLINE = "Restricted: plant intrusion under investigation"
SENT = "2026-11-24T10:00:00-05:00"
SENDER = "alerts@fusion.example.gov"


@pytest.fixture
def store_kind() -> str:
    return "postgresql"


@dataclass
class Rig:
    console: Console
    channel: AbstractChannel
    settings: Settings
    sinks: Sinks
    pages: list[Page] = field(default_factory=list)

    async def page(self, *, phone: bool = False) -> Page:
        """A page in a browser context of its own, closed when the test ends (before the
        service stops, so no event stream is left open)."""
        page = await self.console.page(phone=phone)
        self.pages.append(page)
        return page

    async def publish(self, identifier: str, **overrides: Any) -> str:
        return await publish_alert(self.channel, self.settings, identifier, **overrides)

    async def signed_in(self, username: str, roles: list[str], max_tlp: str) -> Page:
        password, secret = await self.console.enrolled_account(username, roles, max_tlp)
        page = await self.page()
        await self.console.sign_in(page, username, password, secret)
        return page

    async def phone_like(self, page: Page) -> Page:
        """A phone-sized page in the same session as `page`."""
        phone = await self.page(phone=True)
        cookies: Any = await page.context.cookies()
        await phone.context.add_cookies(cookies)
        return phone


@pytest.fixture
async def rig(service_env: dict[str, str], browser: Browser, sinks: Sinks) -> AsyncIterator[Rig]:
    # a stalled webhook stays in flight until the test lets it answer
    env = delivery_env(service_env, sinks) | {"DISSEMINATION_WEBHOOK_TIMEOUT_SECONDS": "60"}
    settings = load_settings(env)
    async for console in console_service(env, browser):
        connection = await open_connection(settings)
        rig = Rig(console, await connection.channel(publisher_confirms=True), settings, sinks)
        try:
            yield rig
        finally:
            for page in rig.pages:
                await page.context.close()
            await connection.close()


async def _states(rig: Rig, alert_id: str) -> list[str]:
    return sorted(row["state"] for row in await rows_of(rig.console.staff.service, alert_id))


async def test_the_boards_counts_move_live_as_the_sinks_receive_and_people_acknowledge(
    rig: Rig,
) -> None:
    service = rig.console.staff.service
    await enrol(service, "Ana", {"webhook": rig.sinks.hooks.base + "ok"}, ack_required=True)
    await enrol(service, "Bo", {"webhook": rig.sinks.hooks.base + "stall"}, ack_required=True)
    alert_id = await rig.publish("BOARD-LIVE-1")

    async def one_sent_one_in_flight() -> bool:
        return await _states(rig, alert_id) == ["sending", "sent"]

    await wait_until(one_sent_one_in_flight, timeout=30, what="one row sent, one in flight")
    page = await rig.signed_in("ada", ["administrator"], "RED")
    await page.goto("/console/")
    row = page.locator(f"#alert-{alert_id}")
    await expect(row.get_by_role("rowheader")).to_have_text(GREEN_HEADLINE)
    await expect(row.locator('[data-count="targeted"]')).to_have_text("2")
    await expect(row.locator('[data-count="reached"]')).to_have_text("1")
    await expect(row.locator('[data-count="waiting"]')).to_have_text("1")
    await expect(row.locator('[data-count="acknowledged"]')).to_have_text("0 of 2 (0%)")
    await expect(row).to_contain_text("TLP:GREEN")
    await expect(page.locator("#board")).to_have_attribute("data-live", "open")
    await expect(page.locator("[data-live-label]")).to_have_text("Live")
    await look(page, "board-desktop")
    await page.get_by_label("Kind").focus()

    rig.sinks.hooks.release.set()  # the stalled receiver answers: the second row is sent
    await expect(row.locator('[data-count="reached"]')).to_have_text("2")
    await expect(row.locator('[data-count="waiting"]')).to_have_text("0")
    status = page.locator("#live-status")
    await expect(status).to_have_text(
        f"Alert {alert_id[:8]}: 2 of 2 delivered, 0 acknowledged", timeout=15000
    )
    assert await page.evaluate("document.activeElement.id") == "kind"  # focus kept

    token = json.loads(rig.sinks.hooks.requests[0][1])["ack"]["token"]
    answer = await rig.console.staff.call("POST", "/api/v1/acks", body={"token": token})
    assert answer.status == 201, answer.body
    await expect(row.locator('[data-count="acknowledged"]')).to_have_text("1 of 2 (50%)")
    await expect(status).to_have_text(
        f"Alert {alert_id[:8]}: 2 of 2 delivered, 1 acknowledged", timeout=15000
    )
    await expect(page.locator("#board-updated")).to_contain_text("Updated")
    assert await page.evaluate("document.activeElement.id") == "kind"
    news = page.get_by_role("link", name="New alerts have arrived: refresh the board to see them")
    await expect(news).to_be_hidden()
    second = await rig.publish("BOARD-LIVE-2")  # not on the board yet: offered, not slipped in
    await expect(news).to_be_visible()
    await expect(page.locator("#alerts tbody tr")).to_have_count(1)
    await settled(service, second, 2)
    await look(page, "board-live-desktop")
    assert await fits_narrowest(page)

    phone = await rig.phone_like(page)
    await phone.goto("/console/")
    await expect(phone.locator(f"#alert-{alert_id}")).to_contain_text("1 of 2 (50%)")
    await look(phone, "board-phone")


async def test_the_filters_narrow_the_board_and_stay_in_the_url(rig: Rig) -> None:
    service = rig.console.staff.service
    await enrol(service, "Cy", {"webhook": rig.sinks.hooks.base + "ok"})
    cap_id = await rig.publish("BOARD-FILTER-CAP")
    bolo = fixture_document("bolo_minimal.json") | {"headline": "Stolen box truck"}
    await publish(rig.channel, rig.settings, json.dumps(bolo).encode())
    bolo_id = alert_id_for(bolo["sender"], bolo["identifier"], bolo["sent"])
    await settled(service, cap_id, 1)
    await settled(service, bolo_id, 1)
    page = await rig.signed_in("abe", ["analyst"], "RED")
    await page.goto("/console/")
    rows = page.locator("#alerts tbody tr")
    await expect(rows).to_have_count(2)

    await page.get_by_label("Kind").select_option("bolo")
    await page.get_by_role("button", name="Apply filters").click()
    await expect(page).to_have_url(re.compile(r"/console/\?kind=bolo&state=&within=$"))
    await expect(rows).to_have_count(1)
    await expect(rows.first).to_contain_text("Stolen box truck")
    await expect(page.get_by_role("link", name="Refresh")).to_have_attribute(
        "href", "/console/?kind=bolo"
    )

    await page.get_by_label("Kind").select_option("")
    await page.get_by_label("State").select_option("expired")
    await page.get_by_label("Received").select_option("1h")
    await page.get_by_role("button", name="Apply filters").click()
    await expect(page).to_have_url(re.compile(r"\?kind=&state=expired&within=1h$"))
    await expect(rows).to_have_count(1)
    await expect(rows.first).to_have_text("No alerts match these filters.")

    await page.goto("/console/?kind=memo")
    await expect(page.get_by_role("alert")).to_contain_text("There is no kind 'memo'")
    await expect(page.get_by_label("Kind")).to_have_attribute("aria-invalid", "true")


async def test_the_alert_page_lists_deliveries_and_acknowledgments_and_acts_on_them(
    rig: Rig,
) -> None:
    service = rig.console.staff.service
    await enrol(service, "Ana", {"webhook": rig.sinks.hooks.base + "ok"}, ack_required=True)
    await enrol(service, "Bo", {"email": "bo@example.org"}, ack_required=True)
    await enrol(service, "Cy", {"email": "cy@example.org"}, max_tlp="CLEAR")
    alert_id = await rig.publish("ALERT-PAGE-1")
    await settled(service, alert_id, 3)
    token = json.loads(rig.sinks.hooks.requests[0][1])["ack"]["token"]
    assert (await rig.console.staff.call("POST", "/api/v1/acks", body={"token": token})).status

    page = await rig.signed_in("ada", ["administrator"], "RED")
    await page.goto(f"/console/alerts/{alert_id}")
    await expect(page.get_by_role("heading", level=1)).to_have_text(GREEN_HEADLINE)
    facts = page.locator("dl.facts")
    await expect(facts).to_contain_text(SENDER)
    await expect(facts).to_contain_text("ALERT-PAGE-1")
    deliveries = page.locator("#deliveries tbody tr")
    await expect(deliveries).to_have_count(3)

    def of(name: str) -> Locator:
        return deliveries.filter(has=page.get_by_role("rowheader", name=f"{name} (Partner)"))

    cy = of("Cy")
    await expect(cy).to_contain_text("withheld")
    await expect(cy).to_contain_text("tlp_above_clearance")
    await expect(of("Bo")).to_contain_text("sent")
    await expect(page.locator("#acknowledged")).to_contain_text("Ana (Partner)")
    await expect(page.locator("#not-acknowledged")).to_contain_text("Bo (Partner)")
    await expect(page.locator("#record tbody tr").first).to_be_visible()
    await look(page, "alert-desktop")

    await page.get_by_role("button", name="Send follow-up").click()
    await expect(page.locator("#notice")).to_contain_text("follow-up is on its way")
    await expect(of("Bo")).to_have_count(2)
    await expect(of("Bo").filter(has_text="escalation")).to_have_count(1)

    await page.get_by_label("Why (for example: confirmed by phone)").fill("x")
    await page.get_by_label("Why (for example: confirmed by phone)").evaluate(
        "input => input.removeAttribute('minlength')"
    )
    await page.get_by_role("button", name="Record acknowledgment").click()
    await expect(page.get_by_role("alert")).to_contain_text("Why: 'x' is too short")
    await expect(page.locator("#ack-reason")).to_have_attribute("aria-invalid", "true")
    await page.get_by_label("Recipient").select_option(label="Bo (Partner)")
    await page.get_by_label("Why (for example: confirmed by phone)").fill("confirmed by phone")
    await page.get_by_role("button", name="Record acknowledgment").click()
    await expect(page.locator("#notice")).to_have_text("The acknowledgment is recorded.")
    await expect(page.locator("#acknowledged")).to_contain_text("Bo (Partner)")
    await expect(page.locator("#acknowledged")).to_contain_text("by admin")
    await expect(page.locator("#not-acknowledged")).to_contain_text("Nobody owes")

    await page.get_by_label("Stakeholder", exact=True).select_option(label="Cy (Partner)")
    await page.get_by_label("Justification").fill("Flooding reaches Cy's site within the hour")
    await page.get_by_role("button", name="Release now").click()
    await expect(page.locator("#notice")).to_contain_text("flagged for review")
    await expect(of("Cy").filter(has_text="imminent_danger")).to_have_count(1)
    await expect(page.get_by_role("button", name="Send Cancel")).to_have_count(0)  # CAP
    assert await fits_narrowest(page)

    phone = await rig.phone_like(page)
    await phone.goto(f"/console/alerts/{alert_id}")
    await look(phone, "alert-phone")


async def test_an_analyst_cancels_a_local_alert_and_the_cancel_reaches_its_recipients(
    rig: Rig,
) -> None:
    service = rig.console.staff.service
    await enrol(service, "Ana", {"webhook": rig.sinks.hooks.base + "ok"})
    bolo = fixture_document("bolo_minimal.json") | {
        "headline": "Stolen box truck",
        "handling": {"tlp": "GREEN"},
    }
    await publish(rig.channel, rig.settings, json.dumps(bolo).encode())
    bolo_id = alert_id_for(bolo["sender"], bolo["identifier"], bolo["sent"])
    await settled(service, bolo_id, 1)
    staff = rig.console.staff
    _id, password = await staff.make_account("abe", ["analyst"], "RED", senders=[bolo["sender"]])
    _session, secret, _codes = await staff.enrolled("abe", password)
    page = await rig.page()
    await rig.console.sign_in(page, "abe", password, secret)
    await page.goto(f"/console/alerts/{bolo_id}")
    await page.get_by_role("button", name="Send Cancel").click()
    await expect(page.get_by_role("alert")).to_contain_text("Confirm that you mean")
    await page.get_by_label("Send a Cancel to everyone this alert was for").check()
    await page.get_by_role("button", name="Send Cancel").click()
    await expect(page.locator("#notice")).to_contain_text("cannot be recalled")

    def cancels() -> list[dict[str, Any]]:
        bodies = [json.loads(body)["alert"] for _headers, body in rig.sinks.hooks.requests]
        return [alert for alert in bodies if alert["msgType"] == "Cancel"]

    async def cancel_received() -> bool:
        return bool(cancels())

    await wait_until(cancel_received, timeout=30, what="the Cancel at the webhook receiver")
    [sent] = cancels()
    assert sent["references"] == [
        {"sender": bolo["sender"], "identifier": bolo["identifier"], "sent": bolo["sent"]}
    ]
    await page.goto("/console/")
    await expect(page.locator("#alerts tbody tr").first).to_contain_text(
        "Cancelled: Stolen box truck"
    )


async def test_a_green_viewer_never_sees_an_amber_alerts_content(rig: Rig) -> None:
    service = rig.console.staff.service
    await enrol(service, "Ana", {"webhook": rig.sinks.hooks.base + "ok"})
    amber_id = alert_id_for(SENDER, "AMBER-1", SENT)
    green = next(
        f"GREEN-{n}" for n in range(1000) if alert_id_for(SENDER, f"GREEN-{n}", SENT) > amber_id
    )
    green_id = alert_id_for(SENDER, green, SENT)
    page = await rig.signed_in("gus", ["administrator"], "GREEN")
    cookie = next(c["value"] for c in await page.context.cookies() if c["name"] == SESSION_COOKIE)

    # The raw stream: an AMBER alert's changes come before the GREEN one's (earlier, or in
    # the same poll in id order), so reading up to the GREEN event reads all they could be.
    timeout = aiohttp.ClientTimeout(total=60)
    async with (
        aiohttp.ClientSession(timeout=timeout) as http,
        http.get(
            rig.console.base + "/console/board/stream",
            headers={"Cookie": f"{SESSION_COOKIE}={cookie}"},
        ) as stream,
    ):
        assert stream.content_type == "text/event-stream"
        amber = {"info": [cap_json()["info"][0] | {"headline": AMBER_HEADLINE}]}
        assert await rig.publish("AMBER-1", handling={"tlp": "AMBER"}, **amber) == amber_id
        await settled(service, amber_id, 1)
        assert await rig.publish(green) == green_id
        seen = ""
        async for line in stream.content:
            seen += line.decode()
            if f"event: alert-{green_id}" in seen:
                break
    assert amber_id not in seen
    assert "AMBER" not in seen
    assert "plant intrusion" not in seen

    await page.goto("/console/")
    amber_row = page.locator(f"#alert-{amber_id}")
    await expect(amber_row).to_contain_text("Withheld alert")
    await expect(amber_row).to_contain_text("TLP:AMBER")
    await expect(page.locator(f"#alert-{green_id}")).to_contain_text(GREEN_HEADLINE)
    assert "plant intrusion" not in await page.content()
    fragment = await page.request.get(f"/console/board/rows/{amber_id}")
    assert fragment.status == 200
    text = await fragment.text()
    assert "Withheld alert" in text
    assert "plant intrusion" not in text
    assert AMBER_HEADLINE not in text

    await page.goto(f"/console/alerts/{amber_id}")
    await expect(page.get_by_role("heading", level=1)).to_have_text("Alert above your clearance")
    assert "plant intrusion" not in await page.content()
    assert "hooks" not in await page.content()  # no recipients or addresses
    await expect(page.get_by_role("button")).to_have_count(1)  # only "Sign out"
    await look(page, "alert-withheld-desktop")
    token = await page.locator('meta[name="csrf-token"]').get_attribute("content")
    refused = await page.request.post(
        f"/console/alerts/{amber_id}/acknowledge",
        form={"stakeholder": "x", "reason": "by phone"},
        headers={"X-CSRF-Token": token or "", "Origin": rig.console.base},
    )
    assert refused.status == 403
    assert "above your clearance" in await refused.text()
