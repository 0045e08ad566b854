"""The rule editor: a subscription's rule as JSON with its channels and options, and before
saving, which recent alerts the rule would have matched for its stakeholder, with the count.
The preview is `dissemination.api.rulepreview.preview_rule` (the service's parser and
matcher predicate over stored alerts), bounded by the viewer's clearance: an alert above it
appears only as its marks. Saving goes through the admin API's `create_entity` and
`update_entity`."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from multidict import MultiDictProxy

from core.errors import ErrorDetail, RejectedInput
from core.strictjson import loads_strict
from dissemination.api.app import RUNTIME
from dissemination.api.directory import create_entity, update_entity
from dissemination.api.errors import ApiError
from dissemination.api.needtoknow import NeedToKnow
from dissemination.api.rulepreview import RuleQuestion, preview_rule
from dissemination.api.tokens import Role
from dissemination.console.auth import Viewer, changer, viewer
from dissemination.console.directory import CHANNELS, admin, directory_page, path_id
from dissemination.console.formerrors import FormErrors, from_refusal
from dissemination.directory.store import STAKEHOLDER, SUBSCRIPTION

MAX_RULE_BYTES = 64 * 1024
RULE_FIELDS = {
    "rule": "rule",
    "channels": "channels",
    "ackRequired": "ack_required",
    "includeExercises": "include_exercises",
    "enabled": "enabled",
}


@dataclass
class RuleForm:
    """What the editor's form holds, as typed."""

    rule_text: str = "{}"
    channels: list[str] = field(default_factory=lambda: ["email"])
    ack_required: bool = False
    include_exercises: bool = False
    enabled: bool = True

    @classmethod
    def of_record(cls, record: dict[str, Any]) -> RuleForm:
        return cls(
            json.dumps(record["rule"], indent=2, sort_keys=True),
            list(record["channels"]),
            bool(record["ackRequired"]),
            bool(record["includeExercises"]),
            bool(record["enabled"]),
        )

    @classmethod
    def of_form(cls, form: MultiDictProxy[str]) -> RuleForm:
        return cls(
            form.get("rule", ""),
            [c for c in form.getall("channels", []) if c in CHANNELS],
            form.get("ack_required") == "on",
            form.get("include_exercises") == "on",
            form.get("enabled") == "on",
        )

    def rule(self) -> dict[str, Any]:
        """The rule as a JSON object; ApiError 422 against the rule field otherwise."""
        try:
            document = loads_strict(self.rule_text.encode(), max_bytes=MAX_RULE_BYTES)
        except RejectedInput as rejected:
            message = f"The rule is not valid JSON: {rejected}"
            raise ApiError(422, "invalid_json", message, [ErrorDetail("$", message)]) from None
        if not isinstance(document, dict):
            message = 'The rule must be a JSON object, such as {} or {"kinds": ["bolo"]}'
            raise ApiError(422, "schema_violation", message, [ErrorDetail("$", message)])
        return document

    def fields(self) -> dict[str, Any]:
        return {
            "rule": self.rule(),
            "channels": self.channels,
            "ackRequired": self.ack_required,
            "includeExercises": self.include_exercises,
            "enabled": self.enabled,
        }


async def _preview(
    request: web.Request, seen: Viewer, stakeholder_id: str, form: RuleForm
) -> tuple[dict[str, Any] | None, FormErrors]:
    """The preview of the form's rule, or the problems that keep it from running."""
    try:
        question = RuleQuestion(stakeholder_id, form.rule(), form.include_exercises)
        answer = await preview_rule(
            request.app[RUNTIME], admin(request), NeedToKnow.of(seen.principal), question
        )
    except ApiError as refused:
        return None, from_refusal(refused, RULE_FIELDS, whole="rule")
    return answer, FormErrors()


async def _editor(
    request: web.Request,
    seen: Viewer,
    stakeholder: dict[str, Any],
    subscription: dict[str, Any] | None,
    form: RuleForm,
    *,
    errors: FormErrors | None = None,
    status: int = 200,
) -> web.Response:
    preview, problems = await _preview(request, seen, stakeholder["id"], form)
    shown = errors if errors else problems
    if shown and status == 200:
        status = 422
    action = (
        f"/console/directory/subscriptions/{subscription['id']}"
        if subscription is not None
        else f"/console/directory/stakeholders/{stakeholder['id']}/subscriptions"
    )
    return directory_page(
        request,
        "rule_editor.html.j2",
        seen,
        title="Subscription rule",
        stakeholder=stakeholder,
        subscription=subscription,
        form=form,
        channels=CHANNELS,
        errors=shown,
        preview=preview,
        action=action,
        status=status,
    )


async def _stakeholder(request: web.Request, stakeholder_id: str) -> dict[str, Any]:
    record = await admin(request).directory.get(STAKEHOLDER, stakeholder_id)
    if record is None:
        raise ApiError(404, "not_found", f"no stakeholder {stakeholder_id!r}")
    return record


async def _subscription(request: web.Request) -> dict[str, Any]:
    subscription_id = path_id(request, "subscription")
    record = await admin(request).directory.get(SUBSCRIPTION, subscription_id)
    if record is None:
        raise ApiError(404, "not_found", f"no subscription {subscription_id!r}")
    return record


async def new_subscription_page(request: web.Request) -> web.Response:
    seen = await viewer(request, Role.ADMIN)
    stakeholder = await _stakeholder(request, path_id(request, "stakeholder"))
    return await _editor(request, seen, stakeholder, None, RuleForm())


async def create_subscription(request: web.Request) -> web.Response:
    seen, posted = await changer(request, Role.ADMIN)
    stakeholder = await _stakeholder(request, path_id(request, "stakeholder"))
    form = RuleForm.of_form(posted)
    if posted.get("action") != "save":
        return await _editor(request, seen, stakeholder, None, form)
    try:
        document = form.fields() | {"stakeholderId": stakeholder["id"]}
        await create_entity(admin(request), SUBSCRIPTION, document, seen.principal.actor)
    except ApiError as refused:
        errors = from_refusal(refused, RULE_FIELDS, whole="rule")
        return await _editor(request, seen, stakeholder, None, form, errors=errors)
    raise web.HTTPSeeOther(f"/console/directory/stakeholders/{stakeholder['id']}?saved=1")


async def subscription_page(request: web.Request) -> web.Response:
    seen = await viewer(request)
    record = await _subscription(request)
    stakeholder = await _stakeholder(request, record["stakeholderId"])
    return await _editor(request, seen, stakeholder, record, RuleForm.of_record(record))


async def change_subscription(request: web.Request) -> web.Response:
    seen, posted = await changer(request)
    record = await _subscription(request)
    stakeholder = await _stakeholder(request, record["stakeholderId"])
    form = RuleForm.of_form(posted)
    if posted.get("action") != "save":
        return await _editor(request, seen, stakeholder, record, form)
    if not seen.may(Role.ADMIN):
        raise ApiError(403, "forbidden", "your role may not change subscriptions")
    try:
        await update_entity(
            admin(request), SUBSCRIPTION, record["id"], form.fields(), seen.principal.actor
        )
    except ApiError as refused:
        if refused.status == 404:
            raise
        errors = from_refusal(refused, RULE_FIELDS, whole="rule")
        return await _editor(request, seen, stakeholder, record, form, errors=errors)
    raise web.HTTPSeeOther(f"/console/directory/stakeholders/{stakeholder['id']}?saved=1")


def add_rule_editor_routes(app: web.Application) -> None:
    """The rule editor for a new subscription of a stakeholder, and for an existing one."""
    app.router.add_get(
        "/console/directory/stakeholders/{id}/subscriptions/new",
        new_subscription_page,
        allow_head=False,
    )
    app.router.add_post("/console/directory/stakeholders/{id}/subscriptions", create_subscription)
    app.router.add_get("/console/directory/subscriptions/{id}", subscription_page, allow_head=False)
    app.router.add_post("/console/directory/subscriptions/{id}", change_subscription)
