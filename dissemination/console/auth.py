"""Who is looking at a console page: the signed-in staff account behind the session cookie,
or a redirect to the sign-in page. Changes (POSTs) must come from our own origin and carry
the page's form token, an HMAC of the session cookie, so another site can neither forge nor
read it (the signed double-submit pattern; the cookie itself is HttpOnly and SameSite=Strict).
A form that cannot be read is a 400 page, never a server error."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import quote

from aiohttp import web
from multidict import MultiDict, MultiDictProxy

from core.errors import StoreUnavailable
from dissemination.accounts.sessions import LiveSession
from dissemination.api.app import SESSION_COOKIE, STAFF, StaffAuth, check_origin
from dissemination.api.errors import ApiError
from dissemination.api.principal import Principal, session_principal
from dissemination.api.requests import FORM_ERRORS, storable
from dissemination.api.tokens import Role

FORM_TOKEN_FIELD = "csrf_token"  # noqa: S105 (a field name, not a secret)
FORM_TOKEN_HEADER = "X-CSRF-Token"  # noqa: S105
SIGN_IN_PATH = "/console/sign-in"
ENROL_PATH = "/console/enrol"


def form_token(cookie: str) -> str:
    """The form token of the session whose cookie is `cookie`."""
    return hmac.new(cookie.encode(), b"console-form", hashlib.sha256).hexdigest()


@dataclass(frozen=True, slots=True)
class Viewer:
    """A signed-in staff member looking at the console."""

    principal: Principal
    session: LiveSession
    form_token: str

    @property
    def name(self) -> str:
        account = self.principal.account
        return account.display_name if account is not None else self.principal.name

    def may(self, *roles: Role) -> bool:
        return bool(self.principal.grants & set(roles))


def _to_sign_in(request: web.Request) -> web.HTTPException:
    target = request.rel_url.path_qs if request.method == "GET" else "/console/"
    return web.HTTPSeeOther(f"{SIGN_IN_PATH}?next={quote(target, safe='')}")


async def find_viewer(request: web.Request, *, touch: bool = True) -> Viewer | None:
    """The viewer behind the request's session cookie, or None (no, expired or revoked).
    Not `touch`: the session's idle time goes on (a live page refreshing itself)."""
    staff: StaffAuth = request.app[STAFF]
    cookie = request.cookies.get(SESSION_COOKIE)
    if not cookie:
        return None
    try:
        found = await staff.signin.session_of(cookie, touch=touch)
    except StoreUnavailable:
        raise ApiError(503, "store_unavailable", "cannot verify the session right now") from None
    if found is None:
        return None
    session, account = found
    principal = session_principal(account, session.id, session.second_factor)
    return Viewer(principal, session, form_token(cookie))


def lacks_second_factor(request: web.Request, session: LiveSession) -> bool:
    """Whether `session` has not proven the second factor the service requires: such a
    session may only enrol one (every other page sends it to the enrolment page)."""
    staff: StaffAuth = request.app[STAFF]
    return not session.second_factor and staff.signin.settings.require_totp


async def viewer(
    request: web.Request, *roles: Role, enrolling: bool = False, touch: bool = True
) -> Viewer:
    """The signed-in viewer (redirected to sign in otherwise, or to enrol a second factor
    first when one is required), who must hold one of `roles` when any are named: 403.
    `touch` as `find_viewer`."""
    found = await find_viewer(request, touch=touch)
    if found is None:
        raise _to_sign_in(request)
    if not enrolling and lacks_second_factor(request, found.session):
        raise web.HTTPSeeOther(ENROL_PATH)
    if roles and not found.may(*roles):
        raise ApiError(403, "forbidden", "your role may not use this page")
    return found


async def changer(
    request: web.Request, *roles: Role, enrolling: bool = False
) -> tuple[Viewer, MultiDictProxy[str]]:
    """For a POST: the viewer and the submitted form, after checking that it comes from our
    origin and carries the session's form token (403 otherwise)."""
    check_origin(request, request.app[STAFF])
    form = await read_form(request)
    found = await viewer(request, *roles, enrolling=enrolling)
    offered = _offered_token(form, request.headers)
    if not offered or not hmac.compare_digest(offered, found.form_token):
        raise ApiError(403, "csrf_token", "the form is stale or foreign; reload the page")
    return found, form


async def read_form(request: web.Request) -> MultiDictProxy[str]:
    """The posted form's text fields (every value of a repeated name; a file is left out), or
    ApiError 400 invalid_form (a page saying so) when it cannot be parsed (the API's
    FORM_ERRORS: a multipart body without a boundary, an unknown charset, ...) or a field
    holds NUL or text that is not Unicode."""
    try:
        form = await request.post()
    except FORM_ERRORS as error:
        reason = type(error).__name__
        message = f"The form cannot be read ({reason}): reload the page and try again"
        raise ApiError(400, "invalid_form", message) from None
    fields = _text_fields(form)
    for name, value in fields.items():
        if not storable(name) or not storable(value):
            raise ApiError(400, "invalid_form", "A form field holds NUL or is not valid text")
    return fields


def _offered_token(form: Mapping[str, object], headers: Mapping[str, str]) -> str:
    value = form.get(FORM_TOKEN_FIELD)
    if isinstance(value, str):
        return value
    return headers.get(FORM_TOKEN_HEADER, "")


def _text_fields(form: Mapping[str, object]) -> MultiDictProxy[str]:
    return MultiDictProxy(MultiDict((k, v) for k, v in form.items() if isinstance(v, str)))
