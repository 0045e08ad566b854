"""What staff do from an alert's page, each a plain form posted to a sub-path of the page and
done through the same code as the JSON API:

- acknowledge on a stakeholder's behalf (administrators; `AckEndpoints.acknowledge_for`);
- an imminent-danger release with its justification (administrators;
  `ControlEndpoints.release_for`);
- Cancel: a CAP-style Cancel of a local alert, referencing it, sent as any send is
  (`sends.submit_send`) to everyone it was for (publishers and administrators);
- follow up with everyone who has not acknowledged (administrators; `acks.followup`).

A refused form comes back to the page with its errors; a done one redirects to the page with
a notice. Nothing is done to an alert above the viewer's clearance (403)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from aiohttp import web
from multidict import MultiDictProxy
from sqlalchemy import select

from dissemination.acks.followup import follow_up
from dissemination.api.acks import ACKS
from dissemination.api.controls import CONTROLS, release_request
from dissemination.api.errors import ApiError
from dissemination.api.needtoknow import NeedToKnow, above_clearance
from dissemination.api.progress import PROGRESS
from dissemination.api.sends import submit_send
from dissemination.api.tokens import Role
from dissemination.console.alertpage import CANCELLABLE_KINDS, alert_id_of, alert_page
from dissemination.console.auth import Viewer, changer
from dissemination.store.rows import DeliveryState, RowOrigin
from dissemination.store.tables import alerts, payloads

# API field paths (or error codes) → the page's form field id and its name in messages
ACK_FIELDS = {
    "$.stakeholderId": ("ack-stakeholder", "Recipient"),
    "$.reason": ("ack-reason", "Why"),
    "$.comment": ("ack-comment", "Their comment"),
    "not_found": ("ack-stakeholder", "Recipient"),
}
RELEASE_FIELDS = {
    "$.stakeholderId": ("release-stakeholder", "Stakeholder"),
    "$.justification": ("release-justification", "Justification"),
    "$.channels": ("release-channels", "Channels"),
    "not_found": ("release-stakeholder", "Stakeholder"),
    "stakeholder_inactive": ("release-stakeholder", "Stakeholder"),
    "no_contact": ("release-channels", "Channels"),
}
NOT_CARRIED = ("identifier", "sent", "references", "expires")  # a Cancel's own or none


def _errors(
    error: ApiError, fields: Mapping[str, tuple[str, str]], fallback: str
) -> list[tuple[str, str]]:
    """The error as the page's error summary lists it: per field where the API named one."""
    found = [
        (fields[d.path][0], f"{fields[d.path][1]}: {d.message}")
        for d in error.details
        if d.path in fields
    ]
    if not found and error.code in fields:
        field, label = fields[error.code]
        found = [(field, f"{label}: {error.message}")]
    return found or [(fallback, error.message)]


async def _readable(request: web.Request, found: Viewer) -> dict[str, Any]:
    """The alert in the path, if the viewer may read it: 404 page, 403 above clearance."""
    alert_id = alert_id_of(request)
    store = request.app[PROGRESS].store
    report = None if "\x00" in alert_id else await store.report(alert_id)
    if report is None:
        raise web.HTTPNotFound(reason=f"There is no alert {alert_id!r}")
    reason = NeedToKnow.of(found.principal).refusal_of(report["alert"]["handling"])
    if reason is not None:
        raise above_clearance("this alert", reason)
    return report


def _done(alert_id: str, what: str) -> web.HTTPSeeOther:
    return web.HTTPSeeOther(f"/console/alerts/{alert_id}?done={what}#notice")


async def _refused(
    request: web.Request,
    found: Viewer,
    form: MultiDictProxy[str],
    failed: str,
    errors: list[tuple[str, str]],
) -> web.Response:
    return await alert_page(request, found, status=422, errors=errors, values=form, failed=failed)


async def acknowledge(request: web.Request) -> web.StreamResponse:
    """POST /console/alerts/{id}/acknowledge."""
    found, form = await changer(request, Role.ADMIN)
    report = await _readable(request, found)
    body = {"stakeholderId": form.get("stakeholder", ""), "reason": form.get("reason", "").strip()}
    if form.get("comment", "").strip():
        body["comment"] = form["comment"].strip()
    try:
        await request.app[ACKS].acknowledge_for(
            report["alert"]["id"], body, found.principal.actor, NeedToKnow.of(found.principal)
        )
    except ApiError as error:
        if error.status not in (404, 422):
            raise
        return await _refused(request, found, form, "ack", _errors(error, ACK_FIELDS, "ack-reason"))
    raise _done(report["alert"]["id"], "acknowledged")


async def release(request: web.Request) -> web.StreamResponse:
    """POST /console/alerts/{id}/release: an imminent-danger release."""
    found, form = await changer(request, Role.ADMIN)
    report = await _readable(request, found)
    body: dict[str, Any] = {
        "stakeholderId": form.get("stakeholder", ""),
        "justification": form.get("justification", ""),
    }
    if form.getall("channels", []):
        body["channels"] = form.getall("channels")
    controls = request.app[CONTROLS]
    try:
        await controls.release_for(
            report["alert"]["id"],
            release_request(body),
            found.principal.actor,
            NeedToKnow.of(found.principal),
        )
    except ApiError as error:
        if error.status not in (404, 409, 422):
            raise
        errors = _errors(error, RELEASE_FIELDS, "release-justification")
        return await _refused(request, found, form, "release", errors)
    raise _done(report["alert"]["id"], "released")


async def _cancel_document(request: web.Request, summary: Mapping[str, Any]) -> dict[str, Any]:
    """The original's document turned into a Cancel that references it."""
    database = request.app[PROGRESS].store.database
    async with database.reading() as conn:
        body = await conn.scalar(
            select(payloads.c.body)
            .join(alerts, alerts.c.payload_sha256 == payloads.c.sha256)
            .where(alerts.c.id == summary["id"])
        )
    try:
        original = json.loads(bytes(body)) if body is not None else None
    except ValueError:
        original = None
    if not isinstance(original, dict) or original.get("kind") != summary["kind"]:
        raise ApiError(409, "not_cancellable", "the alert's document is no longer kept")
    cancel = {k: v for k, v in original.items() if k not in NOT_CARRIED}
    cancel["msgType"] = "Cancel"
    cancel["references"] = [
        {k: original[k] for k in ("sender", "identifier", "sent")},
    ]
    cancel["headline"] = f"Cancelled: {summary['headline'] or original['identifier']}"[:160]
    return cancel


async def cancel(request: web.Request) -> web.StreamResponse:
    """POST /console/alerts/{id}/cancel: send a Cancel of the alert to everyone it was for."""
    found, form = await changer(request, Role.PUBLISHER, Role.ADMIN)
    report = await _readable(request, found)
    summary = report["alert"]
    if form.get("confirm") != "yes":
        message = "Confirm that you mean to send a Cancel to everyone this alert was for"
        return await _refused(request, found, form, "cancel", [("cancel-confirm", message)])
    if summary["kind"] not in CANCELLABLE_KINDS:
        raise ApiError(409, "not_cancellable", "a CAP alert is cancelled by its originator")
    store = request.app[PROGRESS].store
    recipients = sorted(
        {
            item["stakeholderId"]
            for item in await store.deliveries(summary["id"])
            if item["state"] != DeliveryState.WITHHELD.value
            and item["origin"] != RowOrigin.NOTICE.value
        }
    )
    if not recipients:
        message = "Nobody was sent this alert: there is no one to send a Cancel to"
        return await _refused(request, found, form, "cancel", [("cancel-confirm", message)])
    document = {
        "alert": await _cancel_document(request, summary),
        "audience": {"stakeholders": recipients},
    }
    try:
        await submit_send(request, found.principal, document)
    except ApiError as error:
        if error.status >= 500:
            raise
        return await _refused(request, found, form, "cancel", [("cancel-confirm", error.message)])
    raise _done(summary["id"], "cancelled")


async def send_follow_up(request: web.Request) -> web.StreamResponse:
    """POST /console/alerts/{id}/follow-up: the alert again to those who have not
    acknowledged it, on the channels that reached them."""
    found, _form = await changer(request, Role.ADMIN)
    report = await _readable(request, found)
    controls = request.app[CONTROLS]
    made = await follow_up(
        controls.database, report["alert"]["id"], found.principal.actor, controls.clock()
    )
    if made.recipients:
        await controls.dispatch(made.rows, made.urgent)
    raise _done(report["alert"]["id"], "followed-up" if made.recipients else "nobody")


def add_alert_action_routes(app: web.Application) -> None:
    for action, handler in (
        ("acknowledge", acknowledge),
        ("release", release),
        ("cancel", cancel),
        ("follow-up", send_follow_up),
    ):
        app.router.add_post(f"/console/alerts/{{id}}/{action}", handler)
