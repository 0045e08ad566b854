"""A console form the service cannot read (a multipart body without a boundary, an unknown
charset) or that holds NUL is a 400 page saying so, signed in or not,
never a server error with a traceback in the log; a form that can be read still works."""

from __future__ import annotations

from tests.consolerig import post_form, signed_in
from tests.logcapture import LogLines
from tests.staffrig import Signed, Staff, sqlite_only_fixture, staff_fixture  # noqa: F401

UNREADABLE = {
    "multipart without boundary": ("multipart/form-data", b"x"),
    "unknown charset": ("application/x-www-form-urlencoded; charset=no-such-charset", b"a=b"),
    "NUL": ("application/x-www-form-urlencoded", b"username=a%00b&password=x"),
}
PATHS = (
    "/console/sign-in",
    "/console/session/keep-alive",
    "/console/compose",
    "/console/enrol",
    "/console/sign-out",
    "/console/accounts",
    "/console/directory/stakeholders",
)


async def _post(staff: Staff, path: str, ctype: str, body: bytes, session: Signed | None) -> str:
    """The status and page of a raw form post from our own origin, as one line."""
    headers = {"Origin": staff.public_url, "Content-Type": ctype}
    if session is not None:
        headers["Cookie"] = f"dissemination_session={session.cookie}"
    async with staff.http.post(
        staff.base + path, data=body, headers=headers, allow_redirects=False
    ) as answer:
        text = await answer.text()
        readable = "The form cannot be read" in text or "holds NUL" in text
        return f"{answer.status} {answer.content_type} {'says why' if readable else text[:200]}"


async def test_an_unreadable_form_is_a_400_page_signed_in_or_not(
    staff: Staff, logged: LogLines
) -> None:
    session = await signed_in(staff, "ana", ["administrator"])
    seen = {
        (path, name, who is not None): await _post(staff, path, ctype, body, who)
        for path in PATHS
        for name, (ctype, body) in UNREADABLE.items()
        for who in (None, session)
    }
    wrong = {key: got for key, got in seen.items() if got != "400 text/html says why"}
    assert not wrong
    assert logged.named("unhandled_error") == []
    # the same session signs out with a form that can be read
    done = await post_form(staff, "/console/sign-out", {}, session)
    assert (done.status, done.headers["Location"]) == (303, "/console/sign-in?signed_out=1")
