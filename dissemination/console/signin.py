"""Console sign-in: the password and second-factor form, enrolment of a TOTP second factor
(QR code, the secret as text, recovery codes shown once, a first code to confirm), signing
out, and keeping an idle session alive when its owner asks to before it times out."""

from __future__ import annotations

from urllib.parse import parse_qs, urlparse

from aiohttp import web

from dissemination.accounts.enrolment import TotpEnrolment
from dissemination.accounts.errors import AccountRefused
from dissemination.accounts.signin import Credentials
from dissemination.api.app import SESSION_COOKIE, STAFF, StaffAuth, check_origin
from dissemination.api.session import set_session_cookie
from dissemination.console.auth import (
    ENROL_PATH,
    SIGN_IN_PATH,
    Viewer,
    changer,
    find_viewer,
    read_form,
    viewer,
)
from dissemination.console.pages import render

HOME = "/console/"


def _next_path(value: str | None) -> str:
    """Where to go after signing in: only a console path of our own, never another site."""
    if value and value.startswith("/console/") and not value.startswith("//"):
        return value
    return HOME


async def sign_in_page(request: web.Request) -> web.Response:
    if await find_viewer(request) is not None:
        raise web.HTTPSeeOther(HOME)
    notice = None
    if "signed_out" in request.query:
        notice = "You have signed out."
    elif "expired" in request.query:
        notice = "Your session ended after a time without activity. Sign in again to go on."
    return _sign_in_form(request, next_path=_next_path(request.query.get("next")), notice=notice)


def _sign_in_form(
    request: web.Request,
    *,
    next_path: str,
    username: str = "",
    error: AccountRefused | None = None,
    notice: str | None = None,
) -> web.Response:
    return render(
        request,
        "signin.html.j2",
        None,
        status=error.status if error is not None else 200,
        title="Sign in",
        next_path=next_path,
        username=username,
        error=error,
        notice=notice,
        wants_code=error is not None and error.code in {"second_factor_required", "invalid_code"},
    )


async def sign_in(request: web.Request) -> web.Response:
    staff: StaffAuth = request.app[STAFF]
    check_origin(request, staff)
    form = await read_form(request)
    username = str(form.get("username", ""))
    next_path = _next_path(str(form.get("next", "")))
    offered = Credentials(
        username,
        str(form.get("password", "")),
        str(form.get("code", "")).strip() or None,
        str(form.get("recovery_code", "")).strip() or None,
    )
    try:
        signed = await staff.signin.sign_in(offered, request.remote or "unknown")
    except AccountRefused as error:
        return _sign_in_form(request, next_path=next_path, username=username, error=error)
    needs_enrolment = not signed.account.totp_enabled and staff.signin.settings.require_totp
    response = web.HTTPSeeOther(ENROL_PATH if needs_enrolment else next_path)
    set_session_cookie(response, staff, signed.session.secret)
    raise response


def _enrolment(request: web.Request) -> TotpEnrolment:
    signin = request.app[STAFF].signin
    return TotpEnrolment(signin.database, signin.settings.totp_issuer, signin.clock)


def _enrolment_refused(request: web.Request, found: Viewer, error: AccountRefused) -> web.Response:
    """The enrolment page again, saying why its step was refused."""
    return render(
        request,
        "enrol.html.j2",
        found,
        status=error.status,
        title="Set up your second factor",
        made=None,
        error=error,
    )


async def enrol_page(request: web.Request) -> web.Response:
    found = await viewer(request, enrolling=True)
    account = found.principal.account
    if account is not None and account.totp_enabled and found.session.second_factor:
        raise web.HTTPSeeOther(HOME)
    return render(request, "enrol.html.j2", found, title="Set up your second factor", made=None)


async def begin_enrolment(request: web.Request) -> web.Response:
    found, _form = await changer(request, enrolling=True)
    account = found.principal.account
    assert account is not None  # a session always has its account
    try:
        made = await _enrolment(request).begin(account)
    except AccountRefused as error:
        return _enrolment_refused(request, found, error)
    secret = parse_qs(urlparse(made.uri).query)["secret"][0]
    return render(
        request,
        "enrol.html.j2",
        found,
        title="Set up your second factor",
        made=made,
        secret=secret,
    )


async def confirm_enrolment(request: web.Request) -> web.Response:
    found, form = await changer(request, enrolling=True)
    account = found.principal.account
    assert account is not None
    try:
        await _enrolment(request).confirm(account, found.session.id, form.get("code", "").strip())
    except AccountRefused as error:
        return _enrolment_refused(request, found, error)
    raise web.HTTPSeeOther(HOME + "?enrolled=1")


async def sign_out(request: web.Request) -> web.Response:
    found, _form = await changer(request, enrolling=True)
    account = found.principal.account
    assert account is not None
    await request.app[STAFF].signin.sign_out(found.session.id, account)
    response = web.HTTPSeeOther(SIGN_IN_PATH + "?signed_out=1")
    response.del_cookie(SESSION_COOKIE, path="/")
    raise response


async def keep_alive(request: web.Request) -> web.Response:
    """POST: the session's idle time starts again (finding it is what refreshes it)."""
    await changer(request, enrolling=True)
    return web.Response(status=204, headers={"Cache-Control": "no-store"})


def add_sign_in_routes(app: web.Application) -> None:
    app.router.add_get(SIGN_IN_PATH, sign_in_page, allow_head=False)
    app.router.add_post(SIGN_IN_PATH, sign_in)
    app.router.add_get(ENROL_PATH, enrol_page, allow_head=False)
    app.router.add_post(ENROL_PATH, begin_enrolment)
    app.router.add_post(ENROL_PATH + "/confirm", confirm_enrolment)
    app.router.add_post("/console/sign-out", sign_out)
    app.router.add_post("/console/session/keep-alive", keep_alive)
