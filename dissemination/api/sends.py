"""Ad-hoc and scheduled sends: an analyst composes a local alert, names its audience (lists,
stakeholders, rules) and either plans it (a dry run) or sends it, at once or at `sendAt`.

A send is validated as intake validates any alert and checked for the publisher's authority
as HTTP ingest checks it, stored with its audience (`ledger.sends`), then released onto the
inbound exchange: from there it takes the same path as every other alert (controls,
approval, ledger, dissemination record), planned for its audience only. The dry run plans it
with the same planner and approval rules, and writes nothing but an audit entry.

The submitter today is the token: its principal (`token:<id>`) is what approval compares,
and the alert's sender defaults to the token's only sender. `_submitter` is the one place
that changes when accounts submit sends."""

from __future__ import annotations

import contextlib
import json
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from aiohttp import web

from core.alert import Alert
from core.clock import Clock
from core.errors import ErrorDetail, RejectedInput
from core.validation import validate
from dissemination.api.app import RUNTIME, Runtime, authenticate, broker_ready
from dissemination.api.errors import ApiError
from dissemination.api.ingest import audit_acting_for, check_authority
from dissemination.api.needtoknow import (
    UNKNOWN_MARKS,
    NeedToKnow,
    above_clearance,
    listing_withheld,
    withheld,
)
from dissemination.api.principal import Principal
from dissemination.api.requests import json_body, limit_param, text_param
from dissemination.api.tokens import Role
from dissemination.controls.approval import principal
from dissemination.errors import PublishFailed
from dissemination.intake.release import SendReleaser
from dissemination.ledger.alerts import Payload
from dissemination.ledger.planning import Planner
from dissemination.ledger.progress import ProgressStore
from dissemination.ledger.sends import NewSend, NotCancellable, Sends, SendState
from dissemination.store.audit import Actor
from dissemination.store.rows import DeliveryState, PlannedRow
from subscriptions.audience import Audience

COMPOSERS = (Role.PUBLISHER, Role.ADMIN)
SEND_CONTENT = ("sender", "headline", "audience")  # what a send above clearance leaves out
SEND_READERS = (Role.ADMIN, Role.PUBLISHER, Role.VIEWER)


@dataclass(slots=True)
class SendEndpoints:
    """What the send handlers share."""

    sends: Sends
    releaser: SendReleaser
    clock: Clock
    max_audience: int


SENDS = web.AppKey("sends", SendEndpoints)


def _submitter(token: Principal) -> tuple[Actor, str]:
    """Who submits: the actor the audit log names (the account, when one signed in), and the
    principal approval compares."""
    actor = token.actor
    return actor, principal(actor)


def _planner(runtime: Runtime) -> Planner:
    planner = runtime.ledger.planner
    if planner is None:
        raise ApiError(503, "not_planning", "this instance plans no deliveries")
    return planner


def _request(document: Any) -> dict[str, Any]:
    if not isinstance(document, dict):
        raise ApiError(422, "schema_violation", "the body must be a JSON object")
    try:
        validate("send_request", document)
    except RejectedInput as rejected:
        raise ApiError.from_rejection(rejected) from None
    return document


def _send_at(body: dict[str, Any], now: datetime) -> datetime | None:
    if "sendAt" not in body:
        return None
    send_at = datetime.fromisoformat(body["sendAt"].upper())
    if send_at <= now:
        raise ApiError(
            422,
            "send_at_past",
            "sendAt must be in the future (omit it to send at once)",
            [ErrorDetail("$.sendAt", f"{body['sendAt']} is not after {now.isoformat()}")],
        )
    return send_at


def _composed(
    runtime: Runtime, token: Principal, document: dict[str, Any], sent: datetime
) -> tuple[Alert, Payload]:
    """The alert with its defaults filled in, parsed as intake parses it."""
    filled = dict(document)
    filled.setdefault("identifier", f"send-{uuid.uuid4()}")
    filled.setdefault("sent", sent.isoformat(timespec="seconds"))
    if "sender" not in filled and len(token.senders) == 1:
        filled["sender"] = next(iter(token.senders))
    payload = Payload(json.dumps(filled).encode(), "application/json")
    try:
        alerts = runtime.processor.parse(payload)
    except RejectedInput as rejected:
        details = [ErrorDetail("$.alert" + d.path[1:], d.message) for d in rejected.errors]
        raise ApiError.from_rejection(RejectedInput(rejected.reason, details)) from None
    return alerts[0], payload


def alert_problems(request: web.Request, token: Principal, document: Any) -> list[ErrorDetail]:
    """What intake would find wrong with the alert of a send request, by path under
    `$.alert` (none if it parses): every problem of the alert at once, where a submission
    stops at the first part of the request that is wrong."""
    sent = request.app[SENDS].clock()
    try:
        _composed(request.app[RUNTIME], token, document, sent)
    except ApiError as error:
        return list(error.details) or [ErrorDetail("$.alert", error.message)]
    return []


def _audience(endpoints: SendEndpoints, planner: Planner, alert: Alert, send_id: str,
              document: dict[str, Any]) -> Audience:  # fmt: skip
    """The audience, every name in it known and its size within bounds."""
    try:
        audience = Audience.from_json(send_id, document)
    except RejectedInput as rejected:
        raise ApiError.from_rejection(rejected) from None
    unknown = planner.matcher.unknown_in(audience)
    if unknown:
        raise ApiError(
            422,
            "unknown_recipient",
            "the audience names lists or stakeholders that do not exist",
            [ErrorDetail(path, f"no such list or stakeholder {name!r}") for path, name in unknown],
        )
    size = planner.matcher.audience_size(alert, audience)
    if size > endpoints.max_audience:
        raise ApiError(
            422,
            "audience_too_large",
            f"the audience names {size} stakeholders; a send may name at most "
            f"{endpoints.max_audience} (use a subscription rule for standing audiences)",
            [ErrorDetail("$.audience", f"{size} stakeholders")],
        )
    return audience


async def create_send(request: web.Request) -> web.Response:
    """POST /api/v1/sends: a dry run (200 with the plan) or a send (202, released at once or
    scheduled)."""
    token = await authenticate(request, *COMPOSERS)
    status, answer = await submit_send(request, token, await json_body(request))
    return web.json_response(answer, status=status)


async def submit_send(
    request: web.Request, token: Principal, document: Any
) -> tuple[int, dict[str, Any]]:
    """A send request from `token` (a composer) planned or made: (200, the plan) for a dry
    run, (202, the send) otherwise; ApiError with each problem's path if it is refused. The
    API and the console's compose page both submit through here."""
    runtime, endpoints = request.app[RUNTIME], request.app[SENDS]
    planner = _planner(runtime)
    body = _request(document)
    now = endpoints.clock()
    send_at = _send_at(body, now)
    alert, payload = _composed(runtime, token, body["alert"], send_at or now)
    acting_for = await check_authority(request, runtime, token, [alert])
    send_id = str(uuid.uuid4())
    audience = _audience(endpoints, planner, alert, send_id, body["audience"])
    actor, submitted_by = _submitter(token)
    if body.get("dryRun", False):
        refused = NeedToKnow.of(token).refusal(alert.handling)
        if refused is not None:
            raise above_clearance("the plan of this alert", refused)
        plan = _dry_run(runtime, planner, alert, audience, now)
        summary = {k: plan[k] for k in ("alertId", "audience", "recipients", "withheldCount")}
        summary["handling"] = {"tlp": plan["tlp"], "caveats": plan["caveats"]}
        await endpoints.sends.audit_dry_run(actor, summary, now)
        return 200, plan
    if not broker_ready(runtime):
        raise ApiError(503, "broker_unavailable", "the broker is not connected; retry later")
    new = NewSend(send_id, alert, payload, audience, send_at or now, submitted_by, actor)
    record = await endpoints.sends.create(new, now)
    if acting_for:
        await audit_acting_for(runtime, token, [alert], acting_for)
    if send_at is None:
        # On failure it stays scheduled, due now: the release job publishes it.
        with contextlib.suppress(PublishFailed):
            await endpoints.releaser.release(send_id, actor)
        record = await endpoints.sends.get(send_id) or record
    return 202, record


def _dry_run(
    runtime: Runtime, planner: Planner, alert: Alert, audience: Audience, now: datetime
) -> dict[str, Any]:
    """The plan a real send would make now: the planner's rows for the audience, quiet hours
    applied, and whether approval would hold it."""
    rows = planner.hold_for_quiet_hours(alert, planner.plan(alert, [audience]), now)
    policy = runtime.processor.approval
    hold_rule = policy.hold_rule(alert) if policy is not None else None
    targets = [_target(row) for row in rows if row.state is DeliveryState.PENDING]
    withheld = [_withheld(row) for row in rows if row.state is DeliveryState.WITHHELD]
    return {
        "dryRun": True,
        "alertId": alert.id,
        "tlp": alert.handling.tlp.value,
        "caveats": list(alert.handling.caveats),
        "audience": audience.to_json(),
        "approval": {"required": hold_rule is not None, "rule": hold_rule},
        "recipients": len({t["stakeholderId"] for t in targets}),
        "withheldCount": len(withheld),
        "targets": targets,
        "withheld": withheld,
    }


def _target(row: PlannedRow) -> dict[str, Any]:
    return {
        "stakeholderId": row.stakeholder_id,
        "contactId": row.contact_id,
        "channel": row.channel,
        "address": row.address,
        "fallbackChannels": list(row.fallback_channels),
        "ackRequired": row.ack_required,
        "notBefore": row.not_before.isoformat() if row.not_before else None,
    }


def _withheld(row: PlannedRow) -> dict[str, Any]:
    return {
        "stakeholderId": row.stakeholder_id,
        "contactId": row.contact_id,
        "channel": row.channel or None,
        "address": row.address or None,
        "reason": row.reason,
        "detail": row.detail,
    }


def _send_id(request: web.Request) -> str:
    send_id = request.match_info["id"]
    if "\x00" in send_id or len(send_id) > 36:
        raise ApiError(404, "not_found", f"no send {send_id!r}")
    return send_id


async def _refusals(
    request: web.Request, reader: NeedToKnow, items: list[dict[str, Any]]
) -> dict[str, Any]:
    """Of these sends, those whose alert the reader may not read, with why (a stored alert
    that no longer parses is refused: fail closed). A send emptied by retention is judged by
    the marks its stored alert keeps."""
    if not reader.bounded or not items:
        return {}
    runtime = request.app[RUNTIME]
    payloads = await request.app[SENDS].sends.payloads([str(item["id"]) for item in items])
    alert_of = {str(item["id"]): item.get("alertId") for item in items}
    purged = {i: alert_of[i] for i, payload in payloads.items() if not payload.body}
    kept = await ProgressStore(runtime.database).handlings(a for a in purged.values() if a)
    refused = {}
    for send_id, payload in payloads.items():
        if send_id in purged:
            handling = kept.get(purged[send_id] or "")
            reason = reader.refusal(handling) if handling is not None else UNKNOWN_MARKS
            if reason is not None:
                refused[send_id] = reason
            continue
        try:
            marks = runtime.processor.parse(payload)[0].handling
        except RejectedInput:
            refused[send_id] = UNKNOWN_MARKS
            continue
        reason = reader.refusal(marks)
        if reason is not None:
            refused[send_id] = reason
    return refused


async def list_sends(request: web.Request) -> web.Response:
    """GET /api/v1/sends: sends by id, optionally of one state; a send whose alert is above
    the reader's clearance shows no sender, headline or audience."""
    reader = NeedToKnow.of(await authenticate(request, *SEND_READERS))
    unknown = set(request.query) - {"limit", "after", "state"}
    if unknown:
        raise ApiError(400, "invalid_parameter", f"unknown filter {sorted(unknown)[0]!r}")
    state = request.query.get("state")
    if state is not None and state not in {s.value for s in SendState}:
        raise ApiError(400, "invalid_parameter", f"unknown state {state!r}")
    after = text_param("after", request.query.get("after", ""))
    page = await request.app[SENDS].sends.page(after, limit_param(request), state)
    refused = await _refusals(request, reader, page.items)
    items = []
    for item in page.items:
        reason = refused.get(item["id"])
        if reason is not None:
            item = {k: v for k, v in item.items() if k not in SEND_CONTENT}
            item["withheld"] = withheld(reason, SEND_CONTENT)
        items.append(item)
    body: dict[str, Any] = {"items": items, "next": page.next_cursor}
    left_out = listing_withheld(len(refused))
    if left_out:
        body["withheld"] = left_out
    return web.json_response(body)


async def show_send(request: web.Request) -> web.Response:
    """GET /api/v1/sends/{id}: 403 `above_clearance` if its alert is above the reader's."""
    reader = NeedToKnow.of(await authenticate(request, *SEND_READERS))
    return web.json_response(await readable_send(request, reader, _send_id(request)))


async def readable_send(request: web.Request, reader: NeedToKnow, send_id: str) -> dict[str, Any]:
    """The send, if the reader may read its alert: 404 if there is none, 403
    `above_clearance` if its alert is above the reader's clearance."""
    record = await request.app[SENDS].sends.get(send_id)
    if record is None:
        raise ApiError(404, "not_found", f"no send {send_id!r}")
    reason = (await _refusals(request, reader, [record])).get(send_id)
    if reason is not None:
        raise above_clearance("the send", reason)
    return record


async def cancel_send(request: web.Request) -> web.Response:
    """DELETE /api/v1/sends/{id}: cancel a scheduled send (409 once released)."""
    token = await authenticate(request, *COMPOSERS)
    await cancel_scheduled(request, token, _send_id(request))
    return web.Response(status=204)


async def cancel_scheduled(request: web.Request, token: Principal, send_id: str) -> dict[str, Any]:
    """Cancel a scheduled send, audited as `token`'s: 404 if there is none, 403
    `above_clearance` if its alert is above `token`'s clearance (as reading it is), 409 once
    it is released or cancelled. The API and the console's send page cancel here."""
    await readable_send(request, NeedToKnow.of(token), send_id)
    endpoints = request.app[SENDS]
    actor, _ = _submitter(token)
    try:
        record = await endpoints.sends.cancel(send_id, actor, endpoints.clock())
    except NotCancellable as refused:
        raise ApiError(409, "not_cancellable", str(refused)) from None
    if record is None:
        raise ApiError(404, "not_found", f"no send {send_id!r}")
    return record


def add_send_routes(app: web.Application, endpoints: SendEndpoints) -> None:
    """POST and GET /api/v1/sends, GET and DELETE /api/v1/sends/{id}."""
    app[SENDS] = endpoints
    app.router.add_post("/api/v1/sends", create_send)
    app.router.add_get("/api/v1/sends", list_sends)
    app.router.add_get("/api/v1/sends/{id}", show_send)
    app.router.add_delete("/api/v1/sends/{id}", cancel_send)
