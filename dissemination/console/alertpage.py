"""An alert's page at /console/alerts/{id}: its facts and marks, every delivery with its
channel, state and why (unreachable, withheld), who acknowledged and who has not, its
escalations and its dissemination record, read through the progress API's store and the
record's export. Above the viewer's clearance it is the API's marks-and-counts view.

Its actions (`alertactions`) post to sub-paths and come back here with a notice, or with the
form's errors."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aiohttp import web
from sqlalchemy import select

from dissemination.api.needtoknow import NeedToKnow, marks_and_counts
from dissemination.api.progress import PROGRESS
from dissemination.api.tokens import READERS, Role
from dissemination.console.auth import Viewer, viewer
from dissemination.console.board import board_row
from dissemination.console.pages import render
from dissemination.controls import record
from dissemination.store.tables import stakeholders

CANCELLABLE_KINDS = frozenset({"sar", "bolo", "situational_awareness", "advisory"})
MAX_STAKEHOLDER_CHOICES = 500
NOTICES = {
    "acknowledged": "The acknowledgment is recorded.",
    "released": "The imminent-danger release is made and flagged for review.",
    "cancelled": "The Cancel is sent. Messages already sent cannot be recalled.",
    "followed-up": "The follow-up is on its way to those who have not acknowledged.",
    "nobody": "Everyone who owes an acknowledgment has made it: no follow-up was sent.",
}


def alert_id_of(request: web.Request) -> str:
    return request.match_info["id"]


def _acknowledged(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One entry per stakeholder who acknowledged, earliest first."""
    found: dict[str, dict[str, Any]] = {}
    for item in items:
        if item["acknowledgedAt"] and item["stakeholderId"] not in found:
            found[item["stakeholderId"]] = item
    return sorted(found.values(), key=lambda item: item["acknowledgedAt"])


def _entry(entry: Mapping[str, Any], names: Mapping[str, str | None]) -> dict[str, Any]:
    """A record entry as the page shows it: whom by name, and why (the matching
    subscriptions, or the typed justification of a release)."""
    rule = entry["rule"]
    why = ", ".join(rule) if isinstance(rule, list) else rule
    return dict(entry) | {
        "recipient": names.get(entry["stakeholder_id"]) or entry["stakeholder_id"] or "",
        "why": entry["justification"] or why or "",
    }


async def _stakeholder_choices(request: web.Request) -> list[Mapping[str, Any]]:
    database = request.app[PROGRESS].store.database
    query = (
        select(stakeholders.c.id, stakeholders.c.name, stakeholders.c.organization)
        .order_by(stakeholders.c.name, stakeholders.c.id)
        .limit(MAX_STAKEHOLDER_CHOICES)
    )
    async with database.reading() as conn:
        return [dict(row) for row in (await conn.execute(query)).mappings()]


async def alert_page(
    request: web.Request,
    found: Viewer,
    *,
    status: int = 200,
    errors: list[tuple[str, str]] | None = None,
    values: Mapping[str, str] | None = None,
    failed: str | None = None,
) -> web.Response:
    """The page of the alert in the path (404 page if there is none); with a form's
    `errors` and `values` when the action `failed`."""
    alert_id = alert_id_of(request)
    store = request.app[PROGRESS].store
    report = None if "\x00" in alert_id else await store.report(alert_id)
    if report is None:
        raise web.HTTPNotFound(reason=f"There is no alert {alert_id!r}")
    summary = report["alert"]
    reason = NeedToKnow.of(found.principal).refusal_of(summary["handling"])
    if reason is not None:
        view = marks_and_counts(summary, report["counts"], reason)
        return render(
            request,
            "alert_withheld.html.j2",
            found,
            title="Alert above your clearance",
            alert=view,
            row=board_row(summary, {"counts": report["counts"]}, NeedToKnow.of(found.principal)),
        )
    deliveries = await store.deliveries(alert_id)
    entries = None
    if found.may(Role.ADMIN):
        names = {d["stakeholderId"]: d["stakeholderName"] for d in deliveries}
        entries = [
            _entry(entry, names) for entry in await record.export(store.database, alert_id=alert_id)
        ]
    is_admin = found.may(Role.ADMIN)
    return render(
        request,
        "alert.html.j2",
        found,
        status=status,
        title=summary["headline"] or f"Alert {alert_id}",
        alert=summary,
        report=report,
        row=board_row(summary, report, NeedToKnow.of(found.principal)),
        deliveries=deliveries,
        acknowledged=_acknowledged(deliveries),
        entries=entries,
        notice=NOTICES.get(request.query.get("done", "")),
        errors=errors or [],
        values=values or {},
        failed=failed,
        may_act=is_admin,
        may_cancel=found.may(Role.PUBLISHER, Role.ADMIN) and summary["kind"] in CANCELLABLE_KINDS,
        stakeholders=await _stakeholder_choices(request) if is_admin else [],
        channels=("email", "sms", "webhook"),
    )


async def show_alert(request: web.Request) -> web.Response:
    """GET /console/alerts/{id}."""
    return await alert_page(request, await viewer(request, *READERS))
