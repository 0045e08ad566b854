"""The admin API of distribution lists: create, rename, list, show (direct members and the
stakeholders reached through nesting), add and remove members, delete. Every change is
audited by `dissemination.directory.lists` in its own transaction, then applied to the
in-process matcher (other instances follow the audit log)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from core.clock import utc_now
from core.errors import ErrorDetail, RejectedInput
from dissemination.api.directory import Admin, actor_of, admin_of, json_object
from dissemination.api.errors import ApiError
from dissemination.api.requests import json_body, limit_param, text_param, validated
from dissemination.api.tokens import READERS, Role
from dissemination.directory.lists import DistributionLists, Member, NotAMember
from dissemination.directory.sync import apply_list_change
from dissemination.store.audit import Actor
from subscriptions.model import MemberKind


def lists_of(admin: Admin) -> DistributionLists:
    return DistributionLists(admin.directory.database)


def _list_id(request: web.Request, name: str = "id") -> str:
    value = request.match_info[name]
    if "\x00" in value:
        raise ApiError(404, "not_found", f"no distribution list {value!r}")
    return value


def _missing(list_id: str) -> ApiError:
    return ApiError(404, "not_found", f"no distribution list {list_id!r}")


def _member(document: dict[str, Any]) -> Member:
    return Member(MemberKind(document["kind"]), document["id"])


async def make_list(admin: Admin, document: Any, actor: Actor) -> dict[str, Any]:
    """Validate, store (audited) and apply to the matcher a new list: its record."""
    body = validated("distribution_list", document)
    members = [_member(m) for m in body.get("members", ())]
    try:
        record = await lists_of(admin).create(body["name"], members, actor, utc_now())
    except RejectedInput as rejected:
        raise ApiError.from_rejection(rejected) from None
    apply_list_change(admin.matcher, record, record["id"])
    return record


async def create_list(request: web.Request) -> web.Response:
    actor = await actor_of(request, Role.ADMIN)
    record = await make_list(admin_of(request), await json_body(request), actor)
    return web.json_response(record, status=201)


async def list_lists(request: web.Request) -> web.Response:
    await actor_of(request, *READERS)
    unknown = set(request.query) - {"limit", "after"}
    if unknown:
        raise ApiError(400, "invalid_parameter", f"unknown filter {sorted(unknown)[0]!r}")
    after = text_param("after", request.query.get("after", ""))
    page = await lists_of(admin_of(request)).page(after, limit_param(request))
    return web.json_response({"items": page.items, "next": page.next_cursor})


async def show_list(request: web.Request) -> web.Response:
    """The list with its direct members and `stakeholders`, every stakeholder it reaches."""
    await actor_of(request, *READERS)
    list_id = _list_id(request)
    lists = lists_of(admin_of(request))
    record = await lists.get(list_id)
    if record is None:
        raise _missing(list_id)
    return web.json_response(record | {"stakeholders": await lists.resolved(list_id)})


async def rename_list(request: web.Request) -> web.Response:
    actor = await actor_of(request, Role.ADMIN)
    admin = admin_of(request)
    list_id = _list_id(request)
    changes = json_object(await json_body(request))
    if "members" in changes:
        raise ApiError(
            422,
            "immutable_field",
            "members change through /api/v1/lists/{id}/members",
            [ErrorDetail("$.members", "immutable")],
        )
    lists = lists_of(admin)
    current = await lists.get(list_id)
    if current is None:
        raise _missing(list_id)
    body = validated("distribution_list", {"name": current["name"]} | changes)
    try:
        record = await lists.rename(list_id, body["name"], actor, utc_now())
    except RejectedInput as rejected:
        raise ApiError.from_rejection(rejected) from None
    if record is None:
        raise _missing(list_id)
    apply_list_change(admin.matcher, record, list_id)
    return web.json_response(record)


async def delete_list(request: web.Request) -> web.Response:
    actor = await actor_of(request, Role.ADMIN)
    admin = admin_of(request)
    list_id = _list_id(request)
    try:
        deleted = await lists_of(admin).delete(list_id, actor, utc_now())
    except RejectedInput as rejected:
        raise ApiError(
            409,
            rejected.reason,
            "the list is still in use: remove it from these first",
            rejected.errors,
        ) from None
    if not deleted:
        raise _missing(list_id)
    apply_list_change(admin.matcher, None, list_id)
    return web.Response(status=204)


async def add_list_member(
    admin: Admin, list_id: str, document: Any, actor: Actor
) -> tuple[dict[str, Any], bool]:
    """Add a member (validated, audited, applied to the matcher): the list's record and
    whether the member is new; ApiError 404 for no such list, 422 for a bad member."""
    member = _member(validated("list_member", document))
    try:
        outcome = await lists_of(admin).add_member(list_id, member, actor, utc_now())
    except RejectedInput as rejected:
        raise ApiError.from_rejection(rejected) from None
    if outcome is None:
        raise _missing(list_id)
    record, added = outcome
    if added:
        apply_list_change(admin.matcher, record, list_id)
    return record, added


async def add_member(request: web.Request) -> web.Response:
    """201 with the list when the member was added, 200 when it was one already."""
    actor = await actor_of(request, Role.ADMIN)
    list_id = _list_id(request)
    document = await json_body(request)
    record, added = await add_list_member(admin_of(request), list_id, document, actor)
    return web.json_response(record, status=201 if added else 200)


async def remove_list_member(
    admin: Admin, list_id: str, kind: str, member_id: str, actor: Actor
) -> dict[str, Any]:
    """Remove a direct member (audited, applied to the matcher): the list's record; ApiError
    404 when the list, the kind or the member is unknown."""
    if kind not in {k.value for k in MemberKind}:
        raise ApiError(404, "not_found", f"no member kind {kind!r}: stakeholder or list")
    try:
        record = await lists_of(admin).remove_member(
            list_id, Member(MemberKind(kind), member_id), actor, utc_now()
        )
    except NotAMember as missing:
        raise ApiError(404, "not_found", str(missing)) from None
    if record is None:
        raise _missing(list_id)
    apply_list_change(admin.matcher, record, list_id)
    return record


async def remove_member(request: web.Request) -> web.Response:
    actor = await actor_of(request, Role.ADMIN)
    list_id = _list_id(request)
    kind, member_id = request.match_info["kind"], _list_id(request, "memberId")
    await remove_list_member(admin_of(request), list_id, kind, member_id, actor)
    return web.Response(status=204)


def add_list_routes(app: web.Application) -> None:
    """The routes above; `add_admin_routes` must have run (they share its `Admin`)."""
    app.router.add_get("/api/v1/lists", list_lists)
    app.router.add_post("/api/v1/lists", create_list)
    app.router.add_get("/api/v1/lists/{id}", show_list)
    app.router.add_patch("/api/v1/lists/{id}", rename_list)
    app.router.add_delete("/api/v1/lists/{id}", delete_list)
    app.router.add_post("/api/v1/lists/{id}/members", add_member)
    app.router.add_delete("/api/v1/lists/{id}/members/{kind}/{memberId}", remove_member)
