"""Helpers for the approvals and directory console tests: a webhook receiver that hands each
delivery to the test as it arrives (await it, no polling), analysts who send held alerts
through the API with their own session, and form posts carrying a session's form token."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web
from playwright.async_api import Page

from dissemination.console.auth import form_token
from tests.alerts import TEST_SENDERS, fixture_document
from tests.brokerutil import wait_until
from tests.browser import Console
from tests.deliveryrig import rows_of, serve_on_loopback
from tests.staffrig import Answer, Signed, Staff


@dataclass
class Receiver:
    """A webhook endpoint on 127.0.0.1 that queues the alert id of every delivery."""

    url: str = ""
    arrived: asyncio.Queue[str] = field(default_factory=asyncio.Queue)
    seen: list[str] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        body = json.loads(await request.read())
        alert_id = str(body["alert"]["id"])
        self.seen.append(alert_id)
        await self.arrived.put(alert_id)
        return web.Response(status=200)

    async def next(self, timeout: float = 30) -> str:
        return await asyncio.wait_for(self.arrived.get(), timeout)


async def receiver() -> AsyncIterator[Receiver]:
    found = Receiver()
    app = web.Application()
    app.router.add_post("/hook", found.handle)
    runner, base = await serve_on_loopback(app)
    found.url = base + "hook"
    try:
        yield found
    finally:
        await runner.cleanup()


@pytest.fixture(name="hook")
async def hook_fixture() -> AsyncIterator[Receiver]:
    async for found in receiver():
        yield found


PII_AMBER = {"tlp": "AMBER", "caveats": ["PII"]}
CLEARED = {"maxTlp": "AMBER", "caveats": ["PII", "LES"]}
DESK_CLEARED = {"maxTlp": "AMBER", "caveats": ["PII"]}  # a stakeholder's clearance


def held_bolo(headline: str) -> dict[str, Any]:
    """A BOLO an analyst composes that approval holds (it carries PII)."""
    document = fixture_document("bolo_minimal.json") | {"handling": PII_AMBER}
    del document["identifier"], document["sent"]
    return document | {"headline": headline}


async def signed_in(
    staff: Staff, username: str, roles: list[str], clearance: dict[str, Any] = CLEARED
) -> Signed:
    """An account (allowed to send as the test senders) signed in through the API."""
    _id, password = await staff.make_account(
        username, roles, senders=list(TEST_SENDERS), clearance=clearance
    )
    session, _secret, _codes = await staff.enrolled(username, password)
    return session


async def send_held(staff: Staff, session: Signed, stakeholder_id: str, headline: str) -> str:
    """Send a held BOLO to one stakeholder as the session's account; its alert id once its
    row is held."""
    body = {"alert": held_bolo(headline), "audience": {"stakeholders": [stakeholder_id]}}
    sent = await staff.call("POST", "/api/v1/sends", body=body, session=session)
    assert sent.status == 202, sent.body
    alert_id = str(sent.body["alertId"])

    async def held() -> bool:
        return [r["state"] for r in await rows_of(staff.service, alert_id)] == ["held"]

    await wait_until(held, what="the send's row held for approval")
    return alert_id


async def post_form(
    staff: Staff,
    path: str,
    fields: dict[str, str],
    session: Signed | None = None,
    *,
    with_token: bool = True,
) -> Answer:
    """A console form post from our own origin, with the session's form token or without."""
    headers = {"Origin": staff.public_url}
    if session is not None:
        headers["Cookie"] = f"dissemination_session={session.cookie}"
    data = dict(fields)
    if with_token and session is not None:
        data["csrf_token"] = form_token(session.cookie)
    async with staff.http.post(
        staff.base + path, data=data, headers=headers, allow_redirects=False
    ) as response:
        return Answer(response.status, await response.text(), dict(response.headers), None)


async def get_page(staff: Staff, path: str, session: Signed) -> Answer:
    headers = {"Cookie": f"dissemination_session={session.cookie}"}
    async with staff.http.get(staff.base + path, headers=headers, allow_redirects=False) as got:
        return Answer(got.status, await got.text(), dict(got.headers), None)


async def signed_in_page(
    console: Console,
    username: str,
    roles: list[str],
    max_tlp: str = "AMBER",
    *,
    phone: bool = False,
) -> Page:
    """A browser page signed in to the console as a new account cleared to `max_tlp`."""
    _id, password = await console.staff.make_account(
        username, roles, clearance=CLEARED | {"maxTlp": max_tlp}
    )
    _session, secret, _codes = await console.staff.enrolled(username, password)
    page = await console.page(phone=phone)
    await console.sign_in(page, username, password, secret)
    return page
