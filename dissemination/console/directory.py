"""The directory pages: stakeholders (list, search, one stakeholder with its contacts,
subscriptions and lists), contacts, distribution lists with their members, and
subscriptions; administrators add stakeholders and contacts through forms. Reads and changes
go through the admin API's directory, matcher and `create_entity` (validated, audited,
applied to the matcher as an API call would be)."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from multidict import MultiDictProxy

from dissemination.api.directory import ADMIN, Admin, create_entity, update_entity
from dissemination.api.errors import ApiError
from dissemination.api.tokens import Role
from dissemination.console.auth import Viewer, changer, viewer
from dissemination.console.formerrors import FormErrors, from_refusal
from dissemination.console.pages import TLP_LEVELS, render
from dissemination.directory.lists import DistributionLists
from dissemination.directory.store import CONTACT, STAKEHOLDER, SUBSCRIPTION, EntitySpec

PAGE_SIZE = 100
SEARCH_LIMIT = 100
SECTORS = (
    "law_enforcement",
    "fire_ems",
    "emergency_management",
    "public_health",
    "critical_infrastructure",
    "government",
)
CHANNELS = ("email", "sms", "webhook")
STAKEHOLDER_FIELDS = {
    "name": "name",
    "organization": "organization",
    "sector": "sector",
    "kind": "kind",
    "clearance": "max_tlp",
    "timezone": "timezone",
}
CONTACT_FIELDS = {"channel": "channel", "address": "address", "label": "label"}
SUBNAV = (
    ("/console/directory", "Stakeholders"),
    ("/console/directory/contacts", "Contacts"),
    ("/console/directory/lists", "Distribution lists"),
    ("/console/directory/subscriptions", "Subscriptions"),
)


def admin(request: web.Request) -> Admin:
    return request.app[ADMIN]


def path_id(request: web.Request, what: str, name: str = "id") -> str:
    value = request.match_info[name]
    if "\x00" in value or len(value) > 64:
        raise ApiError(404, "not_found", f"no {what} {value!r}")
    return value


def directory_page(
    request: web.Request, template: str, seen: Viewer, *, title: str, **context: Any
) -> web.Response:
    """A directory page: its sub-navigation and stylesheet come with the template."""
    status = context.pop("status", 200)
    return render(request, template, seen, status=status, title=title, subnav=SUBNAV, **context)


async def stakeholders_page(request: web.Request) -> web.Response:
    seen = await viewer(request)
    query = request.query.get("q", "").strip()[:200]
    after = request.query.get("after", "")[:64] or None
    directory = admin(request).directory
    following = None
    if query:
        found = await directory.search(STAKEHOLDER, ("name", "organization"), query, SEARCH_LIMIT)
    else:
        page = await directory.page(STAKEHOLDER, {}, after, PAGE_SIZE)
        found, following = page.items, page.next_cursor
    return directory_page(
        request,
        "directory.html.j2",
        seen,
        title="Directory",
        stakeholders=found,
        query=query,
        following=following,
    )


def _stakeholder_form(
    request: web.Request,
    seen: Viewer,
    values: MultiDictProxy[str] | dict[str, str],
    errors: FormErrors,
    status: int = 200,
    editing: str | None = None,
) -> web.Response:
    """The form that adds a stakeholder, or edits the one whose id is `editing`."""
    return directory_page(
        request,
        "stakeholder_new.html.j2",
        seen,
        title="Edit stakeholder" if editing else "Add a stakeholder",
        action=(
            f"/console/directory/stakeholders/{editing}"
            if editing
            else "/console/directory/stakeholders"
        ),
        editing=editing,
        values=values,
        errors=errors,
        sectors=SECTORS,
        levels=TLP_LEVELS,
        status=status,
    )


async def new_stakeholder_page(request: web.Request) -> web.Response:
    seen = await viewer(request, Role.ADMIN)
    defaults = {"timezone": "UTC", "max_tlp": "GREEN", "kind": "individual"}
    return _stakeholder_form(request, seen, defaults, FormErrors())


def _caveats(text: str) -> list[str]:
    return [part.strip().upper() for part in text.replace(";", ",").split(",") if part.strip()]


def stakeholder_document(form: MultiDictProxy[str]) -> dict[str, Any]:
    """The stakeholder the form describes, as the API takes it."""
    return {
        "name": form.get("name", "").strip(),
        "organization": form.get("organization", "").strip(),
        "sector": form.get("sector", ""),
        "kind": form.get("kind", "individual"),
        "clearance": {
            "maxTlp": form.get("max_tlp", ""),
            "caveats": _caveats(form.get("caveats", "")),
            "lawEnforcement": form.get("law_enforcement") == "on",
        },
        "timezone": form.get("timezone", "").strip() or "UTC",
    }


async def create_stakeholder(request: web.Request) -> web.Response:
    seen, form = await changer(request, Role.ADMIN)
    try:
        record, _ = await create_entity(
            admin(request), STAKEHOLDER, stakeholder_document(form), seen.principal.actor
        )
    except ApiError as refused:
        errors = from_refusal(refused, STAKEHOLDER_FIELDS)
        return _stakeholder_form(request, seen, form, errors, status=refused.status)
    raise web.HTTPSeeOther(f"/console/directory/stakeholders/{record['id']}?created=1")


def _form_values(record: dict[str, Any]) -> dict[str, str]:
    """A stakeholder's record as its form's fields."""
    clearance = record["clearance"]
    return {
        "name": record["name"],
        "organization": record["organization"],
        "sector": record["sector"],
        "kind": record["kind"],
        "max_tlp": clearance["maxTlp"],
        "caveats": ", ".join(clearance.get("caveats", ())),
        "law_enforcement": "on" if clearance.get("lawEnforcement") else "",
        "timezone": record["timezone"],
        "active": "on" if record["active"] else "",
    }


async def edit_stakeholder_page(request: web.Request) -> web.Response:
    seen = await viewer(request, Role.ADMIN)
    stakeholder_id = path_id(request, "stakeholder")
    record = await admin(request).directory.get(STAKEHOLDER, stakeholder_id)
    if record is None:
        raise ApiError(404, "not_found", f"no stakeholder {stakeholder_id!r}")
    values = _form_values(record)
    return _stakeholder_form(request, seen, values, FormErrors(), editing=stakeholder_id)


async def change_stakeholder(request: web.Request) -> web.Response:
    seen, form = await changer(request, Role.ADMIN)
    stakeholder_id = path_id(request, "stakeholder")
    changes = stakeholder_document(form) | {"active": form.get("active") == "on"}
    try:
        await update_entity(
            admin(request), STAKEHOLDER, stakeholder_id, changes, seen.principal.actor
        )
    except ApiError as refused:
        if refused.status == 404:
            raise
        errors = from_refusal(refused, STAKEHOLDER_FIELDS)
        return _stakeholder_form(
            request, seen, form, errors, status=refused.status, editing=stakeholder_id
        )
    raise web.HTTPSeeOther(f"/console/directory/stakeholders/{stakeholder_id}?changed=1")


async def _stakeholder_view(
    request: web.Request,
    seen: Viewer,
    stakeholder_id: str,
    *,
    contact_values: MultiDictProxy[str] | dict[str, str] | None = None,
    errors: FormErrors | None = None,
    notice: str | None = None,
    secret: str | None = None,
    status: int = 200,
) -> web.Response:
    found = admin(request)
    record = await found.directory.get(STAKEHOLDER, stakeholder_id)
    if record is None:
        raise ApiError(404, "not_found", f"no stakeholder {stakeholder_id!r}")
    contacts = await found.directory.page(CONTACT, {"stakeholderId": stakeholder_id}, None, 500)
    subscriptions = await found.directory.page(
        SUBSCRIPTION, {"stakeholderId": stakeholder_id}, None, 500
    )
    lists = {
        item["id"]: item["name"] for item in await DistributionLists(found.directory.database).all()
    }
    member_of = sorted((lists.get(i, i), i) for i in found.matcher.lists_of(stakeholder_id))
    if notice is None and "created" in request.query:
        notice = "Stakeholder added."
    if notice is None and "changed" in request.query:
        notice = "Stakeholder saved."
    if notice is None and "saved" in request.query:
        notice = "Subscription saved."
    return directory_page(
        request,
        "stakeholder.html.j2",
        seen,
        title=record["name"],
        stakeholder=record,
        contacts=contacts.items,
        subscriptions=subscriptions.items,
        member_of=member_of,
        channels=CHANNELS,
        contact_values=contact_values or {},
        errors=errors or FormErrors(),
        notice=notice,
        secret=secret,
        status=status,
    )


async def stakeholder_page(request: web.Request) -> web.Response:
    seen = await viewer(request)
    return await _stakeholder_view(request, seen, path_id(request, "stakeholder"))


async def create_contact(request: web.Request) -> web.Response:
    seen, form = await changer(request, Role.ADMIN)
    stakeholder_id = path_id(request, "stakeholder")
    if not await admin(request).directory.exists(STAKEHOLDER, stakeholder_id):
        raise ApiError(404, "not_found", f"no stakeholder {stakeholder_id!r}")
    document = {
        "stakeholderId": stakeholder_id,
        "channel": form.get("channel", ""),
        "address": form.get("address", "").strip(),
        "label": form.get("label", "").strip(),
    }
    try:
        _record, secret = await create_entity(
            admin(request), CONTACT, document, seen.principal.actor
        )
    except ApiError as refused:
        errors = from_refusal(refused, CONTACT_FIELDS, whole="address")
        return await _stakeholder_view(
            request, seen, stakeholder_id, contact_values=form, errors=errors,
            status=refused.status,
        )  # fmt: skip
    return await _stakeholder_view(
        request, seen, stakeholder_id, notice="Contact added.", secret=secret
    )


async def _entity_list(
    request: web.Request, kind: EntitySpec, items: str, title: str
) -> web.Response:
    """A page of one kind of directory entity, its items under the template variable `items`
    (also the template's name), from the `after` cursor on."""
    seen = await viewer(request)
    after = request.query.get("after", "")[:64] or None
    page = await admin(request).directory.page(kind, {}, after, PAGE_SIZE)
    return directory_page(
        request,
        f"{items}.html.j2",
        seen,
        title=title,
        following=page.next_cursor,
        **{items: page.items},
    )


async def contacts_page(request: web.Request) -> web.Response:
    return await _entity_list(request, CONTACT, "contacts", "Contacts")


async def subscriptions_page(request: web.Request) -> web.Response:
    return await _entity_list(request, SUBSCRIPTION, "subscriptions", "Subscriptions")


def add_directory_routes(app: web.Application) -> None:
    """The directory's stakeholder, contact and subscription pages and forms (the rule
    editor's are in `ruleeditor`, the lists' in `listpages`)."""
    app.router.add_get("/console/directory", stakeholders_page, allow_head=False)
    app.router.add_get(
        "/console/directory/stakeholders/new", new_stakeholder_page, allow_head=False
    )
    app.router.add_post("/console/directory/stakeholders", create_stakeholder)
    app.router.add_get("/console/directory/stakeholders/{id}", stakeholder_page, allow_head=False)
    app.router.add_post("/console/directory/stakeholders/{id}", change_stakeholder)
    app.router.add_get(
        "/console/directory/stakeholders/{id}/edit", edit_stakeholder_page, allow_head=False
    )
    app.router.add_post("/console/directory/stakeholders/{id}/contacts", create_contact)
    app.router.add_get("/console/directory/contacts", contacts_page, allow_head=False)
    app.router.add_get("/console/directory/subscriptions", subscriptions_page, allow_head=False)
