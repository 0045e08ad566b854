"""Which recent alerts a subscription rule would have selected, before it is saved (the
console's rule editor asks; `POST /api/v1/match` answers the other way round, who an alert
reaches):

- `POST /api/v1/match/rule` (any staff role): `{"stakeholderId", "rule", "includeExercises"?,
  "limit"?}` → `{"considered", "matched", "alerts": [...], "withheld"?}`.

The recent alerts are re-parsed from their stored payloads as intake parses them and run
through the service's own matcher predicate (`Matcher.rule_selects`, what `match` applies to
each candidate, with the stakeholder's jurisdiction and lists): the preview is what matching
would have done, not a copy of it. An alert above the reader's clearance is not tried at all,
only counted (`withheld`): whether a rule of the reader's own words selects it would tell its
content one guess at a time. Nothing is stored.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from core.alert import Alert
from core.errors import ErrorDetail, RejectedInput
from dissemination.api.app import RUNTIME, Runtime, authenticate
from dissemination.api.directory import Admin, admin_of, check_rule_lists
from dissemination.api.errors import ApiError
from dissemination.api.needtoknow import NeedToKnow, listing_withheld
from dissemination.api.requests import json_body
from dissemination.api.tokens import READERS
from dissemination.ledger.recent import StoredAlert, recent_alerts
from subscriptions.codec import subscription_model, validate_subscription

DEFAULT_RECENT = 50
MAX_RECENT = 200
PREVIEW_FIELDS = {"stakeholderId", "rule", "includeExercises", "limit"}


@dataclass(frozen=True, slots=True)
class RuleQuestion:
    """A rule to try: for which stakeholder, with or without exercises, over how many of the
    most recent alerts."""

    stakeholder_id: str
    rule: Mapping[str, Any]
    include_exercises: bool = False
    limit: int = DEFAULT_RECENT


def rule_question(body: Any) -> RuleQuestion:
    """The question from a request body; ApiError 422 naming the field otherwise."""
    if not isinstance(body, dict):
        raise ApiError(422, "schema_violation", "the body must be a JSON object")
    unknown = sorted(set(body) - PREVIEW_FIELDS)
    if unknown or "stakeholderId" not in body or "rule" not in body:
        details = [ErrorDetail(f"$.{n}", "not a field of this body") for n in unknown]
        details += [ErrorDetail(f"$.{n}", "required") for n in ("stakeholderId", "rule")
                    if n not in body]  # fmt: skip
        raise ApiError(422, "schema_violation", "the body needs stakeholderId and rule", details)
    limit = body.get("limit", DEFAULT_RECENT)
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_RECENT:
        message = f"limit must be a whole number from 1 to {MAX_RECENT}"
        raise ApiError(422, "schema_violation", message, [ErrorDetail("$.limit", message)])
    exercises = body.get("includeExercises", False)
    if not isinstance(exercises, bool):
        message = "includeExercises must be true or false"
        raise ApiError(
            422, "schema_violation", message, [ErrorDetail("$.includeExercises", message)]
        )
    if not isinstance(body["stakeholderId"], str):
        message = "stakeholderId must be a stakeholder's id"
        raise ApiError(422, "schema_violation", message, [ErrorDetail("$.stakeholderId", message)])
    return RuleQuestion(body["stakeholderId"], body["rule"], exercises, limit)


def _parsed(runtime: Runtime, stored: StoredAlert) -> Alert | None:
    """The stored alert as intake parses its payload now; None if it no longer parses."""
    try:
        found = runtime.processor.parse(stored.payload)
    except RejectedInput:
        return None
    return next((alert for alert in found if alert.id == stored.id), None)


def _shown(alert: Alert, stored: StoredAlert) -> dict[str, Any]:
    return {
        "id": alert.id,
        "kind": alert.kind.value,
        "status": alert.status.value,
        "msgType": alert.msg_type.value,
        "handling": {"tlp": alert.handling.tlp.value, "caveats": list(alert.handling.caveats)},
        "receivedAt": stored.received_at.isoformat(),
        "sender": alert.sender,
        "identifier": alert.identifier,
        "headline": alert.headline,
    }


async def preview_rule(
    runtime: Runtime, admin: Admin, reader: NeedToKnow, question: RuleQuestion
) -> dict[str, Any]:
    """The recent alerts the rule would have selected for the stakeholder, newest first;
    ApiError 422 for an invalid rule or an unknown stakeholder or list."""
    draft = {
        "stakeholderId": question.stakeholder_id,
        "rule": question.rule,
        "channels": ["email"],  # channels do not select alerts; the schema wants one
        "includeExercises": question.include_exercises,
    }
    try:
        fields = validate_subscription(draft)
    except RejectedInput as rejected:
        raise ApiError.from_rejection(rejected) from None
    if admin.matcher.stakeholder(question.stakeholder_id) is None:
        raise ApiError(
            422,
            "unknown_stakeholder",
            "no such stakeholder",
            [ErrorDetail("$.stakeholderId", f"no stakeholder {question.stakeholder_id!r}")],
        )
    await check_rule_lists(admin, fields["rule"])
    subscription = subscription_model(fields | {"id": "preview", "enabled": True})
    considered, matched, untried = 0, [], 0
    for stored in await recent_alerts(runtime.database, question.limit):
        alert = _parsed(runtime, stored)
        if alert is None:
            continue
        if reader.refusal(alert.handling) is not None:
            untried += 1
            continue
        considered += 1
        if admin.matcher.rule_selects(alert, subscription):
            matched.append(_shown(alert, stored))
    body: dict[str, Any] = {"considered": considered, "matched": len(matched), "alerts": matched}
    left_out = listing_withheld(untried)
    if left_out:
        body["withheld"] = left_out
    return body


async def match_rule(request: web.Request) -> web.Response:
    """POST /api/v1/match/rule: the preview for any staff role."""
    reader = NeedToKnow.of(await authenticate(request, *READERS))
    question = rule_question(await json_body(request))
    answer = await preview_rule(request.app[RUNTIME], admin_of(request), reader, question)
    return web.json_response(answer)


def add_rule_preview_routes(app: web.Application) -> None:
    """The route above; `add_admin_routes` must have run (it shares its `Admin`)."""
    app.router.add_post("/api/v1/match/rule", match_rule)
