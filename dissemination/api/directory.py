"""The admin API: stakeholders, contacts, subscriptions and escalation policies (create, read,
list, update, delete; bulk import and export in `dissemination.api.bulk`), the audit log,
and the matching dry run. Every change is validated, audited in its own transaction, then applied to
the in-process matcher."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from channels.destinations import IPNetwork
from core.clock import utc_now
from core.errors import ErrorDetail, RejectedInput
from dissemination.api.app import RUNTIME, authenticate
from dissemination.api.errors import ApiError
from dissemination.api.needtoknow import NeedToKnow, above_clearance, redact_audit
from dissemination.api.requests import (
    bool_param,
    bounded_int,
    json_body,
    limit_param,
    optional_text_param,
    text_param,
)
from dissemination.api.tokens import READERS, Role
from dissemination.directory.lists import DistributionLists
from dissemination.directory.store import (
    CONTACT,
    ESCALATION,
    STAKEHOLDER,
    SUBSCRIPTION,
    Directory,
    EntitySpec,
)
from dissemination.directory.sync import apply_change, load_into
from dissemination.ledger.alerts import Payload
from dissemination.ledger.progress import ProgressStore
from dissemination.store.audit import Actor, AuditLog
from dissemination.store.tables import subscriptions as subscriptions_table
from subscriptions.codec import (
    validate_contact,
    validate_escalation,
    validate_stakeholder,
    validate_subscription,
)
from subscriptions.matcher import Matcher

MAX_AUDIT_ID = 2**31 - 1  # audit_log.id is a 32-bit INTEGER on PostgreSQL
IMMUTABLE = {"contact": ("stakeholderId", "channel"), "subscription": ("stakeholderId",)}


@dataclass(slots=True)
class Admin:
    """What the admin handlers share: the directory, the matcher and the audit log."""

    directory: Directory
    matcher: Matcher
    audit: AuditLog
    allowed_networks: tuple[IPNetwork, ...]


ADMIN = web.AppKey("admin", Admin)


def admin_of(request: web.Request) -> Admin:
    return request.app[ADMIN]


async def actor_of(request: web.Request, *roles: Role) -> Actor:
    return (await authenticate(request, *roles)).actor


def entity_id_param(request: web.Request, spec: EntitySpec) -> str:
    entity_id = request.match_info["id"]
    if "\x00" in entity_id:
        raise ApiError(404, "not_found", f"no {spec.name} {entity_id!r}")
    return entity_id


@contextmanager
def unique_contacts(path: str) -> Iterator[None]:
    """A contact that repeats another's stakeholder, channel and address is refused."""
    try:
        yield
    except IntegrityError:
        raise ApiError(
            422,
            "duplicate_contact",
            "the stakeholder already has this address on this channel",
            [ErrorDetail(path, "duplicate contact")],
        ) from None


def json_object(document: Any) -> dict[str, Any]:
    if not isinstance(document, dict):
        raise ApiError(422, "schema_violation", "the body must be a JSON object")
    return document


async def validated_fields(
    admin: Admin, spec: EntitySpec, document: Mapping[str, Any]
) -> dict[str, Any]:
    """Validate entity fields (schema and semantic checks) and the stakeholder they name."""
    try:
        if spec is STAKEHOLDER:
            return validate_stakeholder(document)
        if spec is ESCALATION:
            fields = validate_escalation(document)
            await check_supervisors(admin, fields)
            return fields
        if spec is CONTACT:
            fields = await validate_contact(document, admin.allowed_networks)
        else:
            fields = validate_subscription(document)
    except RejectedInput as rejected:
        raise ApiError.from_rejection(rejected) from None
    if not await admin.directory.exists(STAKEHOLDER, fields["stakeholderId"]):
        raise ApiError(
            422,
            "unknown_stakeholder",
            "no such stakeholder",
            [ErrorDetail("$.stakeholderId", f"no stakeholder {fields['stakeholderId']!r}")],
        )
    if spec is SUBSCRIPTION:
        await check_rule_lists(admin, fields["rule"])
        await check_escalation(admin, fields)
    return fields


async def check_rule_lists(admin: Admin, rule: Mapping[str, Any], path: str = "$") -> None:
    """A rule names only distribution lists that exist (`path`: the subscription's)."""
    named = rule.get("lists") or ()
    unknown = set(await DistributionLists(admin.directory.database).unknown(named))
    if unknown:
        raise ApiError(
            422,
            "unknown_list",
            "no such distribution list",
            [
                ErrorDetail(f"{path}.rule.lists[{i}]", f"no distribution list {list_id!r}")
                for i, list_id in enumerate(named)
                if list_id in unknown
            ],
        )


async def check_escalation(admin: Admin, fields: Mapping[str, Any], path: str = "$") -> None:
    """A subscription names only an escalation policy that exists (`path`: the
    subscription's)."""
    escalation_id = fields.get("escalationId")
    if escalation_id and not await admin.directory.exists(ESCALATION, escalation_id):
        raise ApiError(
            422,
            "unknown_escalation",
            "no such escalation policy",
            [ErrorDetail(f"{path}.escalationId", f"no escalation policy {escalation_id!r}")],
        )


async def check_policy_unused(admin: Admin, policy_id: str) -> None:
    """An escalation policy that subscriptions still name is not deleted (409
    `policy_in_use`, naming them): that would end their escalation without a word, so the
    administrator decides, as for a distribution list in use."""
    table = subscriptions_table
    async with admin.directory.database.reading() as conn:
        users = await conn.scalars(
            select(table.c.id).where(table.c.escalation_id == policy_id).order_by(table.c.id)
        )
        details = [ErrorDetail(f"subscription {sub_id}", "names this policy") for sub_id in users]
    if details:
        rejected = RejectedInput("policy_in_use", details)
        raise ApiError(409, rejected.reason, str(rejected), rejected.errors)


async def check_supervisors(admin: Admin, fields: Mapping[str, Any]) -> None:
    for index, step in enumerate(fields["steps"]):
        for position, supervisor in enumerate(step.get("supervisors", ())):
            if not await admin.directory.exists(STAKEHOLDER, supervisor):
                raise ApiError(
                    422,
                    "unknown_stakeholder",
                    "no such stakeholder",
                    [
                        ErrorDetail(
                            f"$.steps[{index}].supervisors[{position}]",
                            f"no stakeholder {supervisor!r}",
                        )
                    ],
                )


def stored_fields(spec: EntitySpec, record: Mapping[str, Any]) -> dict[str, Any]:
    return {name: record[name] for name in spec.fields}


async def create_entity(
    admin: Admin, spec: EntitySpec, document: Mapping[str, Any], actor: Actor
) -> tuple[dict[str, Any], str | None]:
    """Validate, store (audited) and apply to the matcher a new entity: its record and, for a
    webhook contact, its signing secret; ApiError 422 naming the fields otherwise."""
    fields = await validated_fields(admin, spec, document)
    with unique_contacts("$.address"):
        try:
            record, secret = await admin.directory.create(spec, fields, actor, utc_now())
        except RejectedInput as rejected:
            raise ApiError.from_rejection(rejected) from None
    apply_change(admin.matcher, spec, record, record["id"])
    return record, secret


async def update_entity(
    admin: Admin, spec: EntitySpec, entity_id: str, changes: Mapping[str, Any], actor: Actor
) -> dict[str, Any]:
    """Change some fields of an entity (validated as a whole, audited, applied to the
    matcher): its new record; ApiError 404 if it is gone, 422 naming the fields otherwise."""
    current = await admin.directory.get(spec, entity_id)
    if current is None:
        raise ApiError(404, "not_found", f"no {spec.name} {entity_id!r}")
    for name in IMMUTABLE.get(spec.name, ()):
        if name in changes and changes[name] != current[name]:
            raise ApiError(
                422,
                "immutable_field",
                f"{name} cannot change",
                [ErrorDetail(f"$.{name}", "immutable")],
            )
    fields = await validated_fields(admin, spec, stored_fields(spec, current) | dict(changes))
    with unique_contacts("$.address"):
        record = await admin.directory.update(spec, entity_id, fields, actor, utc_now())
    if record is None:
        raise ApiError(404, "not_found", f"no {spec.name} {entity_id!r}")
    apply_change(admin.matcher, spec, record, entity_id)
    return record


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def crud_handlers(spec: EntitySpec) -> dict[str, Handler]:
    """The five CRUD handlers for one entity kind (one function that defines five short
    closures over `spec`, hence its length)."""

    async def create(request: web.Request) -> web.Response:
        actor = await actor_of(request, Role.ADMIN)
        document = json_object(await json_body(request))
        record, secret = await create_entity(admin_of(request), spec, document, actor)
        body = record | ({"signingSecret": secret} if secret else {})
        return web.json_response(body, status=201)

    async def read(request: web.Request) -> web.Response:
        await actor_of(request, *READERS)
        entity_id = entity_id_param(request, spec)
        record = await admin_of(request).directory.get(spec, entity_id)
        if record is None:
            raise ApiError(404, "not_found", f"no {spec.name} {entity_id!r}")
        return web.json_response(record)

    async def list_(request: web.Request) -> web.Response:
        await actor_of(request, *READERS)
        filters: dict[str, Any] = {}
        for name, value in request.query.items():
            if name in ("limit", "after"):
                continue
            if name not in spec.filters:
                raise ApiError(400, "invalid_parameter", f"unknown filter {name!r}")
            filters[name] = (
                bool_param(name, value)
                if name in ("active", "enabled")
                else text_param(name, value)
            )
        after = text_param("after", request.query.get("after", ""))
        page = await admin_of(request).directory.page(spec, filters, after, limit_param(request))
        return web.json_response({"items": page.items, "next": page.next_cursor})

    async def patch(request: web.Request) -> web.Response:
        actor = await actor_of(request, Role.ADMIN)
        entity_id = entity_id_param(request, spec)
        changes = json_object(await json_body(request))
        return web.json_response(
            await update_entity(admin_of(request), spec, entity_id, changes, actor)
        )

    async def remove(request: web.Request) -> web.Response:
        actor = await actor_of(request, Role.ADMIN)
        admin = admin_of(request)
        entity_id = entity_id_param(request, spec)
        if spec is ESCALATION and await admin.directory.exists(spec, entity_id):
            await check_policy_unused(admin, entity_id)
        deleted = await admin.directory.delete(spec, entity_id, actor, utc_now())
        if deleted is None:
            raise ApiError(404, "not_found", f"no {spec.name} {entity_id!r}")
        for deleted_spec, deleted_id in deleted:
            apply_change(admin.matcher, deleted_spec, None, deleted_id)
        return web.Response(status=204)

    return {"create": create, "read": read, "list": list_, "patch": patch, "delete": remove}


async def audit_entries(request: web.Request) -> web.Response:
    """GET /api/v1/audit: entries about an alert above a staff account's clearance lose
    their content (`needtoknow.redact_audit`)."""
    reader = NeedToKnow.of(await authenticate(request, Role.ADMIN))
    after = bounded_int(request.query.get("after", "0"), 0, MAX_AUDIT_ID)
    if after is None:
        raise ApiError(400, "invalid_parameter", "after must be an audit entry id")
    shown = await readable_audit(
        admin_of(request),
        reader,
        after_id=after,
        limit=limit_param(request),
        entity=optional_text_param(request, "entity"),
        entity_id=optional_text_param(request, "entityId"),
    )
    following = str(shown[-1]["id"]) if shown else None
    return web.json_response({"items": shown, "next": following})


async def readable_audit(admin: Admin, reader: NeedToKnow, **filters: Any) -> list[dict[str, Any]]:
    """A page of the audit log (`AuditLog.entries` filters), entries about an alert above the
    reader's clearance redacted. The API and the console's audit page read through here."""
    entries = await admin.audit.entries(**filters)
    return await redact_audit(reader, ProgressStore(admin.audit.database), entries)


async def match_dry_run(request: web.Request) -> web.Response:
    """POST /api/v1/match: who would receive this alert, on which channel, by which rule, and
    who would be withheld and why. Nothing is stored or sent. 403 `above_clearance` if an
    alert is above the caller's clearance: its recipients are not the caller's to know."""
    reader = NeedToKnow.of(await authenticate(request, *READERS))
    runtime = request.app[RUNTIME]
    payload = Payload(await request.read(), request.headers.get("Content-Type", ""))
    try:
        alerts = runtime.processor.parse(payload)
    except RejectedInput as rejected:
        raise ApiError.from_rejection(rejected) from None
    for alert in alerts:
        refused = reader.refusal(alert.handling)
        if refused is not None:
            raise above_clearance("the recipients of this alert", refused)
    matcher = admin_of(request).matcher
    results = []
    for alert in alerts:
        result = matcher.match(alert)
        results.append(
            {
                "alertId": alert.id,
                "tlp": alert.handling.tlp.value,
                "caveats": list(alert.handling.caveats),
                "targets": [
                    {
                        "stakeholderId": t.stakeholder_id,
                        "subscriptionId": t.subscription_id,
                        "matchedSubscriptionIds": list(t.matched_subscription_ids),
                        "contactId": t.contact_id,
                        "channel": t.channel.value,
                        "address": t.address,
                        "fallbackChannels": [c.value for c in t.fallback_channels],
                        "ackRequired": t.ack_required,
                    }
                    for t in result.targets
                ],
                "withheld": [
                    {
                        "stakeholderId": w.stakeholder_id,
                        "subscriptionId": w.subscription_id,
                        "contactId": w.contact_id,
                        "channel": w.channel.value if w.channel else None,
                        "address": w.address,
                        "reason": w.reason,
                        "detail": w.detail,
                    }
                    for w in result.withheld
                ],
            }
        )
    return web.json_response({"alerts": results})


async def load_matcher(directory: Directory) -> Matcher:
    """A matcher built once from the whole directory."""
    matcher = Matcher()
    await load_into(matcher, directory)
    return matcher


def add_admin_routes(app: web.Application, admin: Admin) -> None:
    app[ADMIN] = admin
    for path, spec in (
        ("stakeholders", STAKEHOLDER),
        ("contacts", CONTACT),
        ("subscriptions", SUBSCRIPTION),
        ("escalations", ESCALATION),
    ):
        handlers = crud_handlers(spec)
        app.router.add_get(f"/api/v1/{path}", handlers["list"])
        app.router.add_post(f"/api/v1/{path}", handlers["create"])
        app.router.add_get(f"/api/v1/{path}/{{id}}", handlers["read"])
        app.router.add_patch(f"/api/v1/{path}/{{id}}", handlers["patch"])
        app.router.add_delete(f"/api/v1/{path}/{{id}}", handlers["delete"])
    app.router.add_get("/api/v1/audit", audit_entries)
    app.router.add_post("/api/v1/match", match_dry_run)
