"""Staff sign-in through the API: POST /api/v1/session (password, then a TOTP or recovery
code once enrolled) sets the session cookie and returns the CSRF token; GET shows who is
signed in; DELETE signs out. TOTP enrolment: POST /api/v1/account/totp, then
POST /api/v1/account/totp/confirm with a first code."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from dissemination.accounts.enrolment import TotpEnrolment
from dissemination.accounts.errors import AccountRefused
from dissemination.accounts.model import Account
from dissemination.accounts.signin import Credentials
from dissemination.api.app import (
    SESSION_COOKIE,
    STAFF,
    StaffAuth,
    authenticate,
    check_origin,
)
from dissemination.api.errors import ApiError
from dissemination.api.principal import Principal
from dissemination.api.requests import json_body, validated


def refused(error: AccountRefused) -> ApiError:
    return ApiError(error.status, error.code, error.message)


def account_view(account: Account) -> dict[str, Any]:
    clearance = account.clearance
    return {
        "id": account.id,
        "username": account.username,
        "displayName": account.display_name,
        "organization": account.organization,
        "roles": sorted(account.roles),
        "clearance": {
            "maxTlp": clearance.max_tlp.value,
            "caveats": sorted(clearance.caveats),
            "lawEnforcement": clearance.law_enforcement,
        },
        "totpEnabled": account.totp_enabled,
    }


def _signed_in(principal: Principal) -> tuple[Account, str]:
    if principal.account is None or principal.session_id is None:
        raise ApiError(403, "session_required", "this needs a signed-in session, not a token")
    return principal.account, principal.session_id


async def sign_in(request: web.Request) -> web.Response:
    staff = request.app[STAFF]
    if "Origin" in request.headers:  # a browser's sign-in must come from our own pages
        check_origin(request, staff)
    body = validated("session_request", await json_body(request))
    offered = Credentials(
        body["username"], body["password"], body.get("code"), body.get("recoveryCode")
    )
    try:
        signed = await staff.signin.sign_in(offered, request.remote or "unknown")
    except AccountRefused as error:
        raise refused(error) from None
    session = signed.session
    needs_enrolment = not signed.account.totp_enabled
    response = web.json_response(
        {
            "account": account_view(signed.account),
            "csrfToken": session.csrf_token,
            "expiresAt": session.expires_at.isoformat(),
            "enrolmentRequired": needs_enrolment and staff.signin.settings.require_totp,
        },
        status=201,
    )
    set_session_cookie(response, staff, session.secret)
    return response


def set_session_cookie(response: web.Response, staff: StaffAuth, secret: str) -> None:
    """Set the session cookie: HttpOnly, SameSite=Strict, Secure behind https."""
    response.set_cookie(
        SESSION_COOKIE,
        secret,
        max_age=int(staff.signin.timeouts.absolute.total_seconds()),
        path="/",
        httponly=True,
        samesite="Strict",
        secure=staff.secure,
    )


async def show_session(request: web.Request) -> web.Response:
    principal = await authenticate(request, enrolling=True)
    account, session_id = _signed_in(principal)
    return web.json_response(
        {
            "account": account_view(account),
            "session": session_id,
            "secondFactor": principal.second_factor,
        }
    )


async def sign_out(request: web.Request) -> web.Response:
    principal = await authenticate(request, enrolling=True)
    account, session_id = _signed_in(principal)
    await request.app[STAFF].signin.sign_out(session_id, account)
    response = web.Response(status=204)
    response.del_cookie(SESSION_COOKIE, path="/")
    return response


async def begin_enrolment(request: web.Request) -> web.Response:
    principal = await authenticate(request, enrolling=True)
    account, _session = _signed_in(principal)
    staff = request.app[STAFF]
    enrolment = TotpEnrolment(
        staff.signin.database, staff.signin.settings.totp_issuer, staff.signin.clock
    )
    try:
        made = await enrolment.begin(account)
    except AccountRefused as error:
        raise refused(error) from None
    return web.json_response(
        {"uri": made.uri, "qrSvg": made.qr_svg, "recoveryCodes": made.recovery_codes},
        status=201,
    )


async def confirm_enrolment(request: web.Request) -> web.Response:
    principal = await authenticate(request, enrolling=True)
    account, session_id = _signed_in(principal)
    body = validated("totp_confirmation", await json_body(request))
    staff = request.app[STAFF]
    enrolment = TotpEnrolment(
        staff.signin.database, staff.signin.settings.totp_issuer, staff.signin.clock
    )
    try:
        await enrolment.confirm(account, session_id, body["code"])
    except AccountRefused as error:
        raise refused(error) from None
    return web.json_response({"totpEnabled": True})


def add_session_routes(app: web.Application, staff: StaffAuth) -> None:
    app[STAFF] = staff
    app.router.add_post("/api/v1/session", sign_in)
    app.router.add_get("/api/v1/session", show_session, allow_head=False)
    app.router.add_delete("/api/v1/session", sign_out)
    app.router.add_post("/api/v1/account/totp", begin_enrolment)
    app.router.add_post("/api/v1/account/totp/confirm", confirm_enrolment)
