"""The progress API (roles admin and viewer):

- `GET /api/v1/alerts`: alerts, newest first, filtered by `status`, `kind`, `state` and the
  time received (`since`, `until`), paged with `limit` and `after`.
- `GET /api/v1/alerts/{id}`: counts by state, time to first delivery, the acknowledgment rate
  over time and who has not acknowledged.
- `GET /api/v1/alerts/{id}/deliveries` and `.../deliveries.csv`: every delivery row.
- `GET /api/v1/dissemination-records` (admin): the dissemination record for a time range or
  an alert, as JSON or CSV (`format=csv`).
- `POST /api/v1/alerts/{id}/revalidate` (admin): keep an alert past the retention period.
- `GET /api/v1/alerts/{id}/events` and `GET /api/v1/events`: Server-Sent Events, a
  `progress` event whenever an alert's counts change (for one alert, or for any), until the
  client leaves or, with `?seconds=N`, for N seconds.

A staff account reads only what its clearance admits (`dissemination.api.needtoknow`).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import csv
import io
import json
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from aiohttp import web

from core.clock import Clock, parse_moment
from core.errors import ErrorDetail, StoreUnavailable
from dissemination.api.app import authenticate
from dissemination.api.errors import ApiError
from dissemination.api.needtoknow import (
    NeedToKnow,
    above_clearance,
    listing_withheld,
    marks_and_counts,
)
from dissemination.api.requests import bounded_int, csv_cell, json_body, limit_param
from dissemination.api.tokens import READERS, Role
from dissemination.controls import record
from dissemination.controls.retention import revalidate
from dissemination.ledger.progress import DELIVERY_FIELDS, AlertFilter, ProgressStore

HEARTBEAT_SECONDS = 15.0
MAX_STREAM_SECONDS = 86400
MAX_CHANGED_PER_POLL = 100
# Rows written by other instances may carry a slightly earlier time than this one's clock:
# the feed looks back this far and reports only counts that actually changed.
CLOCK_OVERLAP = timedelta(seconds=5)
WITHHELD_HEADER = "X-Withheld-Entries"
MAX_RECORD_ENTRIES = 100_000
"""The most entries of the dissemination record one request reads: about 2 KB each as read,
so 200 MB, under the 500 MB a process is allowed."""
STREAM_HEADERS = {
    "Content-Type": "text/event-stream",
    "Cache-Control": "no-store",
    "X-Accel-Buffering": "no",
}


@dataclass(frozen=True, slots=True)
class ProgressChange:
    """An alert's counts, changed (or first seen) at `at`."""

    alert_id: str
    at: datetime
    counts: dict[str, int]


def _moment(name: str, raw: str | None) -> datetime | None:
    if raw is None:
        return None
    moment = parse_moment(raw)
    if moment is None:
        raise ApiError(
            400, "invalid_parameter", f"{name} must be an ISO 8601 time with offset (years 1-9999)"
        )
    return moment


def _cursor(raw: str | None) -> tuple[datetime, str] | None:
    if raw is None:
        return None
    try:
        at, _, alert_id = base64.urlsafe_b64decode(raw.encode()).decode().partition("|")
    except (ValueError, UnicodeError, binascii.Error):
        at, alert_id = "", ""
    moment = parse_moment(at)
    if moment is None or "\x00" in alert_id:
        raise ApiError(400, "invalid_parameter", "after must be a cursor from `next`")
    return moment, alert_id


def _next_cursor(item: dict[str, str]) -> str:
    return base64.urlsafe_b64encode(f"{item['receivedAt']}|{item['id']}".encode()).decode()


def _alert_id(request: web.Request) -> str:
    alert_id = request.match_info["id"]
    if "\x00" in alert_id:
        raise ApiError(404, "not_found", f"no alert {alert_id!r}")
    return alert_id


def _text(request: web.Request, name: str) -> str | None:
    value = request.query.get(name)
    if value is not None and "\x00" in value:
        raise ApiError(400, "invalid_parameter", f"{name} must not contain NUL")
    return value


@dataclass(slots=True)
class ProgressEndpoints:
    """The handlers, over the progress queries and the clock; `poll_seconds` paces streams."""

    store: ProgressStore
    clock: Clock
    poll_seconds: float = 1.0
    closing: asyncio.Event = field(default_factory=asyncio.Event)

    async def list_alerts(self, request: web.Request) -> web.Response:
        reader = NeedToKnow.of(await authenticate(request, *READERS))
        known = {"status", "kind", "state", "since", "until", "limit", "after"}
        for name in request.query:
            if name not in known:
                raise ApiError(400, "invalid_parameter", f"unknown parameter {name!r}")
        where = AlertFilter(
            status=_text(request, "status"),
            kind=_text(request, "kind"),
            state=_text(request, "state"),
            since=_moment("since", request.query.get("since")),
            until=_moment("until", request.query.get("until")),
        )
        limit = limit_param(request)
        items = await self.store.alerts(where, limit, _cursor(request.query.get("after")))
        following = _next_cursor(items[-1]) if len(items) == limit else None
        shown = []
        for item in items:
            reason = reader.refusal_of(item["handling"])
            if reason is not None:
                item = marks_and_counts(item, await self.store.counts(item["id"]), reason)
            shown.append(item)
        return web.json_response({"items": shown, "next": following})

    async def report(self, request: web.Request) -> web.Response:
        reader = NeedToKnow.of(await authenticate(request, *READERS))
        alert_id = _alert_id(request)
        report = await self.store.report(alert_id)
        if report is None:
            raise ApiError(404, "not_found", f"no alert {alert_id!r}")
        reason = reader.refusal_of(report["alert"]["handling"])
        if reason is not None:
            return web.json_response(marks_and_counts(report["alert"], report["counts"], reason))
        return web.json_response(report)

    async def _readable(self, request: web.Request, what: str) -> str:
        """The alert's id, once the caller may read it: 404 if there is no such alert, 403
        `above_clearance` if the caller's clearance does not admit it."""
        reader = NeedToKnow.of(await authenticate(request, *READERS))
        alert_id = _alert_id(request)
        marks = (await self.store.handlings([alert_id])).get(alert_id)
        if marks is None:
            raise ApiError(404, "not_found", f"no alert {alert_id!r}")
        reason = reader.refusal(marks)
        if reason is not None:
            raise above_clearance(what, reason)
        return alert_id

    async def deliveries(self, request: web.Request) -> web.Response:
        alert_id = await self._readable(request, "the alert's deliveries")
        return web.json_response({"items": await self.store.deliveries(alert_id)})

    async def deliveries_csv(self, request: web.Request) -> web.Response:
        alert_id = await self._readable(request, "the alert's deliveries")
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(DELIVERY_FIELDS)
        for item in await self.store.deliveries(alert_id):
            writer.writerow(
                ["" if item[field] is None else csv_cell(item[field]) for field in DELIVERY_FIELDS]
            )
        return web.Response(
            text=out.getvalue(),
            content_type="text/csv",
            headers={"Content-Disposition": f'attachment; filename="deliveries-{alert_id}.csv"'},
        )

    async def records(self, request: web.Request) -> web.Response:
        reader = NeedToKnow.of(await authenticate(request, Role.ADMIN))
        known = {"since", "until", "alertId", "format"}
        for name in request.query:
            if name not in known:
                raise ApiError(400, "invalid_parameter", f"unknown parameter {name!r}")
        wanted = request.query.get("format", "json")
        if wanted not in ("json", "csv"):
            raise ApiError(400, "invalid_parameter", "format must be json or csv")
        shown, left_count = await readable_records(
            self.store,
            reader,
            since=_moment("since", request.query.get("since")),
            until=_moment("until", request.query.get("until")),
            alert_id=_text(request, "alertId"),
        )
        left_out = listing_withheld(left_count)
        if wanted == "csv":
            headers = {WITHHELD_HEADER: str(left_out["items"])} if left_out else None
            return web.Response(text=record.as_csv(shown), content_type="text/csv", headers=headers)
        body: dict[str, object] = {"items": shown}
        if left_out:
            body["withheld"] = left_out
        return web.json_response(body)

    async def revalidate(self, request: web.Request) -> web.Response:
        """POST /api/v1/alerts/{id}/revalidate: keep the alert past the retention period."""
        token = await authenticate(request, Role.ADMIN)
        alert_id = _alert_id(request)
        body = await json_body(request)
        reason = body.get("reason") if isinstance(body, dict) else None
        if set(body if isinstance(body, dict) else ()) != {"reason"} or not (
            isinstance(reason, str) and 3 <= len(reason.strip()) <= 500
        ):
            message = 'the body must be {"reason": "..."} (3 to 500 characters)'
            raise ApiError(422, "schema_violation", message, [ErrorDetail("$.reason", message)])
        now = self.clock()
        if not await revalidate(self.store.database, alert_id, token.actor, reason, now):
            raise ApiError(404, "not_found", f"no alert {alert_id!r} with content to keep")
        return web.json_response({"id": alert_id, "revalidatedAt": now.isoformat()})

    async def alert_events(self, request: web.Request) -> web.StreamResponse:
        alert_id = await self._readable(request, "the alert's progress")
        return await self._stream(request, alert_id, NeedToKnow(None))

    async def all_events(self, request: web.Request) -> web.StreamResponse:
        reader = NeedToKnow.of(await authenticate(request, *READERS))
        return await self._stream(request, None, reader)

    async def _stream(
        self, request: web.Request, alert_id: str | None, reader: NeedToKnow
    ) -> web.StreamResponse:
        """Send a `progress` event for each change of `feed`, and a comment line as a
        heartbeat; runs until the client goes away or the `seconds` asked for are over."""
        raw = request.query.get("seconds", str(MAX_STREAM_SECONDS))
        seconds = bounded_int(raw, 1, MAX_STREAM_SECONDS)
        if seconds is None:
            raise ApiError(
                400,
                "invalid_parameter",
                f"seconds must be an integer from 1 to {MAX_STREAM_SECONDS}",
            )
        response = web.StreamResponse(headers=STREAM_HEADERS)
        await response.prepare(request)
        async with contextlib.aclosing(self.feed(reader, alert_id, seconds)) as changes:
            async for change in changes:
                if change is None:
                    message = b": keep-alive\n\n"
                else:
                    event = {
                        "alertId": change.alert_id,
                        "at": change.at.isoformat(),
                        "counts": change.counts,
                    }
                    message = f"event: progress\ndata: {json.dumps(event)}\n\n".encode()
                try:
                    await response.write(message)
                except ConnectionResetError:
                    break
        return response

    async def feed(
        self,
        reader: NeedToKnow,
        alert_id: str | None,
        seconds: float,
        heartbeat: float = HEARTBEAT_SECONDS,
    ) -> AsyncGenerator[ProgressChange | None]:
        """The changes of alerts' counts for `seconds` or until the service stops: for one
        alert (its counts at once, then each change), or for every alert the `reader` may
        read (an alert above its clearance is never yielded); None after `heartbeat` seconds
        without a change."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        sent: dict[str, dict[str, int]] = {}
        since = self.clock()
        quiet = 0.0
        while loop.time() < deadline and not self.closing.is_set():
            try:
                now = self.clock()
                if alert_id is not None:
                    watched = [alert_id]
                else:
                    changed = await self.store.changed_since(since - CLOCK_OVERLAP)
                    changed = await reader.readable(self.store, changed)
                    watched = changed[:MAX_CHANGED_PER_POLL]
                since = now
                for watched_id in watched:
                    counts = await self.store.counts(watched_id)
                    if sent.get(watched_id) == counts:
                        continue
                    sent[watched_id] = counts
                    yield ProgressChange(watched_id, now, counts)
                    quiet = 0.0
            except StoreUnavailable:
                pass  # the next poll tries again; the stream stays open
            if quiet >= heartbeat:
                yield None
                quiet = 0.0
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.closing.wait(), self.poll_seconds)
            quiet += self.poll_seconds


PROGRESS = web.AppKey("progress", ProgressEndpoints)


async def readable_records(
    store: ProgressStore,
    reader: NeedToKnow,
    *,
    since: datetime | None,
    until: datetime | None,
    alert_id: str | None,
) -> tuple[list[dict[str, Any]], int]:
    """The record's entries in [since, until) (of one alert if given) that the reader may
    read, and how many were left out; 403 `above_clearance` if the alert asked for is above
    the reader's clearance. The API's export and the console's record page read through
    here. 422 `range_too_large` past `MAX_RECORD_ENTRIES` entries, before any is read: one
    request holds what it reads in memory."""
    if alert_id is not None:
        asked = await reader.refusals(store, [alert_id])
        if alert_id in asked:
            raise above_clearance("the alert's dissemination record", asked[alert_id])
    held = await record.count(store.database, since=since, until=until, alert_id=alert_id)
    if held > MAX_RECORD_ENTRIES:
        raise ApiError(
            422,
            "range_too_large",
            f"the range holds {held:,} entries, more than the {MAX_RECORD_ENTRIES:,} one request"
            " reads: narrow since and until, or ask for one alertId",
        )
    entries = await record.export(store.database, since=since, until=until, alert_id=alert_id)
    refused = await reader.refusals(store, {e["alert_id"] for e in entries})
    shown = [e for e in entries if e["alert_id"] not in refused]
    return shown, len(entries) - len(shown)


def add_progress_routes(app: web.Application, endpoints: ProgressEndpoints) -> None:
    app[PROGRESS] = endpoints  # the console's board streams from the same feed

    async def end_streams(_app: web.Application) -> None:
        endpoints.closing.set()

    app.on_shutdown.append(end_streams)
    app.router.add_get("/api/v1/alerts", endpoints.list_alerts, allow_head=False)
    app.router.add_get("/api/v1/alerts/{id}", endpoints.report, allow_head=False)
    app.router.add_get("/api/v1/alerts/{id}/deliveries", endpoints.deliveries, allow_head=False)
    app.router.add_get(
        "/api/v1/alerts/{id}/deliveries.csv", endpoints.deliveries_csv, allow_head=False
    )
    app.router.add_get("/api/v1/alerts/{id}/events", endpoints.alert_events, allow_head=False)
    app.router.add_get("/api/v1/events", endpoints.all_events, allow_head=False)
    app.router.add_get("/api/v1/dissemination-records", endpoints.records, allow_head=False)
    app.router.add_post("/api/v1/alerts/{id}/revalidate", endpoints.revalidate)
