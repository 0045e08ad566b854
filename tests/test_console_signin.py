"""The console's sign-in in a real browser: a TOTP sign-in, enrolment through the pages,
lockout, CSRF refusals, session expiry and the idle warning; each page scanned by axe-core,
reflowed at 320 px and photographed at desktop and phone width."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import pytest
from playwright.async_api import Browser, expect

from tests.browser import Console, console_service, fits_narrowest, look


@pytest.fixture
def store_kind() -> str:
    return "postgresql"


@pytest.fixture
async def console(service_env: dict[str, str], browser: Browser) -> AsyncIterator[Console]:
    async for rig in console_service(
        service_env, browser, DISSEMINATION_ACCOUNTS_MAX_FAILED_ATTEMPTS="3"
    ):
        yield rig


async def test_signing_in_with_a_totp_code_lands_on_the_board(console: Console) -> None:
    password, secret = await console.enrolled_account("ana", ["analyst"])
    for phone in (False, True):
        page = await console.page(phone=phone)
        await page.goto("/")
        await expect(page).to_have_url(re.compile(r"/console/sign-in\?next="))
        await look(page, f"sign-in-{'phone' if phone else 'desktop'}")
        await console.sign_in(page, "ana", password, secret)
        await expect(page).to_have_url(re.compile(r"/console/$"))
        await expect(page.get_by_role("navigation", name="Console")).to_contain_text("Compose")
        await expect(page.locator(".who")).to_contain_text("TLP:AMBER")
        await page.context.close()


async def test_the_sign_in_page_reflows_at_320_pixels(console: Console) -> None:
    page = await console.page()
    await page.goto("/console/sign-in")
    assert await fits_narrowest(page)


async def test_a_new_account_enrols_its_second_factor_through_the_pages(console: Console) -> None:
    _id, password = await console.staff.make_account("nia", ["viewer"], "GREEN")
    page = await console.page()
    await page.goto("/console/sign-in")
    await page.get_by_label("Username").fill("nia")
    await page.get_by_label("Password").fill(password)
    await page.get_by_role("button", name="Sign in").click()
    await expect(page).to_have_url(re.compile(r"/console/enrol$"))
    await page.get_by_role("button", name="Start").click()
    secret = (await page.locator("code.secret").inner_text()).strip()
    await expect(page.get_by_role("list", name="Recovery codes").locator("li")).to_have_count(10)
    await expect(page.locator(".qr svg")).to_be_visible()
    await look(page, "enrol-desktop")
    await page.get_by_label("Code from your authenticator app").fill(console.staff.code(secret))
    await page.get_by_role("button", name="Confirm and continue").click()
    await expect(page).to_have_url(re.compile(r"/console/\?enrolled=1$"))
    await expect(page.get_by_role("heading", level=1)).to_have_text("Board")


async def test_a_wrong_code_is_refused_and_repeated_failures_lock_the_account(
    console: Console,
) -> None:
    password, secret = await console.enrolled_account("ola", ["analyst"])
    page = await console.page()
    await page.goto("/console/sign-in")
    await page.get_by_label("Username").fill("ola")
    await page.get_by_label("Password").fill(password)
    await page.get_by_label("Code from your authenticator app").fill("000000")
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_role("alert")).to_contain_text("code")
    await expect(page.get_by_label("Code from your authenticator app")).to_have_attribute(
        "aria-invalid", "true"
    )
    await look(page, "sign-in-refused-desktop")
    for _ in range(3):
        await page.get_by_label("Password").fill("not the password")
        await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_role("alert")).to_contain_text("locked")
    # the right password and code are refused while the account is locked
    await page.get_by_label("Password").fill(password)
    await page.get_by_label("Code from your authenticator app").fill(console.staff.code(secret))
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_role("alert")).to_contain_text("locked")
    await expect(page).to_have_url(re.compile(r"/console/sign-in"))


async def test_a_change_without_the_form_token_or_from_another_origin_is_refused(
    console: Console,
) -> None:
    password, secret = await console.enrolled_account("uma", ["analyst"])
    page = await console.page()
    await console.sign_in(page, "uma", password, secret)
    same_origin = {"Origin": console.base}
    missing = await page.request.post("/console/sign-out", headers=same_origin, form={})
    assert missing.status == 403
    assert "stale or foreign" in await missing.text()
    token = await page.locator('meta[name="csrf-token"]').get_attribute("content")
    assert token
    foreign = await page.request.post(
        "/console/sign-out",
        headers={"Origin": "https://elsewhere.example"},
        form={"csrf_token": token},
    )
    assert foreign.status == 403
    # still signed in: neither request signed the session out
    await page.goto("/console/")
    await expect(page.get_by_role("heading", level=1)).to_have_text("Board")
    await page.get_by_role("button", name="Sign out").click()
    await expect(page.get_by_role("status").filter(has_text="signed out")).to_be_visible()
    await page.goto("/console/")
    await expect(page).to_have_url(re.compile(r"/console/sign-in"))


async def test_an_idle_session_warns_first_then_ends(console: Console) -> None:
    password, secret = await console.enrolled_account("eli", ["viewer"])
    page = await console.page()
    await page.clock.install()
    await console.sign_in(page, "eli", password, secret)
    dialog = page.get_by_role("dialog", name="Your session is about to end")
    await expect(dialog).to_be_hidden()
    await page.clock.fast_forward("28:30")  # idle timeout 30 min, warned 2 min before
    await expect(dialog).to_be_visible()
    await look(page, "session-warning-desktop")
    async with page.expect_response("**/console/session/keep-alive") as answered:
        await dialog.get_by_role("button", name="Stay signed in").click()
    assert (await answered.value).status == 204
    await expect(dialog).to_be_hidden()
    # on the server, the idle timeout passes: the next page asks to sign in again
    console.staff.clock.advance(31 * 60)
    await page.goto("/console/")
    await expect(page).to_have_url(re.compile(r"/console/sign-in\?next="))
    await expect(page.get_by_role("heading", level=1)).to_have_text("Sign in")
