"""Accounts and tokens for administrators: list accounts, create one (its temporary
password shown once), change roles, clearance, senders and whether it is active, reset its
password or second factor, end its sessions, list and revoke its tokens, and make a
personal token of one's own (its secret shown once). Every change goes through the
accounts API's own methods (`AccountEndpoints`), so it is checked and audited the same."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from aiohttp import web
from multidict import MultiDictProxy

from dissemination.accounts.roles import AccountRole
from dissemination.api.accounts import ACCOUNTS, AccountEndpoints
from dissemination.api.app import RUNTIME
from dissemination.api.errors import ApiError
from dissemination.api.tokens import Role, TokenStore
from dissemination.console.auth import Viewer, changer, viewer
from dissemination.console.composeform import placed_errors
from dissemination.console.pages import TLP_LEVELS, render

ACCOUNTS_PATH = "/console/accounts"
MAX_LISTED = 500
ACCOUNT_FIELDS = (
    "username",
    "displayName",
    "organization",
    "roles",
    "clearance.maxTlp",
    "clearance.caveats",
    "clearance.lawEnforcement",
    "senders",
    "active",
)
TOKEN_FIELDS = ("name", "role", "expiresInDays")


async def _administrator(request: web.Request) -> Viewer:
    found = await viewer(request, Role.ADMIN)
    if not found.principal.is_administrator:
        raise ApiError(403, "forbidden", "only administrators manage accounts")
    return found


async def _changing(request: web.Request) -> tuple[Viewer, MultiDictProxy[str]]:
    found, form = await changer(request, Role.ADMIN)
    if not found.principal.is_administrator:
        raise ApiError(403, "forbidden", "only administrators manage accounts")
    return found, form


def _endpoints(request: web.Request) -> AccountEndpoints:
    return request.app[ACCOUNTS]


def _account_document(form: MultiDictProxy[str], *, creating: bool) -> dict[str, Any]:
    """The `account` (or `account_update`) document a form describes; empty text is left
    out so the schema names what is missing."""
    document: dict[str, Any] = {}
    for name in (
        ("username", "displayName", "organization")
        if creating
        else (
            "displayName",
            "organization",
        )
    ):
        if form.get(name, "").strip():
            document[name] = form[name].strip()
    document["roles"] = form.getall("roles", [])
    clearance: dict[str, Any] = {}
    if form.get("clearance.maxTlp"):
        clearance["maxTlp"] = form["clearance.maxTlp"]
    caveats = [c.strip() for c in form.get("clearance.caveats", "").split(",") if c.strip()]
    if caveats:
        clearance["caveats"] = caveats
    if form.get("clearance.lawEnforcement"):
        clearance["lawEnforcement"] = True
    document["clearance"] = clearance
    senders = [s.strip() for s in form.get("senders", "").splitlines() if s.strip()]
    if senders or not creating:
        document["senders"] = senders
    if not creating:
        document["active"] = bool(form.get("active"))
    return document


def _errors(error: ApiError, names: tuple[str, ...]) -> list[tuple[str, str]]:
    placed = placed_errors(error.details, names, prefix="$")
    shown = [(name or "", message) for name, message in placed]
    return shown or [("", error.message)]


def _form_values(
    form: Mapping[str, str] | None, record: Mapping[str, Any] | None
) -> dict[str, Any]:
    """What the account form shows: as typed after a refusal, else the account as stored."""
    if form is not None:
        values: dict[str, Any] = dict(form)
        values["roles"] = form.getall("roles", []) if isinstance(form, MultiDictProxy) else []
        return values
    if record is None:
        return {"roles": ["analyst"], "clearance.maxTlp": "GREEN"}
    clearance = record["clearance"]
    return {
        "displayName": record["displayName"] or "",
        "organization": record["organization"],
        "roles": record["roles"],
        "clearance.maxTlp": clearance.get("maxTlp", ""),
        "clearance.caveats": ", ".join(clearance.get("caveats", [])),
        "clearance.lawEnforcement": clearance.get("lawEnforcement", False),
        "senders": "\n".join(record["senders"]),
        "active": record["active"],
    }


async def _list_page(
    request: web.Request,
    found: Viewer,
    *,
    form: MultiDictProxy[str] | None = None,
    errors: Sequence[tuple[str, str]] = (),
    created: dict[str, Any] | None = None,
    status: int = 200,
) -> web.Response:
    items, _cursor = await _endpoints(request).store.page("", MAX_LISTED)
    return render(
        request,
        "accounts.html.j2",
        found,
        status=status,
        title="Accounts",
        accounts=items,
        values=_form_values(form, None),
        errors=errors,
        field_errors=dict(errors),
        created=created,
        roles=[r.value for r in AccountRole],
        tlp_levels=TLP_LEVELS,
    )


async def accounts_page(request: web.Request) -> web.Response:
    """GET /console/accounts: every account, and the form to create one."""
    return await _list_page(request, await _administrator(request))


async def create_account(request: web.Request) -> web.Response:
    """POST /console/accounts: the new account's temporary password, shown this once."""
    found, form = await _changing(request)
    try:
        record, password = await _endpoints(request).create_account(
            found.principal.actor, _account_document(form, creating=True)
        )
    except ApiError as error:
        errors = _errors(error, ACCOUNT_FIELDS)
        return await _list_page(request, found, form=form, errors=errors, status=error.status)
    return await _list_page(request, found, created=record | {"temporaryPassword": password})


async def _account_page(
    request: web.Request,
    found: Viewer,
    account_id: str,
    *,
    form: MultiDictProxy[str] | None = None,
    errors: Sequence[tuple[str, str]] = (),
    notice: str | None = None,
    secret: tuple[str, str] | None = None,
    status: int = 200,
) -> web.Response:
    endpoints = _endpoints(request)
    record = await endpoints.existing(account_id)
    tokens: TokenStore = request.app[RUNTIME].tokens
    own = found.principal.account is not None and found.principal.account.id == account_id
    return render(
        request,
        "account.html.j2",
        found,
        status=status,
        title=f"Account {record['username']}",
        account=record,
        values=_form_values(form, record),
        errors=errors,
        field_errors=dict(errors),
        notice=notice,
        secret=secret,
        tokens=[t.as_dict() for t in await tokens.owned(account_id)],
        own=own,
        roles=[r.value for r in AccountRole],
        token_roles=sorted(r.value for r in found.principal.grants),
        tlp_levels=TLP_LEVELS,
    )


def _account_id(request: web.Request) -> str:
    value = request.match_info["id"]
    if "\x00" in value or len(value) > 36:
        raise ApiError(404, "not_found", "no such account")
    return value


async def account_page(request: web.Request) -> web.Response:
    """GET /console/accounts/{id}: the account, its tokens, and what an administrator may
    do to it."""
    return await _account_page(request, await _administrator(request), _account_id(request))


async def change_account(request: web.Request) -> web.Response:
    """POST /console/accounts/{id}/{action}: update, password, totp, sessions, token, or
    revoke (a token, by `tokenId`)."""
    found, form = await _changing(request)
    account_id = _account_id(request)
    action = request.match_info["action"]
    endpoints = _endpoints(request)
    actor = found.principal.actor
    tokens: TokenStore = request.app[RUNTIME].tokens
    try:
        if action == "update":
            await endpoints.update_account(
                actor, account_id, _account_document(form, creating=False)
            )
            notice = "The account is changed."
        elif action == "password":
            password = await endpoints.reset_password_of(actor, account_id)
            return await _account_page(
                request, found, account_id, secret=("Temporary password", password)
            )
        elif action == "totp":
            await endpoints.reset_totp_of(actor, account_id)
            notice = "The second factor is reset: the account enrols a new one at its next sign-in."
        elif action == "sessions":
            count = await endpoints.end_sessions_of(actor, account_id)
            notice = f"{count} session{'' if count == 1 else 's'} ended."
        elif action == "revoke":
            info = await endpoints.revoke_token(tokens, form.get("tokenId", ""), account_id, actor)
            notice = f"Token {info.name} is revoked."
        elif action == "token":
            return await _new_token(request, found, account_id, form)
        else:
            raise ApiError(404, "not_found", "no such action")
    except ApiError as error:
        if error.status == 404 and action not in ("revoke",):
            raise
        names = ACCOUNT_FIELDS if action == "update" else TOKEN_FIELDS
        return await _account_page(
            request,
            found,
            account_id,
            form=form if action == "update" else None,
            errors=_errors(error, names),
            status=error.status,
        )
    return await _account_page(request, found, account_id, notice=notice)


async def _new_token(
    request: web.Request, found: Viewer, account_id: str, form: MultiDictProxy[str]
) -> web.Response:
    """A personal token of the viewer's own account; its secret shown this once."""
    own = found.principal.account
    if own is None or own.id != account_id:
        raise ApiError(403, "forbidden", "personal tokens are made by their owner")
    document: dict[str, Any] = {"name": form.get("name", "").strip(), "role": form.get("role")}
    days = form.get("expiresInDays", "").strip()
    if days:
        document["expiresInDays"] = int(days) if days.isdigit() and len(days) < 9 else days
    info, secret = await _endpoints(request).personal_token(
        request.app[RUNTIME].tokens, found.principal, document
    )
    shown = (f"Secret of token {info.name}", secret)
    return await _account_page(request, found, account_id, secret=shown)


def add_account_pages(app: web.Application) -> None:
    app.router.add_get(ACCOUNTS_PATH, accounts_page, allow_head=False)
    app.router.add_post(ACCOUNTS_PATH, create_account)
    app.router.add_get(ACCOUNTS_PATH + "/{id}", account_page, allow_head=False)
    app.router.add_post(ACCOUNTS_PATH + "/{id}/{action}", change_account)
