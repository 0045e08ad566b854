"""The board's event stream asks for the second factor as every console page and the API do:
a session that has passed only the password step (a second factor required, none set up yet)
is told at once that its session has ended, and hears of no alert, while one is published."""

from __future__ import annotations

import asyncio

from dissemination.api.app import SESSION_COOKIE
from tests.alerts import fixture_document
from tests.consolerig import signed_in
from tests.people import enrol
from tests.staffrig import Staff, sqlite_only_fixture, staff_fixture  # noqa: F401


async def test_a_password_only_session_gets_no_board_events(staff: Staff) -> None:
    await enrol(staff.service, "Desk", {"email": "desk@example.org"})
    analyst = await signed_in(staff, "pat", ["analyst"], clearance={"maxTlp": "AMBER"})
    _id, password = await staff.make_account("eve", ["viewer"])
    half = staff.signed(await staff.sign_in("eve", password))  # no second factor yet
    cookie = {"Cookie": f"{SESSION_COOKIE}={half.cookie}"}
    async with staff.http.get(staff.base + "/console/board/stream", headers=cookie) as stream:
        assert (stream.status, stream.content_type) == (200, "text/event-stream")
        document = fixture_document("bolo_minimal.json") | {
            "identifier": "NO-SECOND-FACTOR-1",
            "handling": {"tlp": "GREEN"},
            "expires": "2099-01-01T00:00:00Z",
        }
        posted = await staff.call("POST", "/api/v1/alerts", body=document, session=analyst)
        assert posted.status in (201, 202), posted.body
        seen = b""
        async with asyncio.timeout(30):  # to the stream's end, or to the alert's event
            while b"alert-changed" not in seen and (chunk := await stream.content.readany()):
                seen += chunk
    text = seen.decode()
    assert posted.body["id"] not in text
    assert "event: alert-changed" not in text
    assert text.startswith("retry: ")
    ended = 'event: session-ended\ndata: {"reason": "second factor required"}'
    assert text.rstrip().endswith(ended)
