"""The live board at /console/: recent alerts with their marks, state, counts by delivery
state, acknowledgment rate and time to first delivery, filtered by kind, state and time
received (a GET form, so a filtered board is a link).

Each row is rendered for the viewer's clearance: an alert above it is the API's
marks-and-counts view (`needtoknow.marks_and_counts`), never its headline. The page listens
to `/console/board/stream`, a cookie-authenticated Server-Sent Events stream fed by the
progress API's own feed (`ProgressEndpoints.feed`, which never yields an alert above the
reader's clearance); an event names only the alert, and the page refetches that one row
(`/console/board/rows/{id}`), so focus and selections elsewhere stay put; a new alert is
offered as a refresh, never slipped in under the reader. The stream ends when
the session does (checked without counting as activity) or the service stops; a session
that has not proven the second factor the service requires gets no feed at all, as every
page sends it to enrol one."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from core.alert import Kind
from dissemination.api.app import SESSION_COOKIE, STAFF
from dissemination.api.errors import ApiError
from dissemination.api.needtoknow import NeedToKnow, marks_and_counts
from dissemination.api.progress import (
    MAX_STREAM_SECONDS,
    PROGRESS,
    STREAM_HEADERS,
    ProgressEndpoints,
)
from dissemination.api.tokens import READERS
from dissemination.console.auth import find_viewer, lacks_second_factor, viewer
from dissemination.console.pages import render, render_text
from dissemination.ledger.progress import AlertFilter, ProgressStore
from dissemination.store.rows import AlertState

BOARD_ROWS = 50
RETRY_MILLISECONDS = 5000
SESSION_CHECK_SECONDS = 5.0
SESSION_ENDED = "session-ended"
ANY_ALERT = "alert-changed"
RANGES: dict[str, tuple[str, timedelta | None]] = {
    "": ("Any time", None),
    "1h": ("Last hour", timedelta(hours=1)),
    "24h": ("Last 24 hours", timedelta(hours=24)),
    "7d": ("Last 7 days", timedelta(days=7)),
    "30d": ("Last 30 days", timedelta(days=30)),
}
KINDS = tuple(kind.value for kind in Kind)
STATES = tuple(state.value for state in AlertState)
FILTERS = ("kind", "state", "within")


@dataclass(frozen=True, slots=True)
class BoardFilter:
    """The board's filters as the form shows them, and the errors of those that are wrong."""

    values: dict[str, str]
    errors: list[tuple[str, str]]

    def alert_filter(self, now: datetime) -> AlertFilter:
        span = RANGES[self.values["within"]][1] if not self.errors else None
        return AlertFilter(
            kind=self.values["kind"] or None,
            state=self.values["state"] or None,
            since=now - span if span is not None else None,
        )

    @property
    def query(self) -> str:
        """The filters as a query string ("" for none), for the Refresh link."""
        chosen = {name: value for name, value in self.values.items() if value}
        return "?" + urlencode(chosen) if chosen else ""


def board_filter(query: Mapping[str, str]) -> BoardFilter:
    """The filters of a board URL; each unknown parameter or value is an error naming it."""
    values = {name: query.get(name, "") for name in FILTERS}
    errors = []
    if values["kind"] and values["kind"] not in KINDS:
        errors.append(("kind", f"There is no kind {values['kind']!r}: choose one of the list"))
    if values["state"] and values["state"] not in STATES:
        errors.append(("state", f"There is no state {values['state']!r}: choose one of the list"))
    if values["within"] not in RANGES:
        errors.append(("within", f"{values['within']!r} is not a time range of the list"))
    for name in query:
        if name not in FILTERS:
            errors.append(("", f"The board has no filter {name!r}"))
    if errors:
        values = {name: value if name not in dict(errors) else "" for name, value in values.items()}
    return BoardFilter(values, errors)


def _ack_rate(counts: Mapping[str, int]) -> str:
    required = counts["ackRequired"]
    if not required:
        return "none required"
    percent = round(100 * counts["acknowledged"] / required)
    return f"{counts['acknowledged']} of {required} ({percent}%)"


def _seconds(value: float | None) -> str:
    if value is None:
        return "not yet"
    if value < 60:
        return f"{value:.1f} s"
    minutes, seconds = divmod(round(value), 60)
    return f"{minutes} min {seconds} s"


def board_row(
    summary: Mapping[str, Any], report: Mapping[str, Any], reader: NeedToKnow
) -> dict[str, Any]:
    """What a row shows of an alert: the whole of it, or the marks-and-counts view when the
    reader's clearance does not admit it (`report` may then be only its counts)."""
    counts = report["counts"]
    reason = reader.refusal_of(summary["handling"])
    if reason is not None:
        row = marks_and_counts(summary, counts, reason)
        row["firstDelivery"] = None
    else:
        row = dict(summary) | {"counts": counts, "withheld": None}
        row["firstDelivery"] = _seconds(report.get("timeToFirstDeliverySeconds"))
    reached = counts["sent"] + counts["delivered"]
    row["reached"] = reached
    row["waiting"] = counts["pending"] + counts["held"] + counts["sending"]
    row["ackRate"] = _ack_rate(counts)
    row["summary"] = (
        f"Alert {summary['id'][:8]}: {reached} of {counts['targeted']} delivered, "
        f"{counts['acknowledged']} acknowledged"
    )
    return row


async def _row_of(
    store: ProgressStore, summary: Mapping[str, Any], reader: NeedToKnow
) -> dict[str, Any]:
    report = None
    if reader.refusal_of(summary["handling"]) is None:
        report = await store.report(summary["id"])
    if report is None:  # above the clearance, or gone since it was listed
        report = {"counts": await store.counts(summary["id"])}
    return board_row(summary, report, reader)


def _progress(request: web.Request) -> ProgressEndpoints:
    return request.app[PROGRESS]


async def board(request: web.Request) -> web.Response:
    """GET /console/: the board, filtered by the query (a 400 page naming a bad filter)."""
    found = await viewer(request, *READERS)
    progress = _progress(request)
    filters = board_filter(request.query)
    reader = NeedToKnow.of(found.principal)
    rows = []
    if not filters.errors:
        where = filters.alert_filter(progress.clock())
        for summary in await progress.store.alerts(where, BOARD_ROWS, None):
            rows.append(await _row_of(progress.store, summary, reader))
    return render(
        request,
        "board.html.j2",
        found,
        status=400 if filters.errors else 200,
        title="Board",
        rows=rows,
        filters=filters.values,
        errors=filters.errors,
        field_errors=dict(filters.errors),
        refresh=f"/console/{filters.query}",
        kind_options=[(kind, kind.replace("_", " ")) for kind in KINDS],
        state_options=[(state, state) for state in STATES],
        ranges=[(value, label) for value, (label, _span) in RANGES.items()],
        limit=BOARD_ROWS,
        now=progress.clock(),
        filtered=any(filters.values.values()),
    )


async def board_row_fragment(request: web.Request) -> web.Response:
    """GET /console/board/rows/{id}: one row of the board, as the viewer may see it. Not a
    sign of activity: the page fetches it by itself when the alert's counts change."""
    found = await viewer(request, *READERS, touch=False)
    alert_id = request.match_info["id"]
    store = _progress(request).store
    report = None if "\x00" in alert_id else await store.report(alert_id)
    if report is None:
        raise ApiError(404, "not_found", f"There is no alert {alert_id!r}")
    row = board_row(report["alert"], report, NeedToKnow.of(found.principal))
    text = render_text("board_row.html.j2", {"row": row})
    return web.Response(text=text, content_type="text/html", headers={"Cache-Control": "no-store"})


def _event(serial: int, name: str, data: Mapping[str, Any]) -> bytes:
    return f"id: {serial}\nevent: {name}\ndata: {json.dumps(data)}\n\n".encode()


async def board_stream(request: web.Request) -> web.StreamResponse:
    """GET /console/board/stream: an `alert-<id>` and an `alert-changed` event each time the
    counts of an alert the viewer may read change; a `session-ended` event (the page stops
    listening) once the session is over, at once when there is none or it still lacks the
    second factor the service requires."""
    staff = request.app[STAFF]
    cookie = request.cookies.get(SESSION_COOKIE, "")
    found = await find_viewer(request, touch=False)
    response = web.StreamResponse(headers=STREAM_HEADERS)
    await response.prepare(request)
    serial = 0
    with contextlib.suppress(ConnectionResetError):
        await response.write(f"retry: {RETRY_MILLISECONDS}\n\n".encode())
        if found is None or not found.may(*READERS):
            await response.write(_event(1, SESSION_ENDED, {"reason": "signed out"}))
            return response
        if lacks_second_factor(request, found.session):
            reason = {"reason": "second factor required"}
            await response.write(_event(1, SESSION_ENDED, reason))
            return response
        progress = _progress(request)
        reader = NeedToKnow.of(found.principal)
        loop = asyncio.get_running_loop()
        checked = loop.time()
        # a quiet feed still wakes up often enough to notice the session's end
        feed = progress.feed(reader, None, MAX_STREAM_SECONDS, heartbeat=SESSION_CHECK_SECONDS)
        async with contextlib.aclosing(feed) as changes:
            async for change in changes:
                if loop.time() - checked >= SESSION_CHECK_SECONDS:
                    checked = loop.time()
                    still = await staff.signin.session_of(cookie, touch=False)
                    if still is None or lacks_second_factor(request, still[0]):
                        serial += 1
                        await response.write(_event(serial, SESSION_ENDED, {"reason": "ended"}))
                        break
                if change is None:
                    await response.write(b": keep-alive\n\n")
                    continue
                data = {"alertId": change.alert_id, "at": change.at.isoformat()}
                # one for the alert's row, one for the page (an alert it does not show yet)
                for name in (f"alert-{change.alert_id}", ANY_ALERT):
                    serial += 1
                    await response.write(_event(serial, name, data))
    return response


def add_board_pages(app: web.Application) -> None:
    """The board, its row fragments and its event stream."""
    app.router.add_get("/console/", board, allow_head=False)
    app.router.add_get("/console/board/rows/{id}", board_row_fragment, allow_head=False)
    app.router.add_get("/console/board/stream", board_stream, allow_head=False)
