"""Compose and send: an analyst picks a local kind, fills in the form generated from its
schema, the marks and the audience, asks for a dry run (who would receive it, who is
withheld and why: the planner of the real path, through the sends API's own function) and
sends it now or at a time. A refused submission comes back with everything typed and each
problem next to its field, so nothing is lost.

The console sends only Actual messages: the service delivers an Exercise, Test or System
message to a named audience as it delivers an Actual one (the audience opts in by being
named), and its email does not show the status; a dry run shows what would happen."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from aiohttp import web
from multidict import MultiDictProxy

from core.clock import parse_moment
from dissemination.api.directory import admin_of
from dissemination.api.errors import ApiError
from dissemination.api.needtoknow import NeedToKnow
from dissemination.api.sends import (
    COMPOSERS,
    alert_problems,
    cancel_scheduled,
    readable_send,
    submit_send,
)
from dissemination.console.auth import Viewer, changer, viewer
from dissemination.console.composeform import (
    KINDS,
    FormField,
    document_of,
    kind_fields,
    placed_errors,
    utc_text,
)
from dissemination.console.pages import TLP_LEVELS, render
from dissemination.directory.lists import DistributionLists
from dissemination.directory.store import STAKEHOLDER

COMPOSE_PATH = "/console/compose"
SENT_PATH = COMPOSE_PATH + "/sends/"
ACTIONS = {"dry-run", "send", "schedule"}
CHANNELS = ("email", "sms", "webhook")
MAX_LISTED_STAKEHOLDERS = 500
AUDIENCE_FIELDS = ("lists", "stakeholders", "channels")
NOT_SENT_STATUSES = "The console sends only Actual messages"
DEFAULTS = {"status": "Actual", "msgType": "Alert", "scope": "Restricted", "tlp": "AMBER"}


def _kind(value: str | None) -> str:
    if value not in KINDS:
        raise ApiError(404, "unknown_kind", f"there is no alert kind {value!r} to compose")
    return value


async def _audience_choices(request: web.Request) -> dict[str, Any]:
    directory = admin_of(request).directory
    lists = await DistributionLists(directory.database).all()
    stakeholders = sorted(await directory.all(STAKEHOLDER), key=lambda s: s["name"].lower())
    return {
        "lists": [{"id": dl["id"], "name": dl["name"]} for dl in lists],
        "stakeholders": stakeholders[:MAX_LISTED_STAKEHOLDERS],
        "more_stakeholders": max(0, len(stakeholders) - MAX_LISTED_STAKEHOLDERS),
    }


def _names(kind: str) -> list[str]:
    return [f.name for f in kind_fields(kind)] + ["sender", "tlp", "caveats", "sendAt"]


async def _form_page(
    request: web.Request,
    found: Viewer,
    kind: str,
    values: Mapping[str, str],
    chosen: Mapping[str, list[str]],
    *,
    errors: Sequence[tuple[str | None, str]] = (),
    plan: dict[str, Any] | None = None,
    status: int = 200,
) -> web.Response:
    field_errors: dict[str, str] = {}
    for name, message in errors:
        if name is not None:
            field_errors.setdefault(name, message)
    account = found.principal.account
    return render(
        request,
        "compose.html.j2",
        found,
        status=status,
        title=f"Compose: {KINDS[kind]}",
        kind=kind,
        kind_label=KINDS[kind],
        sections=_sections(kind),
        values=values,
        chosen=chosen,
        errors=[(name or "", message) for name, message in errors],
        field_errors=field_errors,
        senders=list(found.principal.senders) if account is not None else [],
        tlp_levels=TLP_LEVELS,
        channels=CHANNELS,
        plan=plan,
        names=stakeholder_names(request),
        **await _audience_choices(request),
    )


def _sections(kind: str) -> list[tuple[str, list[FormField]]]:
    """The kind's fields for fieldsets: the alert's own values first, then each group (the
    issuing agency, the first subject, …) in the schema's order."""
    sections: dict[str, list[FormField]] = {"The alert": []}
    for form_field in kind_fields(kind):
        sections.setdefault(form_field.group or "The alert", []).append(form_field)
    return list(sections.items())


def stakeholder_names(request: web.Request) -> Any:
    """A function from a stakeholder's id to its name (the id if it is gone)."""
    matcher = admin_of(request).matcher

    def name(stakeholder_id: str) -> str:
        found = matcher.stakeholder(stakeholder_id)
        return found.name if found is not None else stakeholder_id

    return name


async def compose_page(request: web.Request) -> web.Response:
    """GET /console/compose: the kinds to choose from; with ?kind=, that kind's form."""
    found = await viewer(request, *COMPOSERS)
    if "kind" not in request.query:
        return render(request, "compose-kinds.html.j2", found, title="Compose", kinds=KINDS)
    kind = _kind(request.query.get("kind"))
    chosen = {"channels": list(CHANNELS)}
    return await _form_page(request, found, kind, DEFAULTS, chosen)


def _chosen(form: MultiDictProxy[str], kind: str) -> dict[str, list[str]]:
    names = [*AUDIENCE_FIELDS, *(f.name for f in kind_fields(kind) if f.widget == "choices")]
    return {name: form.getall(name, []) for name in names}


def _request_body(
    kind: str, form: Mapping[str, str], chosen: Mapping[str, list[str]], action: str
) -> tuple[dict[str, Any], list[tuple[str | None, str]]]:
    """The send request the form makes, and the problems found before the schema looks."""
    alert = document_of(kind, form, chosen)
    handling: dict[str, Any] = {}
    if form.get("tlp"):
        handling["tlp"] = form["tlp"]
    caveats = [c.strip() for c in form.get("caveats", "").replace(";", ",").split(",")]
    if any(caveats):
        handling["caveats"] = [c for c in caveats if c]
    if handling:
        alert["handling"] = handling
    if form.get("sender"):
        alert["sender"] = form["sender"]
    audience: dict[str, Any] = {k: v for k, v in chosen.items() if k in AUDIENCE_FIELDS and v}
    if form.get("ackRequired"):
        audience["ackRequired"] = True
    body: dict[str, Any] = {"alert": alert, "audience": audience}
    problems: list[tuple[str | None, str]] = []
    if action == "dry-run":
        body["dryRun"] = True
    elif alert.get("status") != "Actual":
        problems.append(
            (
                "status",
                f"{NOT_SENT_STATUSES}: the service would deliver this "
                f"{alert.get('status', 'unmarked')} message to its audience like an Actual "
                "one, and its email does not show the status. Use a dry run to rehearse.",
            )
        )
    if action == "schedule":
        when = form.get("sendAt", "").strip()
        if not when:
            problems.append(("sendAt", "Choose the date and time (UTC) to send at"))
        elif parse_moment(utc_text(when)) is None:
            problems.append(("sendAt", "Enter the date and time to send at, e.g. 2026-12-06T14:30"))
        else:
            body["sendAt"] = utc_text(when)
    return body, problems


async def compose(request: web.Request) -> web.Response:
    """POST /console/compose: a dry run (the page again, with the plan) or a send (to the
    send's page); a refusal shows the form again as it was filled in, with the problems."""
    found, form = await changer(request, *COMPOSERS)
    kind = _kind(form.get("kind"))
    action = form.get("action", "")
    chosen = _chosen(form, kind)
    values = dict(form)
    if action not in ACTIONS:
        problem: list[tuple[str | None, str]] = [(None, f"unknown action {action[:40]!r}")]
        return await _form_page(request, found, kind, values, chosen, errors=problem, status=400)
    body, problems = _request_body(kind, values, chosen, action)
    names = _names(kind)
    problems += placed_errors(alert_problems(request, found.principal, body["alert"]), names)
    if not body["audience"].keys() & {"lists", "stakeholders"}:
        problems.append(("audience", "Choose at least one distribution list or stakeholder"))
    if problems:
        return await _form_page(request, found, kind, values, chosen, errors=problems, status=422)
    try:
        status, answer = await submit_send(request, found.principal, body)
    except ApiError as error:
        errors = placed_errors(error.details, names) or [(None, error.message)]
        return await _form_page(
            request, found, kind, values, chosen, errors=errors, status=error.status
        )
    if status == 200:
        return await _form_page(request, found, kind, values, chosen, plan=answer)
    raise web.HTTPSeeOther(SENT_PATH + str(answer["id"]))


async def sent_page(request: web.Request) -> web.Response:
    """GET /console/compose/sends/{id}: what became of a send (released, scheduled, …)."""
    found = await viewer(request, *COMPOSERS)
    record = await readable_send(request, NeedToKnow.of(found.principal), _send_id(request))
    return render(
        request,
        "compose-sent.html.j2",
        found,
        title=f"Send {record['state']}",
        send=record,
        names=stakeholder_names(request),
        list_names={dl["id"]: dl["name"] for dl in (await _audience_choices(request))["lists"]},
    )


async def cancel_send(request: web.Request) -> web.Response:
    """POST /console/compose/sends/{id}/cancel: a scheduled send is not sent after all."""
    found, _form = await changer(request, *COMPOSERS)
    send_id = _send_id(request)
    await cancel_scheduled(request, found.principal, send_id)
    raise web.HTTPSeeOther(SENT_PATH + send_id)


def _send_id(request: web.Request) -> str:
    send_id = request.match_info["id"]
    if len(send_id) > 36 or "\x00" in send_id:
        raise ApiError(404, "not_found", "no such send")
    return send_id


def add_compose_routes(app: web.Application) -> None:
    app.router.add_get(COMPOSE_PATH, compose_page, allow_head=False)
    app.router.add_post(COMPOSE_PATH, compose)
    app.router.add_get(SENT_PATH + "{id}", sent_page, allow_head=False)
    app.router.add_post(SENT_PATH + "{id}/cancel", cancel_send)
