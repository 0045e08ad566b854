"""The distribution list pages: every list, one list's direct members and the stakeholders
it reaches through nesting; administrators create lists and add and remove members through
forms, through the admin API's `make_list`, `add_list_member` and `remove_list_member`."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from dissemination.api.errors import ApiError
from dissemination.api.lists import add_list_member, make_list, remove_list_member
from dissemination.api.tokens import Role
from dissemination.console.auth import Viewer, changer, viewer
from dissemination.console.directory import admin, directory_page, path_id
from dissemination.console.formerrors import FormErrors, from_refusal
from dissemination.directory.lists import DistributionLists
from dissemination.directory.store import STAKEHOLDER

CHOICES_SHOWN = 500


def _lists(request: web.Request) -> DistributionLists:
    return DistributionLists(admin(request).directory.database)


async def _lists_view(
    request: web.Request,
    seen: Viewer,
    *,
    errors: FormErrors | None = None,
    name: str = "",
    status: int = 200,
) -> web.Response:
    return directory_page(
        request,
        "lists.html.j2",
        seen,
        title="Distribution lists",
        lists=await _lists(request).all(),
        errors=errors or FormErrors(),
        name=name,
        status=status,
    )


async def lists_page(request: web.Request) -> web.Response:
    return await _lists_view(request, await viewer(request))


async def create_list(request: web.Request) -> web.Response:
    seen, form = await changer(request, Role.ADMIN)
    name = form.get("name", "").strip()
    try:
        record = await make_list(admin(request), {"name": name}, seen.principal.actor)
    except ApiError as refused:
        errors = from_refusal(refused, {"name": "name"}, whole="name")
        return await _lists_view(request, seen, errors=errors, name=name, status=refused.status)
    raise web.HTTPSeeOther(f"/console/directory/lists/{record['id']}?created=1")


async def _list_view(
    request: web.Request,
    seen: Viewer,
    list_id: str,
    *,
    errors: FormErrors | None = None,
    notice: str | None = None,
    status: int = 200,
) -> web.Response:
    lists = _lists(request)
    record = await lists.get(list_id)
    if record is None:
        raise ApiError(404, "not_found", f"no distribution list {list_id!r}")
    directory = admin(request).directory
    reached = await lists.resolved(list_id)
    every = await directory.page(STAKEHOLDER, {}, None, CHOICES_SHOWN)
    names: dict[str, str] = {s["id"]: s["name"] for s in every.items}
    for member in [*reached, *(m["id"] for m in record["members"] if m["kind"] == "stakeholder")]:
        if member not in names:
            found = await directory.get(STAKEHOLDER, member)
            names[member] = found["name"] if found else member
    other_lists = {item["id"]: item["name"] for item in await lists.all()}
    notices = {"created": "List created.", "added": "Member added.", "removed": "Member removed."}
    if notice is None:
        notice = next((text for key, text in notices.items() if key in request.query), None)
    choices: list[tuple[str, str]] = [(f"stakeholder:{i}", n) for i, n in sorted(
        names.items(), key=lambda item: item[1].casefold())]  # fmt: skip
    choices += [(f"list:{i}", f"List: {n}") for i, n in other_lists.items() if i != list_id]
    return directory_page(
        request,
        "list.html.j2",
        seen,
        title=record["name"],
        record=record,
        reached=reached,
        names=names,
        list_names=other_lists,
        choices=choices,
        errors=errors or FormErrors(),
        notice=notice,
        status=status,
    )


async def list_page(request: web.Request) -> web.Response:
    seen = await viewer(request)
    return await _list_view(request, seen, path_id(request, "distribution list"))


async def add_member(request: web.Request) -> web.Response:
    seen, form = await changer(request, Role.ADMIN)
    list_id = path_id(request, "distribution list")
    kind, _, member_id = form.get("member", "").partition(":")
    document: dict[str, Any] = {"kind": kind, "id": member_id}
    try:
        await add_list_member(admin(request), list_id, document, seen.principal.actor)
    except ApiError as refused:
        if refused.status == 404:
            raise
        errors = from_refusal(refused, {}, whole="member")
        return await _list_view(request, seen, list_id, errors=errors, status=refused.status)
    raise web.HTTPSeeOther(f"/console/directory/lists/{list_id}?added=1")


async def remove_member(request: web.Request) -> web.Response:
    seen, form = await changer(request, Role.ADMIN)
    list_id = path_id(request, "distribution list")
    kind, _, member_id = form.get("member", "").partition(":")
    await remove_list_member(admin(request), list_id, kind, member_id, seen.principal.actor)
    raise web.HTTPSeeOther(f"/console/directory/lists/{list_id}?removed=1")


def add_list_pages(app: web.Application) -> None:
    """The distribution list pages and their forms."""
    app.router.add_get("/console/directory/lists", lists_page, allow_head=False)
    app.router.add_post("/console/directory/lists", create_list)
    app.router.add_get("/console/directory/lists/{id}", list_page, allow_head=False)
    app.router.add_post("/console/directory/lists/{id}/members", add_member)
    app.router.add_post("/console/directory/lists/{id}/members/remove", remove_member)
