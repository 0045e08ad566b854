"""The console in a real browser: Debian's chromium driven by Playwright (async, in the
suite's event loop) through `executable_path`, since browsers cannot be downloaded here; a
service whose public URL is the loopback address the browser uses, so its origin checks
hold; sign-in through the pages; screenshots at desktop and phone width written under
tests/screenshots/ (ignored by git) for a person to look at; and axe-core's scan."""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from axe_playwright_python.async_playwright import Axe
from playwright.async_api import Browser, BrowserContext, Page, async_playwright, expect

from testbed.ports import free_port
from tests.staffrig import PUBLIC_URL_ENV, Staff, staff_service

SCREENSHOTS = Path(__file__).parent / "screenshots"
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
NARROWEST = 320
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# Playwright's assertions retry until this (ms): generous, since CI machines are small and shared
EXPECT_TIMEOUT_MS = 15_000
expect.set_options(timeout=EXPECT_TIMEOUT_MS)
# axe-core's impact levels that fail a page
BLOCKING_IMPACTS = frozenset({"serious", "critical"})
AXE_OPTIONS = {
    "resultTypes": ["violations"],
    "runOnly": {"type": "tag", "values": ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]},
}


def chromium_path() -> str:
    """Debian's chromium; its absence skips the browser tests locally and fails them in CI."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        reason = "chromium is not installed (apt-get install -y chromium; .ci/run does it)"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    return found


async def launched_browser() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=chromium_path(), args=CHROMIUM_ARGS
        )
        try:
            yield browser
        finally:
            await browser.close()


@dataclass
class Console:
    """A running service with staff helpers (`staff`) and a browser to look at it with."""

    staff: Staff
    browser: Browser

    @property
    def base(self) -> str:
        return self.staff.base

    async def context(self, *, phone: bool = False) -> BrowserContext:
        options: dict[str, Any] = {"base_url": self.base}
        if phone:
            options |= {
                "viewport": PHONE,
                "is_mobile": True,
                "has_touch": True,
                "device_scale_factor": 2,
            }
        else:
            options["viewport"] = DESKTOP
        return await self.browser.new_context(**options)

    async def page(self, *, phone: bool = False) -> Page:
        return await (await self.context(phone=phone)).new_page()

    async def sign_in(self, page: Page, username: str, password: str, secret: str) -> None:
        """Sign in through the sign-in page with a TOTP code; lands on the board."""
        await page.goto("/console/sign-in")
        await page.get_by_label("Username").fill(username)
        await page.get_by_label("Password").fill(password)
        await page.get_by_label("Code from your authenticator app").fill(self.staff.code(secret))
        await page.get_by_role("button", name="Sign in").click()
        await expect(page.get_by_role("heading", level=1)).not_to_have_text("Sign in")
        # The heading shows while the page is still loading; the page's script (the idle
        # timer a test may fast-forward past) runs once it has loaded.
        await page.wait_for_load_state("load")
        self.staff.clock.advance(30)  # the code's time-step is used: the next sign-in needs another

    async def enrolled_account(
        self, username: str, roles: list[str], max_tlp: str = "AMBER"
    ) -> tuple[str, str]:
        """An account with its second factor enrolled (through the API): password, secret."""
        _id, password = await self.staff.make_account(username, roles, max_tlp)
        _session, secret, _codes = await self.staff.enrolled(username, password)
        return password, secret


async def console_service(
    env: dict[str, str], browser: Browser, **overrides: str
) -> AsyncIterator[Console]:
    port = free_port()
    settings = {"DISSEMINATION_HTTP_PORT": str(port), PUBLIC_URL_ENV: f"http://127.0.0.1:{port}"}
    async for staff in staff_service(env, **(settings | overrides)):
        yield Console(staff, browser)


@pytest.fixture(name="console")
async def console_fixture(service_env: dict[str, str], browser: Browser) -> AsyncIterator[Console]:
    """The console on this test's service settings, with the session's browser."""
    async for rig in console_service(service_env, browser):
        yield rig


async def screenshot(page: Page, name: str) -> Path:
    """A full-page screenshot at tests/screenshots/<name>.png."""
    SCREENSHOTS.mkdir(exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    await page.screenshot(path=str(path), full_page=True)
    return path


async def accessibility_violations(page: Page) -> list[dict[str, Any]]:
    """axe-core's serious and critical WCAG 2.1 A/AA violations on the page as it is now."""
    results = await Axe().run(page, options=AXE_OPTIONS)
    violations = results.response["violations"]
    return [v for v in violations if v.get("impact") in BLOCKING_IMPACTS]


def describe(violations: list[dict[str, Any]]) -> str:
    return "; ".join(
        f"{v['id']} ({v['impact']}): {[n['target'] for n in v['nodes']][:3]}" for v in violations
    )


async def fits_narrowest(page: Page) -> bool:
    """True if the page reflows at 320 px without the page itself scrolling sideways."""
    await page.set_viewport_size({"width": NARROWEST, "height": 640})
    width = await page.evaluate("document.documentElement.scrollWidth")
    return bool(width <= NARROWEST)


async def look(page: Page, name: str) -> None:
    """The checks every page gets: no serious accessibility violation, reflow at 320 px,
    and a screenshot."""
    await screenshot(page, name)
    violations = await accessibility_violations(page)
    assert not violations, f"{name}: {describe(violations)}"
