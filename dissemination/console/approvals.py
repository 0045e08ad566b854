"""The approval queue: alerts held for a second person's decision, with what an approver needs
to decide (marks, kind, headline when cleared, who submitted it, the held deliveries), approve
and reject with a reason; and, for administrators, imminent-danger releases flagged for
review. Decisions go through the API's `ControlEndpoints`, so the two-person rule, the audit
entry and the dispatch of released rows are the API's own; an alert above the viewer's
clearance shows only its marks and counts."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from multidict import MultiDictProxy

from dissemination.accounts.store import AccountStore
from dissemination.api.controls import (
    APPROVAL_CONTENT,
    CONTROLS,
    RELEASE_CONTENT,
    ControlEndpoints,
    decision_reason,
    review_note,
)
from dissemination.api.errors import ApiError
from dissemination.api.needtoknow import NeedToKnow
from dissemination.api.tokens import Role
from dissemination.console.auth import Viewer, changer, viewer
from dissemination.console.pages import render
from dissemination.controls import approval, specialrelease
from dissemination.controls.approval import ApprovalState, principal
from dissemination.ledger.progress import ProgressStore

DECIDERS = (Role.APPROVER, Role.ADMIN)
QUEUE_LIMIT = 100
DECIDED_SHOWN = 20
NOTICES = {
    "approved": "Approved: released {n} held delivery rows to be sent.",
    "approved-late": (
        "Approved: released {n} held delivery rows. The broker did not confirm them yet; "
        "they are sent once it does."
    ),
    "rejected": "Rejected: nothing was sent.",
    "reviewed": "Release marked reviewed.",
}


@dataclass
class Problem:
    """A refused action on the page: the field it concerns and what to say."""

    target: str
    message: str
    values: dict[str, str] = field(default_factory=dict)


def _path_id(request: web.Request) -> str:
    value = request.match_info["id"]
    if "\x00" in value or len(value) > 64:
        raise ApiError(404, "not_found", f"no such item {value!r}")
    return value


async def _submitters(controls: ControlEndpoints, items: list[dict[str, Any]]) -> dict[str, str]:
    """Who submitted each item, as staff read it: the account's name, else the token."""
    names: dict[str, str] = {}
    accounts = AccountStore(controls.database)
    for item in items:
        submitted = item.get("submittedBy")
        if not submitted or submitted in names:
            continue
        kind, _, ident = str(submitted).partition(":")
        if kind == "account":
            account = await accounts.get(ident)
            names[submitted] = (
                f"{account.display_name} ({account.username})" if account else "a removed account"
            )
        else:
            names[submitted] = "an API token" if kind == "token" else "the command line"
    return names


async def _held(controls: ControlEndpoints, seen: Viewer) -> list[dict[str, Any]]:
    """The held alerts with their facts; those above the viewer's clearance as marks and
    counts only (the API listing's redaction decides which)."""
    reader = NeedToKnow.of(seen.principal)
    listed = await approval.listing(controls.database, ApprovalState.HELD, QUEUE_LIMIT)
    body = await controls.redacted(reader, [dict(item) for item in listed], APPROVAL_CONTENT)
    progress = ProgressStore(controls.database)
    names = await _submitters(controls, body["items"])
    mine = principal(seen.principal.actor)
    shown = []
    for item in body["items"]:
        report = await progress.report(str(item["alertId"]))
        if report is None:
            continue
        entry = {
            "item": item,
            "alert": report["alert"],
            "counts": report["counts"],
            "withheld": item.get("withheld"),
            "submitter": names.get(item.get("submittedBy") or "", "unknown"),
            "own": item.get("submittedBy") == mine,
            "audience": None,
        }
        if entry["withheld"] is None:
            rows = [
                row
                for row in await progress.deliveries(str(item["alertId"]))
                if row["state"] == "held"
            ]
            entry["audience"] = {
                "stakeholders": len({row["stakeholderId"] for row in rows}),
                "channels": sorted(Counter(str(row["channel"]) for row in rows).items()),
            }
        shown.append(entry)
    return shown


async def _decided(controls: ControlEndpoints, seen: Viewer) -> list[dict[str, Any]]:
    listed = await approval.listing(controls.database, None, DECIDED_SHOWN * 3)
    decided = [dict(i) for i in listed if i["state"] != ApprovalState.HELD.value]
    body = await controls.redacted(
        NeedToKnow.of(seen.principal), decided[:DECIDED_SHOWN], APPROVAL_CONTENT
    )
    return list(body["items"])


async def _releases(controls: ControlEndpoints, seen: Viewer) -> list[dict[str, Any]] | None:
    """Releases awaiting review, for administrators (the API lists them to admins only)."""
    if not seen.may(Role.ADMIN):
        return None
    listed = await specialrelease.listing(controls.database, False, QUEUE_LIMIT)
    body = await controls.redacted(NeedToKnow.of(seen.principal), listed, RELEASE_CONTENT)
    return list(body["items"])


async def _page(
    request: web.Request, seen: Viewer, *, problem: Problem | None = None, status: int = 200
) -> web.Response:
    controls = request.app[CONTROLS]
    done = request.query.get("done", "")
    notice = NOTICES.get(done, "").format(n=request.query.get("n", "0")) or None
    return render(
        request,
        "approvals.html.j2",
        seen,
        status=status,
        title="Approvals",
        held=await _held(controls, seen),
        decided=await _decided(controls, seen),
        releases=await _releases(controls, seen),
        notice=notice,
        problem=problem,
    )


async def approvals_page(request: web.Request) -> web.Response:
    return await _page(request, await viewer(request, *DECIDERS))


def _text(form: MultiDictProxy[str], name: str) -> str:
    return form.get(name, "").strip()


async def _decide(request: web.Request, *, approve: bool) -> web.Response:
    seen, form = await changer(request, *DECIDERS)
    alert_id = _path_id(request)
    field_id = f"{'comment' if approve else 'reason'}-{alert_id}"
    text = _text(form, "comment" if approve else "reason")
    values = {field_id: text}
    try:
        if approve:
            reason = decision_reason({"comment": text} if text else {}, approve=True)
        else:
            if not text:
                raise ApiError(422, "schema_violation", "Give a reason for the rejection")
            reason = decision_reason({"reason": text}, approve=False)
        decided = await request.app[CONTROLS].decide(
            seen.principal.actor, alert_id, approve, reason
        )
    except ApiError as refused:
        if refused.status == 404:
            raise
        return await _page(
            request, seen, problem=Problem(field_id, refused.message, values), status=refused.status
        )
    done = "rejected"
    if approve:
        done = "approved" if decided["dispatched"] else "approved-late"
    raise web.HTTPSeeOther(f"/console/approvals?done={done}&n={decided['released']}")


async def approve(request: web.Request) -> web.Response:
    return await _decide(request, approve=True)


async def reject(request: web.Request) -> web.Response:
    return await _decide(request, approve=False)


async def review(request: web.Request) -> web.Response:
    seen, form = await changer(request, Role.ADMIN)
    release_id = _path_id(request)
    field_id = f"note-{release_id}"
    text = _text(form, "note")
    try:
        if not text:
            raise ApiError(422, "schema_violation", "Write a review note")
        await request.app[CONTROLS].review_release(
            seen.principal.actor, release_id, review_note({"note": text})
        )
    except ApiError as refused:
        if refused.status == 404:
            raise
        problem = Problem(field_id, refused.message, {field_id: text})
        return await _page(request, seen, problem=problem, status=refused.status)
    raise web.HTTPSeeOther("/console/approvals?done=reviewed")


def add_approval_routes(app: web.Application) -> None:
    """The approval queue's page and its three actions."""
    app.router.add_get("/console/approvals", approvals_page, allow_head=False)
    app.router.add_post("/console/approvals/{id}/approve", approve)
    app.router.add_post("/console/approvals/{id}/reject", reject)
    app.router.add_post("/console/releases/{id}/review", review)
