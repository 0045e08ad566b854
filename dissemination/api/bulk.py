"""Bulk import and export of the directory: stakeholders with their contacts and
subscriptions as nested JSON (export output imports unchanged), and contacts as CSV. An
import is validated whole before anything is written, and written in one audited
transaction."""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from core.clock import utc_now
from core.errors import ErrorDetail, RejectedInput
from dissemination.api.directory import (
    Admin,
    actor_of,
    admin_of,
    check_escalation,
    check_rule_lists,
    json_object,
    unique_contacts,
    validated_fields,
)
from dissemination.api.errors import ApiError
from dissemination.api.requests import csv_cell, json_body
from dissemination.api.tokens import Role
from dissemination.directory.bulk import create_many_in
from dissemination.directory.store import CONTACT, STAKEHOLDER, SUBSCRIPTION, EntitySpec
from dissemination.directory.sync import apply_change
from dissemination.store.audit import Actor
from subscriptions.codec import validate_contact, validate_stakeholder, validate_subscription

PLACEHOLDER_OWNER = {"stakeholderId": "00000000-0000-0000-0000-000000000000"}
EXPORT_ONLY_FIELDS = ("id", "createdAt", "updatedAt", "stakeholderId")
CONTACT_CSV_COLUMNS = ("stakeholderId", "channel", "address", "label", "active")
ImportPlan = tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]]
"""One stakeholder to import: its fields, its contacts' and its subscriptions'."""


async def import_directory(request: web.Request) -> web.Response:
    """POST /api/v1/import: stakeholders with nested contacts and subscriptions, all or nothing.
    Takes what /api/v1/export gives: ids and timestamps in it are ignored, new ones are made."""
    actor = await actor_of(request, Role.ADMIN)
    admin = admin_of(request)
    document = json_object(await json_body(request))
    items = document.get("stakeholders")
    if set(document) != {"stakeholders"} or not isinstance(items, list):
        raise ApiError(422, "schema_violation", 'the body must be {"stakeholders": [...]}')
    plan = [await _import_plan(admin, index, item) for index, item in enumerate(items)]
    with unique_contacts("$.stakeholders"):
        created, applied = await _import_all(admin, plan, actor)
    for spec, record in applied:
        apply_change(admin.matcher, spec, record, record["id"])
    return web.json_response({"stakeholders": created}, status=201)


async def _import_all(
    admin: Admin, plan: list[ImportPlan], actor: Actor
) -> tuple[list[dict[str, Any]], list[tuple[EntitySpec, dict[str, Any]]]]:
    """Every stakeholder, then every contact, then every subscription, each kind in one
    insert (`create_many_in`), in one transaction."""
    now = utc_now()
    most = admin.directory.max_subscriptions
    async with admin.directory.database.transaction() as conn:
        holders = await create_many_in(conn, STAKEHOLDER, [s for s, _, _ in plan], actor, now)
        applied: list[tuple[EntitySpec, dict[str, Any]]] = [(STAKEHOLDER, r) for r, _ in holders]
        created: list[dict[str, Any]] = [
            {"id": record["id"], "contacts": [], "subscriptions": []} for record, _ in holders
        ]
        parts = (
            (CONTACT, "contacts", [contacts for _, contacts, _ in plan]),
            (SUBSCRIPTION, "subscriptions", [subscriptions for _, _, subscriptions in plan]),
        )
        for spec, key, of_each in parts:
            owners = [
                (summary, child | {"stakeholderId": summary["id"]})
                for summary, items in zip(created, of_each, strict=True)
                for child in items
            ]
            children = await create_many_in(conn, spec, [f for _, f in owners], actor, now, most)
            for (summary, _), (record, secret) in zip(owners, children, strict=True):
                applied.append((spec, record))
                summary[key].append(
                    {"id": record["id"]} | ({"signingSecret": secret} if secret else {})
                )
    return created, applied


def _importable(item: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in item.items() if k not in EXPORT_ONLY_FIELDS}


def _check_subscription_count(admin: Admin, path: str, item: Mapping[str, Any]) -> None:
    given = item.get("subscriptions")
    if isinstance(given, list) and len(given) > admin.directory.max_subscriptions:
        raise ApiError(
            422,
            "too_many_subscriptions",
            f"at most {admin.directory.max_subscriptions} subscriptions per stakeholder",
            [ErrorDetail(f"{path}.subscriptions", f"{len(given)} subscriptions")],
        )


async def _import_plan(admin: Admin, index: int, item: Any) -> ImportPlan:
    """Validate one imported stakeholder and its children; errors name the item's path."""
    path = f"$.stakeholders[{index}]"
    if not isinstance(item, dict):
        raise ApiError(
            422,
            "schema_violation",
            "each item must be an object",
            [ErrorDetail(path, "not an object")],
        )
    body = {k: v for k, v in _importable(item).items() if k not in ("contacts", "subscriptions")}
    try:
        stakeholder = validate_stakeholder(body)
    except RejectedInput as rejected:
        raise _item_error(path, rejected) from None
    children: dict[str, list[dict[str, Any]]] = {"contacts": [], "subscriptions": []}
    _check_subscription_count(admin, path, item)
    for key, validated in children.items():
        given = item.get(key, [])
        if not isinstance(given, list):
            raise ApiError(
                422,
                "schema_violation",
                f"{key} must be an array",
                [ErrorDetail(f"{path}.{key}", "not an array")],
            )
        for position, child in enumerate(given):
            at = f"{path}.{key}[{position}]"
            if not isinstance(child, dict):
                raise ApiError(
                    422,
                    "schema_violation",
                    "each item must be an object",
                    [ErrorDetail(at, "not an object")],
                )
            document = _importable(child) | PLACEHOLDER_OWNER
            try:
                if key == "contacts":
                    fields = await validate_contact(document, admin.allowed_networks)
                else:
                    fields = validate_subscription(document)
                    await check_rule_lists(admin, fields["rule"], at)
                    await check_escalation(admin, fields, at)
            except RejectedInput as rejected:
                raise _item_error(at, rejected) from None
            validated.append(_without_owner(fields))
    return stakeholder, children["contacts"], children["subscriptions"]


def _item_error(path: str, rejected: RejectedInput) -> ApiError:
    details = [ErrorDetail(path + d.path[1:], d.message) for d in rejected.errors]
    return ApiError(422, rejected.reason, str(rejected), details)


def _without_owner(fields: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in fields.items() if k != "stakeholderId"}


async def export_directory(request: web.Request) -> web.Response:
    """GET /api/v1/export: the whole directory, nested as import takes it (with ids)."""
    await actor_of(request, Role.ADMIN)
    directory = admin_of(request).directory
    stakeholders = await directory.all(STAKEHOLDER)
    contacts = await directory.all(CONTACT)
    subscriptions = await directory.all(SUBSCRIPTION)
    by_owner: dict[str, dict[str, list[dict[str, Any]]]] = {
        s["id"]: {"contacts": [], "subscriptions": []} for s in stakeholders
    }
    for key, records in (("contacts", contacts), ("subscriptions", subscriptions)):
        for record in records:
            by_owner[record["stakeholderId"]][key].append(record)
    return web.json_response({"stakeholders": [s | by_owner[s["id"]] for s in stakeholders]})


async def export_contacts_csv(request: web.Request) -> web.Response:
    await actor_of(request, Role.ADMIN)
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(("id", *CONTACT_CSV_COLUMNS))
    for record in await admin_of(request).directory.all(CONTACT):
        writer.writerow([record["id"], *(csv_cell(record[c]) for c in CONTACT_CSV_COLUMNS)])
    return web.Response(text=out.getvalue(), content_type="text/csv")


async def import_contacts_csv(request: web.Request) -> web.Response:
    """POST /api/v1/contacts/import (text/csv): columns stakeholderId, channel, address,
    label, active. All rows or none."""
    actor = await actor_of(request, Role.ADMIN)
    admin = admin_of(request)
    try:
        text = (await request.read()).decode("utf-8")
        rows = list(csv.DictReader(io.StringIO(text)))
    except (UnicodeDecodeError, csv.Error) as error:
        raise ApiError(400, "invalid_csv", f"not UTF-8 CSV: {error}") from None
    if "\x00" in text:  # csv reads it since Python 3.11; the store cannot hold it
        raise ApiError(400, "invalid_csv", "the CSV holds NUL")
    validated = []
    for index, row in enumerate(rows):
        document: dict[str, Any] = {k: v for k, v in row.items() if k and v not in (None, "")}
        if "active" in document:
            document["active"] = document["active"].strip().lower() == "true"
        try:
            validated.append(await validated_fields(admin, CONTACT, document))
        except ApiError as error:
            details = [ErrorDetail(f"$[{index}]" + d.path[1:], d.message) for d in error.details]
            raise ApiError(error.status, error.code, error.message, details) from None
    now = utc_now()
    with unique_contacts("$"):
        async with admin.directory.database.transaction() as conn:
            made = await create_many_in(conn, CONTACT, validated, actor, now)
    created = [record | ({"signingSecret": secret} if secret else {}) for record, secret in made]
    for record in created:
        apply_change(admin.matcher, CONTACT, record, record["id"])
    return web.json_response({"items": created}, status=201)


def add_bulk_routes(app: web.Application) -> None:
    """The import and export routes (the directory API's `ADMIN` state must be set)."""
    app.router.add_post("/api/v1/import", import_directory)
    app.router.add_get("/api/v1/export", export_directory)
    app.router.add_get("/api/v1/contacts.csv", export_contacts_csv)
    app.router.add_post("/api/v1/contacts/import", import_contacts_csv)
