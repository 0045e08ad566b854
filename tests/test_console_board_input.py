"""The board and an alert's page refuse bad input with a page that says why, without a
browser: an unknown alert (404 page), bad filters (400 page naming each), a change posted
without the form token (403 page), and a board stream without a session (it says the session
has ended and stops)."""

from __future__ import annotations

import re

import aiohttp

from dissemination.api.app import SESSION_COOKIE
from dissemination.console.board import board_filter
from tests.staffrig import (  # noqa: F401 - fixtures
    Signed,
    Staff,
    postgresql_only_fixture,
    staff_fixture,
)


async def _get(staff: Staff, path: str, session: Signed | None) -> tuple[int, str, str]:
    headers = {"Cookie": f"{SESSION_COOKIE}={session.cookie}"} if session else {}
    async with staff.http.get(staff.base + path, headers=headers, allow_redirects=False) as answer:
        return answer.status, answer.content_type, await answer.text()


async def test_an_unknown_alert_is_a_404_page(staff: Staff) -> None:
    session = await staff.admin_session()
    for path in ("/console/alerts/no-such-alert", "/console/board/rows/no-such-alert"):
        status, kind, text = await _get(staff, path, session)
        assert (status, kind) == (404, "text/html"), text
        assert "no-such-alert" in text
        assert "<h1>404" in text


async def test_bad_filters_are_named_on_a_400_page_and_the_form_is_kept(staff: Staff) -> None:
    session = await staff.admin_session()
    status, _kind, text = await _get(staff, "/console/?kind=memo&within=3y&colour=red", session)
    assert status == 400
    assert "There is a problem" in text
    assert "There is no kind &#39;memo&#39;" in text
    assert "&#39;3y&#39; is not a time range" in text
    assert "The board has no filter &#39;colour&#39;" in text
    assert re.search(r'<select id="kind" name="kind" aria-invalid="true"', text)
    status, _kind, text = await _get(staff, "/console/?kind=bolo&state=planned&within=24h", session)
    assert status == 200
    assert "There is a problem" not in text


def test_a_filter_naming_nothing_wrong_narrows_by_kind_state_and_time() -> None:
    chosen = board_filter({"kind": "cap", "state": "planned", "within": "1h"})
    assert not chosen.errors
    assert chosen.query == "?kind=cap&state=planned&within=1h"
    wrong = board_filter({"state": "lost"})
    assert wrong.errors == [("state", "There is no state 'lost': choose one of the list")]
    assert wrong.values["state"] == ""


async def test_a_change_without_the_form_token_is_refused_with_a_403_page(staff: Staff) -> None:
    session = await staff.admin_session()
    headers = {"Cookie": f"{SESSION_COOKIE}={session.cookie}", "Origin": staff.public_url}
    for action in ("acknowledge", "release", "cancel", "follow-up"):
        async with staff.http.post(
            f"{staff.base}/console/alerts/any/{action}",
            data={"reason": "by phone"},
            headers=headers,
            allow_redirects=False,
        ) as answer:
            text = await answer.text()
            assert answer.status == 403, (action, text)
            assert "the form is stale or foreign" in text


async def test_the_board_stream_without_a_session_says_so_and_ends(staff: Staff) -> None:
    timeout = aiohttp.ClientTimeout(total=10)
    async with staff.http.get(staff.base + "/console/board/stream", timeout=timeout) as answer:
        assert answer.status == 200
        assert answer.content_type == "text/event-stream"
        text = await answer.text()
    assert text.startswith("retry: ")
    assert "event: session-ended" in text
    assert "id: 1" in text


async def test_the_board_stream_ends_when_the_session_does(staff: Staff) -> None:
    session = await staff.admin_session()
    headers = {"Cookie": f"{SESSION_COOKIE}={session.cookie}"}
    timeout = aiohttp.ClientTimeout(total=60)
    async with staff.http.get(
        staff.base + "/console/board/stream", headers=headers, timeout=timeout
    ) as answer:
        assert answer.status == 200
        first = await answer.content.readline()
        assert first == b"retry: 5000\n"
        ended = await staff.call("DELETE", "/api/v1/session", session=session)
        assert ended.status in (200, 204), ended.body
        text = (await answer.content.read()).decode()  # to the end: the stream stops
    assert "event: session-ended" in text
    assert text.rstrip().endswith('data: {"reason": "ended"}')
