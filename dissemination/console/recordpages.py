"""The dissemination record and the audit log for administrators: filters in the URL (who,
what, which alert, a time range), pages of entries, and export as CSV or JSON. Both read
through the API's own functions (`readable_records`, `readable_audit`), so a page shows
exactly what the API would give the same account: entries about alerts above its
clearance are left out of the record and redacted in the audit log."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from core.clock import parse_moment
from dissemination.api.app import RUNTIME
from dissemination.api.directory import MAX_AUDIT_ID, admin_of, readable_audit
from dissemination.api.errors import ApiError
from dissemination.api.needtoknow import NeedToKnow
from dissemination.api.progress import readable_records
from dissemination.api.requests import bounded_int, csv_cell
from dissemination.api.tokens import Role
from dissemination.console.auth import Viewer, viewer
from dissemination.console.compose import stakeholder_names
from dissemination.console.composeform import utc_text
from dissemination.console.pages import render
from dissemination.controls import record
from dissemination.ledger.progress import ProgressStore

RECORD_PATH = "/console/record"
AUDIT_PATH = "/console/audit"
PAGE_SIZE = 50
MAX_EXPORT = 10000
MAX_FILTER_LENGTH = 200
OUTCOMES = (record.RELEASED, record.WITHHELD)
AUDIT_COLUMNS = ("id", "at", "actor", "action", "entity", "entityId", "reason", "before", "after")
RECORD_FILTERS = ("alert", "who", "what", "since", "until")
AUDIT_FILTERS = ("alert", "who", "what", "entity", "since", "until")


@dataclass
class Filters:
    """The filters of a page as typed (to show them again), as the stores take them, and the
    problems with them by field."""

    typed: dict[str, str]
    since: datetime | None = None
    until: datetime | None = None
    errors: list[tuple[str, str]] = field(default_factory=list)

    def get(self, name: str) -> str | None:
        return self.typed.get(name) or None

    def query(self, **more: str | int) -> str:
        shown = {k: v for k, v in self.typed.items() if v} | {k: str(v) for k, v in more.items()}
        return urlencode(shown)


def _filters(query: Mapping[str, str], names: tuple[str, ...]) -> Filters:
    typed = {name: query.get(name, "").strip() for name in names}
    filters = Filters(typed)
    for name, value in typed.items():
        if len(value) > MAX_FILTER_LENGTH or "\x00" in value:
            filters.errors.append((name, f"{name} is longer than {MAX_FILTER_LENGTH} characters"))
            typed[name] = ""
    for name in ("since", "until"):
        raw = typed[name]
        if not raw:
            continue
        moment = parse_moment(utc_text(raw))
        if moment is None:
            message = f"Enter the {name} time as a date and time, e.g. 2026-12-06T14:30 (UTC)"
            filters.errors.append((name, message))
        else:
            setattr(filters, name, moment)
    if filters.since and filters.until and filters.until <= filters.since:
        filters.errors.append(("until", "The end of the range must come after its start"))
    return filters


def _page_number(query: Mapping[str, str]) -> int:
    raw = query.get("page", "1")
    return int(raw) if raw.isdigit() and 0 < len(raw) < 7 and int(raw) > 0 else 1


def _who_matches(entry: Mapping[str, Any], who: str | None) -> bool:
    if who is None:
        return True
    wanted = who.lower()
    return (
        wanted == str(entry["stakeholder_id"]).lower()
        or wanted in str(entry["organization"] or "").lower()
    )


async def _record_entries(
    request: web.Request, found: Viewer, filters: Filters
) -> tuple[list[dict[str, Any]], int]:
    store = ProgressStore(request.app[RUNTIME].database)
    shown, left_out = await readable_records(
        store,
        NeedToKnow.of(found.principal),
        since=filters.since,
        until=filters.until,
        alert_id=filters.get("alert"),
    )
    what = filters.get("what")
    chosen = [
        e
        for e in shown
        if _who_matches(e, filters.get("who")) and (what is None or e["outcome"] == what)
    ]
    return chosen, left_out


def _filtered_page(
    request: web.Request, tab: str, found: Viewer, filters: Filters, *, title: str, **context: Any
) -> web.Response:
    """The record or audit page (`tab`, also its template) with its filters, 422 when any of
    them is not valid."""
    return render(
        request,
        f"{tab}.html.j2",
        found,
        status=422 if filters.errors else 200,
        title=title,
        tab=tab,
        filters=filters,
        errors=filters.errors,
        **context,
    )


async def record_page(request: web.Request) -> web.Response:
    """GET /console/record: the record's entries, newest first, a page at a time."""
    found = await viewer(request, Role.ADMIN)
    filters = _filters(request.query, RECORD_FILTERS)
    entries: list[dict[str, Any]] = []
    left_out = 0
    if not filters.errors:
        entries, left_out = await _record_entries(request, found, filters)
    entries.reverse()
    page = _page_number(request.query)
    start = (page - 1) * PAGE_SIZE
    return _filtered_page(
        request,
        "record",
        found,
        filters,
        title="Dissemination record",
        entries=entries[start : start + PAGE_SIZE],
        total=len(entries),
        left_out=left_out,
        page=page,
        has_next=start + PAGE_SIZE < len(entries),
        outcomes=OUTCOMES,
        names=stakeholder_names(request),
    )


async def record_export(request: web.Request) -> web.Response:
    """GET /console/record/export?format=csv|json: the filtered record, as the API exports
    it (oldest first, the same columns and CSV cells)."""
    found = await viewer(request, Role.ADMIN)
    filters = _filters(request.query, RECORD_FILTERS)
    wanted = request.query.get("format", "csv")
    if filters.errors or wanted not in ("csv", "json"):
        raise web.HTTPBadRequest(reason="the filters or the format (csv or json) are not valid")
    entries, left_out = await _record_entries(request, found, filters)
    headers = {"Content-Disposition": f'attachment; filename="dissemination-record.{wanted}"'}
    if wanted == "csv":
        return web.Response(text=record.as_csv(entries), content_type="text/csv", headers=headers)
    body: dict[str, Any] = {"items": entries, "withheldEntries": left_out}
    return web.json_response(body, headers=headers)


async def _audit_entries(
    request: web.Request, found: Viewer, filters: Filters, after: int, limit: int
) -> list[dict[str, Any]]:
    return await readable_audit(
        admin_of(request),
        NeedToKnow.of(found.principal),
        after_id=after,
        limit=limit,
        entity=filters.get("entity"),
        entity_id=filters.get("alert"),
        actor_name=filters.get("who"),
        action=filters.get("what"),
        since=filters.since,
        until=filters.until,
    )


def _after(query: Mapping[str, str]) -> int:
    """The audit entry id a page starts after, bounded as the API bounds it (the id is a
    32-bit integer on PostgreSQL): a 400 page otherwise."""
    after = bounded_int(query.get("after", "0"), 0, MAX_AUDIT_ID)
    if after is None:
        raise ApiError(400, "invalid_parameter", "after must be an audit entry id")
    return after


async def audit_page(request: web.Request) -> web.Response:
    """GET /console/audit: the audit log, oldest first, a page at a time (`after` an id)."""
    found = await viewer(request, Role.ADMIN)
    filters = _filters(request.query, AUDIT_FILTERS)
    after = _after(request.query)
    entries: list[dict[str, Any]] = []
    if not filters.errors:
        entries = await _audit_entries(request, found, filters, after, PAGE_SIZE + 1)
    has_next = len(entries) > PAGE_SIZE
    entries = entries[:PAGE_SIZE]
    return _filtered_page(
        request,
        "audit",
        found,
        filters,
        title="Audit log",
        entries=entries,
        next_after=entries[-1]["id"] if has_next else None,
        as_json=_compact,
    )


def _compact(value: Any) -> str:
    return "" if value is None else json.dumps(value, sort_keys=True, ensure_ascii=False)


def audit_csv(entries: list[dict[str, Any]]) -> str:
    """Audit entries as CSV: before and after as JSON text; formula-like cells defused."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(AUDIT_COLUMNS)
    for entry in entries:
        cells = entry | {"actor": entry["actor"]["name"]}
        cells["before"], cells["after"] = _compact(entry["before"]), _compact(entry["after"])
        writer.writerow(["" if cells[c] is None else csv_cell(cells[c]) for c in AUDIT_COLUMNS])
    return out.getvalue()


async def audit_export(request: web.Request) -> web.Response:
    """GET /console/audit/export?format=csv|json: the filtered audit log, redacted as the
    API redacts it, at most MAX_EXPORT entries."""
    found = await viewer(request, Role.ADMIN)
    filters = _filters(request.query, AUDIT_FILTERS)
    wanted = request.query.get("format", "csv")
    if filters.errors or wanted not in ("csv", "json"):
        raise web.HTTPBadRequest(reason="the filters or the format (csv or json) are not valid")
    entries = await _audit_entries(request, found, filters, 0, MAX_EXPORT)
    headers = {"Content-Disposition": f'attachment; filename="audit-log.{wanted}"'}
    if wanted == "csv":
        return web.Response(text=audit_csv(entries), content_type="text/csv", headers=headers)
    return web.json_response({"items": entries}, headers=headers)


def add_record_routes(app: web.Application) -> None:
    app.router.add_get(RECORD_PATH, record_page, allow_head=False)
    app.router.add_get(RECORD_PATH + "/export", record_export, allow_head=False)
    app.router.add_get(AUDIT_PATH, audit_page, allow_head=False)
    app.router.add_get(AUDIT_PATH + "/export", audit_export, allow_head=False)
