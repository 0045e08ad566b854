"""Admin API of the dissemination controls that need a second person or a typed reason:

- `GET /api/v1/approvals?state=held` (admin): alerts held for approval, newest first.
- `POST /api/v1/alerts/{id}/approve` (admin, not the submitter): release a held alert,
  with an optional `{"comment": "..."}`.
- `POST /api/v1/alerts/{id}/reject` (admin, not the submitter): `{"reason": "..."}`; nothing
  is sent.
- `POST /api/v1/alerts/{id}/releases` (admin): an imminent-danger release to one stakeholder
  outside the rules, `{"stakeholderId", "justification", "channels"?}`.
- `GET /api/v1/releases?flagged=true` (admin): releases, those awaiting review first.
- `POST /api/v1/releases/{id}/review` (admin, not the releaser): `{"note": "..."}`.

The listings redact approvals and releases of alerts above a staff account's clearance
(`dissemination.api.needtoknow`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import structlog
from aiohttp import web

from channels.base import CHANNEL_NAMES
from core.clock import Clock
from core.errors import ErrorDetail
from dissemination.api.app import authenticate
from dissemination.api.errors import ApiError
from dissemination.api.needtoknow import NeedToKnow, listing_withheld, withheld
from dissemination.api.requests import json_body, limit_param
from dissemination.api.tokens import Role
from dissemination.broker.dispatch import DeliveryDispatcher
from dissemination.controls import approval, specialrelease
from dissemination.controls.approval import ApprovalState
from dissemination.errors import ControlRefused, PublishFailed
from dissemination.ledger.progress import ProgressStore
from dissemination.store.audit import Actor
from dissemination.store.database import Database

log = structlog.stdlib.get_logger(__name__)

TEXT_LIMITS = {"comment": (0, 500), "reason": (3, 500), "note": (3, 500)}
# What an approval or a release of an alert above the reader's clearance leaves out.
APPROVAL_CONTENT = ("rule", "reason")
RELEASE_CONTENT = ("stakeholderId", "justification", "deliveries")


def _path_id(request: web.Request, what: str) -> str:
    value = request.match_info["id"]
    if "\x00" in value:
        raise ApiError(404, "not_found", f"no {what} {value!r}")
    return value


def _violation(name: str, message: str) -> ApiError:
    return ApiError(422, "schema_violation", message, [ErrorDetail(f"$.{name}", message)])


def _fields(body: Any, required: set[str], optional: set[str]) -> dict[str, Any]:
    """The body's fields, checked: an object with `required` and only those or `optional`."""
    if not isinstance(body, dict) or not required <= set(body) <= required | optional:
        names = ", ".join(sorted(required)) or "no field"
        extra = f" (optional: {', '.join(sorted(optional))})" if optional else ""
        message = f"the body must be an object with {names}{extra}"
        raise ApiError(422, "schema_violation", message, _misfits(body, required, optional))
    return body


def _misfits(body: Any, required: set[str], optional: set[str]) -> list[ErrorDetail]:
    """Each missing or unknown field of an object body, by path."""
    if not isinstance(body, dict):
        return [ErrorDetail("$", "not an object")]
    missing = [ErrorDetail(f"$.{name}", "required") for name in sorted(required - set(body))]
    unknown = sorted(set(body) - required - optional)
    return missing + [ErrorDetail(f"$.{name}", "not a field of this body") for name in unknown]


def _text(fields: Mapping[str, Any], name: str, limits: tuple[int, int]) -> str | None:
    """The trimmed text of field `name`; None if it is absent. Present, it must be a string
    of the right length: null is no string."""
    if name not in fields:
        return None
    value = fields[name]
    low, high = limits
    if not isinstance(value, str) or not low <= len(value.strip()) <= high:
        raise _violation(name, f"{name} must be a string of {low} to {high} characters")
    return value.strip()


def _required_text(fields: Mapping[str, Any], name: str, limits: tuple[int, int]) -> str:
    text = _text(fields, name, limits)
    if text is None:
        raise _violation(name, f"{name} is required")
    return text


def _channels(fields: Mapping[str, Any]) -> list[str] | None:
    """The release's channels; None (all the stakeholder has) when the field is absent."""
    if "channels" not in fields:
        return None
    channels = fields["channels"]
    if (
        not isinstance(channels, list)
        or not channels
        or not all(isinstance(c, str) and c in CHANNEL_NAMES for c in channels)
    ):
        raise _violation("channels", f"channels must be a non-empty list of {CHANNEL_NAMES}")
    return channels


def decision_reason(body: Any, *, approve: bool) -> str | None:
    """The optional comment of an approval, or the required reason of a rejection, from a
    request body; ApiError 422 naming the field otherwise."""
    if approve:
        return _text(_fields(body, set(), {"comment"}), "comment", TEXT_LIMITS["comment"])
    return _required_text(_fields(body, {"reason"}, set()), "reason", TEXT_LIMITS["reason"])


@dataclass(frozen=True, slots=True)
class ReleaseRequest:
    """What an imminent-danger release asks for; `channels` None means all the stakeholder's."""

    stakeholder_id: str
    justification: str
    channels: list[str] | None


def release_request(body: Any) -> ReleaseRequest:
    """A release's fields from a request body; ApiError 422 naming the field otherwise."""
    fields = _fields(body, {"stakeholderId", "justification"}, {"channels"})
    justification = _required_text(fields, "justification", specialrelease.JUSTIFICATION_LENGTH)
    stakeholder_id = fields["stakeholderId"]
    if not isinstance(stakeholder_id, str) or not stakeholder_id:
        raise _violation("stakeholderId", "stakeholderId must be a stakeholder's id")
    return ReleaseRequest(stakeholder_id, justification, _channels(fields))


def review_note(body: Any) -> str:
    """A review's note from a request body; ApiError 422 naming the field otherwise."""
    return _required_text(_fields(body, {"note"}, set()), "note", TEXT_LIMITS["note"])


def _refused(error: ControlRefused) -> ApiError:
    return ApiError(error.status, error.code, error.message)


@dataclass
class ControlEndpoints:
    """Handlers over the ledger, with the dispatcher that publishes released rows."""

    database: Database
    dispatcher: DeliveryDispatcher
    clock: Clock

    async def _actor(self, request: web.Request, *roles: Role) -> Actor:
        return (await authenticate(request, *(roles or (Role.ADMIN,)))).actor

    async def dispatch(self, released: dict[str, list[str]], urgent: bool = False) -> bool:
        """Publish the released rows' tasks (onto the urgent queues if `urgent`); False if the
        broker did not confirm (the rows stay pending and the lost-task sweep publishes them
        once their queue is empty)."""
        try:
            await self.dispatcher.dispatch(released, urgent)
        except PublishFailed as error:
            log.warning("released_rows_not_dispatched", reason=str(error))
            return False
        return True

    async def redacted(
        self, reader: NeedToKnow, items: list[dict[str, Any]], content: tuple[str, ...]
    ) -> dict[str, Any]:
        """The listing's body: items about an alert above the reader's clearance lose their
        `content` fields and carry a `withheld` field instead."""
        refused = await reader.refusals(
            ProgressStore(self.database), {str(item["alertId"]) for item in items}
        )
        shown = []
        for item in items:
            reason = refused.get(str(item["alertId"]))
            if reason is not None:
                item = {k: v for k, v in item.items() if k not in content}
                item["withheld"] = withheld(reason, content)
            shown.append(item)
        body: dict[str, Any] = {"items": shown}
        left_out = listing_withheld(sum(1 for item in items if str(item["alertId"]) in refused))
        if left_out:
            body["withheld"] = left_out
        return body

    async def approvals(self, request: web.Request) -> web.Response:
        reader = NeedToKnow.of(await authenticate(request, Role.ADMIN, Role.APPROVER))
        raw = request.query.get("state")
        try:
            state = ApprovalState(raw) if raw is not None else None
        except ValueError:
            choices = ", ".join(s.value for s in ApprovalState)
            raise ApiError(400, "invalid_parameter", f"state must be one of {choices}") from None
        items = await approval.listing(self.database, state, limit_param(request))
        return web.json_response(await self.redacted(reader, list(items), APPROVAL_CONTENT))

    async def approve(self, request: web.Request) -> web.Response:
        return await self._decide(request, approve=True)

    async def reject(self, request: web.Request) -> web.Response:
        return await self._decide(request, approve=False)

    async def _decide(self, request: web.Request, *, approve: bool) -> web.Response:
        actor = await self._actor(request, Role.ADMIN, Role.APPROVER)
        alert_id = _path_id(request, "alert")
        reason = decision_reason(await json_body(request), approve=approve)
        return web.json_response(await self.decide(actor, alert_id, approve, reason))

    async def decide(
        self, actor: Actor, alert_id: str, approve: bool, reason: str | None
    ) -> dict[str, Any]:
        """Approve or reject a held alert and publish what approval released; ApiError when
        the control refuses (not held, decided already, the submitter deciding)."""
        try:
            decision = await approval.decide(
                self.database, alert_id, actor, approve, reason, self.clock()
            )
        except ControlRefused as error:
            raise _refused(error) from None
        released = decision.released
        dispatched = await self.dispatch(released, decision.urgent) if released else True
        return {
            "id": alert_id,
            "state": decision.state.value,
            "released": sum(len(ids) for ids in decision.released.values()),
            "dispatched": dispatched,
        }

    async def release(self, request: web.Request) -> web.Response:
        token = await authenticate(request, Role.ADMIN)
        alert_id = _path_id(request, "alert")
        wanted = release_request(await json_body(request))
        body = await self.release_for(alert_id, wanted, token.actor, NeedToKnow.of(token))
        return web.json_response(body, status=201)

    async def release_for(
        self, alert_id: str, wanted: ReleaseRequest, actor: Actor, reader: NeedToKnow
    ) -> dict[str, Any]:
        """Make an imminent-danger release and publish its rows (ApiError if refused: 403
        if the alert is above the `reader`'s clearance)."""
        await reader.require(ProgressStore(self.database), alert_id, "the alert")
        try:
            made = await specialrelease.release(
                self.database,
                alert_id,
                wanted.stakeholder_id,
                wanted.channels,
                wanted.justification,
                actor,
                self.clock(),
            )
        except ControlRefused as error:
            raise _refused(error) from None
        dispatched = await self.dispatch(made.deliveries, urgent=True)  # imminent danger
        return {
            "id": made.id,
            "alertId": alert_id,
            "deliveries": sorted(i for ids in made.deliveries.values() for i in ids),
            "flaggedForReview": True,
            "dispatched": dispatched,
        }

    async def releases(self, request: web.Request) -> web.Response:
        reader = NeedToKnow.of(await authenticate(request, Role.ADMIN))
        raw = request.query.get("flagged")
        if raw not in (None, "true", "false"):
            raise ApiError(400, "invalid_parameter", "flagged must be true or false")
        reviewed = None if raw is None else raw == "false"
        items = await specialrelease.listing(self.database, reviewed, limit_param(request))
        return web.json_response(await self.redacted(reader, items, RELEASE_CONTENT))

    async def review(self, request: web.Request) -> web.Response:
        actor = await self._actor(request)
        release_id = _path_id(request, "release")
        note = review_note(await json_body(request))
        await self.review_release(actor, release_id, note)
        return web.json_response({"id": release_id, "flaggedForReview": False})

    async def review_release(self, actor: Actor, release_id: str, note: str) -> None:
        """Mark a release reviewed; ApiError when the control refuses."""
        try:
            await specialrelease.review(self.database, release_id, note, actor, self.clock())
        except ControlRefused as error:
            raise _refused(error) from None


CONTROLS = web.AppKey("controls", ControlEndpoints)


def add_control_routes(app: web.Application, endpoints: ControlEndpoints) -> None:
    app[CONTROLS] = endpoints  # the console's pages decide and release through these
    app.router.add_get("/api/v1/approvals", endpoints.approvals, allow_head=False)
    app.router.add_post("/api/v1/alerts/{id}/approve", endpoints.approve)
    app.router.add_post("/api/v1/alerts/{id}/reject", endpoints.reject)
    app.router.add_post("/api/v1/alerts/{id}/releases", endpoints.release)
    app.router.add_get("/api/v1/releases", endpoints.releases, allow_head=False)
    app.router.add_post("/api/v1/releases/{id}/review", endpoints.review)
