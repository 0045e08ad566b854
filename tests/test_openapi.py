"""The OpenAPI document (schemas/openapi.json): valid OpenAPI 3.1, describing exactly the routes
the app registers, with faithful copies of our JSON Schemas, and true of the running service
on both stores (schemathesis: no server errors, and every status, content type, header and
body as documented)."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import aiohttp
import hypothesis
import jsonschema
import pytest
import requests
import schemathesis
from aiohttp import web
from hypothesis import strategies as st
from openapi_spec_validator import OpenAPIV31SpecValidator
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Ok
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from channels.destinations import parse_networks
from core.alert import Tlp
from core.clock import utc_now
from dissemination.accounts.signin import SignIn
from dissemination.accounts.store import AccountStore
from dissemination.acks.tokens import AckSigner
from dissemination.acks.tracking import AckStore
from dissemination.api.accounts import AccountEndpoints, add_account_routes
from dissemination.api.acks import AckEndpoints, add_ack_routes
from dissemination.api.app import Runtime, StaffAuth, create_app
from dissemination.api.bulk import add_bulk_routes
from dissemination.api.controls import ControlEndpoints, add_control_routes
from dissemination.api.directory import Admin, add_admin_routes
from dissemination.api.ingest import add_ingest_routes
from dissemination.api.lists import add_list_routes
from dissemination.api.progress import ProgressEndpoints, add_progress_routes
from dissemination.api.rulepreview import add_rule_preview_routes
from dissemination.api.sends import SendEndpoints, add_send_routes
from dissemination.api.session import add_session_routes
from dissemination.api.tokens import Role, TokenStore
from dissemination.api.twiliohooks import TwilioHooks, add_twilio_hooks
from dissemination.broker.dispatch import DeliveryDispatcher
from dissemination.broker.publisher import AlertPublisher
from dissemination.directory.store import CONTACT, STAKEHOLDER, SUBSCRIPTION, Directory, EntitySpec
from dissemination.intake.decoding import (
    JSON_TYPES,
    SNIFFED_TYPES,
    XML_TYPES,
    DecodeLimits,
    decode_alerts,
)
from dissemination.intake.normalize import HandlingDefaults
from dissemination.intake.pipeline import AlertPipeline
from dissemination.intake.release import SendReleaser
from dissemination.ledger.alerts import Ledger
from dissemination.ledger.progress import ProgressStore
from dissemination.ledger.sends import Sends
from dissemination.service import Service
from dissemination.settings import load_settings
from dissemination.store.audit import AuditLog
from dissemination.store.database import Database
from subscriptions.clearance import WithheldCode
from subscriptions.matcher import NO_CONTACT, Matcher
from testbed.alerts import cap_json
from tests.alerts import TEST_SENDERS

SCHEMAS_DIR = Path(__file__).resolve().parent.parent / "schemas"
DOCUMENT_PATH = SCHEMAS_DIR / "openapi.json"
Headers = dict[str, str]
ID_PREFIX = "urn:fusion-dissemination:"
COMPONENTS = "#/components/schemas/"
METHODS = ("get", "head", "post", "put", "patch", "delete", "options", "trace")
ENTITIES: dict[str, tuple[EntitySpec, str]] = {
    "stakeholder": (STAKEHOLDER, "Stakeholder"),
    "contact": (CONTACT, "Contact"),
    "subscription": (SUBSCRIPTION, "Subscription"),
}

# Schemathesis: examples per operation (valid data, then invalid data), and what every
# response is checked for.
MAX_EXAMPLES = {schemathesis.GenerationMode.POSITIVE: 12, schemathesis.GenerationMode.NEGATIVE: 6}
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
# Webhook URLs by IP literal, so that validating a generated contact never needs DNS: one in
# the allowed test network, one private and one reserved (both forbidden destinations).
WEBHOOK_URLS = ["http://127.0.0.1:9/hook", "https://10.1.2.3/hook", "http://192.0.2.7/hook"]
# Addresses that validate, made unique by a counter (a repeated contact is a separate case).
VALID_ADDRESSES = {
    "email": "fuzz{}@example.org",
    "sms": "+1202555{:04d}",
    "webhook": "http://127.0.0.1:{}/hook",
}
_unique = itertools.count(100)


def _document() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(DOCUMENT_PATH.read_text(encoding="utf-8"))
    return document


def _sources() -> dict[str, dict[str, Any]]:
    """Our JSON Schemas by file stem (their `$id` is the URN prefix plus the stem)."""
    sources = {}
    for path in sorted(SCHEMAS_DIR.glob("*.json")):
        if path != DOCUMENT_PATH:
            sources[path.stem] = json.loads(path.read_text(encoding="utf-8"))
    return sources


def copied_schema(name: str, source: dict[str, Any]) -> dict[str, Any]:
    """How schema `name` appears under components/schemas: without `$id` and `$schema`, each
    `$ref` rewritten to point inside the OpenAPI document (`#/$defs/x` of schema `name` to
    `#/components/schemas/name/$defs/x`, `urn:...:other#/y` to `#/components/schemas/other/y`)."""

    def rewrite(target: str) -> str:
        if target.startswith("#"):
            return COMPONENTS + name + target[1:]
        assert target.startswith(ID_PREFIX), f"{name}: unexpected $ref {target!r}"
        other, _, fragment = target.removeprefix(ID_PREFIX).partition("#")
        return COMPONENTS + other + fragment

    def walk(node: Any, root: bool) -> Any:
        if isinstance(node, dict):
            return {
                key: rewrite(value)
                if key == "$ref" and isinstance(value, str)
                else walk(value, False)
                for key, value in node.items()
                if not (root and key in ("$id", "$schema"))
            }
        if isinstance(node, list):
            return [walk(item, False) for item in node]
        return node

    copied: dict[str, Any] = walk(source, True)
    return copied


def _operations(document: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in document["paths"].items():
        for method in METHODS:
            if method in item:
                yield method.upper(), path, item[method]


def _routes(app: web.Application) -> set[str]:
    """Every API route registered, as "METHOD /path" (with HEAD: aiohttp adds it to each GET);
    the console's HTML pages and static files ("/" and under /console) are no API."""
    routes = set()
    for route in app.router.routes():
        assert route.resource is not None
        path = route.resource.canonical
        if path == "/" or path == "/console" or path.startswith("/console/"):
            continue
        routes.add(f"{route.method} {path}")
    return routes


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _refs(item)


def _pointer(document: dict[str, Any], reference: str) -> Any:
    node: Any = document
    for part in reference.removeprefix("#/").split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


# ---- the document itself ---------------------------------------------------------------------


def test_document_is_valid_openapi_3_1() -> None:
    document = _document()
    assert document["openapi"] == "3.1.0"
    OpenAPIV31SpecValidator(document).validate()


def test_every_reference_resolves_inside_the_document() -> None:
    document = _document()
    for reference in set(_refs(document)):
        assert reference.startswith("#/"), f"{reference}: schemathesis cannot fetch it"
        assert _pointer(document, reference) is not None, reference


async def test_documented_operations_are_exactly_the_registered_routes(tmp_path: Path) -> None:
    """Built like `Service.start` builds it (without connecting to anything)."""
    settings = load_settings({"DISSEMINATION_SERVICE_DATA_DIR": str(tmp_path)})
    database = Database.from_settings(settings.store, settings.data_path)
    try:
        ledger = Ledger(database)
        runtime = Runtime(
            database, ledger, TokenStore(database), AlertPipeline(ledger, settings.intake)
        )
        app = create_app(runtime, settings.http)
        add_ingest_routes(app)
        admin = Admin(
            Directory(database),
            Matcher(),
            AuditLog(database),
            parse_networks(settings.webhook.allowed_networks),
        )
        add_admin_routes(app, admin)
        add_bulk_routes(app)
        add_list_routes(app)
        add_rule_preview_routes(app)
        add_twilio_hooks(app, TwilioHooks(database, settings, utc_now))
        add_ack_routes(app, AckEndpoints(AckSigner(("k" * 32,)), AckStore(database), utc_now))
        add_progress_routes(app, ProgressEndpoints(ProgressStore(database), utc_now))
        no_dispatcher = cast(DeliveryDispatcher, None)  # routes only: nothing is dispatched
        add_control_routes(app, ControlEndpoints(database, no_dispatcher, utc_now))
        no_publisher = cast(AlertPublisher, None)  # routes only: nothing is published
        releaser = SendReleaser(Sends(database), no_publisher, None)
        add_send_routes(app, SendEndpoints(releaser.sends, releaser, utc_now, 500))
        signin = SignIn(database, settings.accounts, utc_now)
        add_session_routes(app, StaffAuth(signin, settings.http.public_url))
        add_account_routes(
            app, AccountEndpoints(AccountStore(database), settings.accounts, utc_now)
        )
        registered = _routes(app)
    finally:
        await database.close()
    documented = {f"{method} {path}" for method, path, _ in _operations(_document())}
    assert documented == registered, {
        "undocumented": sorted(registered - documented),
        "not registered": sorted(documented - registered),
    }


def test_operations_declare_security_and_their_error_answers() -> None:
    document = _document()
    assert document["security"] == [{"bearerAuth": []}]
    scheme = document["components"]["securitySchemes"]["bearerAuth"]
    assert (scheme["type"], scheme["scheme"]) == ("http", "bearer")
    public = {"/healthz", "/readyz", "/metrics", "/api/v1/openapi.json"}
    signed = {"/hooks/twilio/status", "/hooks/twilio/sms"}
    by_ack_token = {"/ack/{token}", "/api/v1/acks"}
    operation_ids = set()
    for method, path, operation in _operations(document):
        operation_ids.add(operation["operationId"])
        statuses = set(operation["responses"])
        if path in public:
            assert operation["security"] == [], (method, path)
            continue
        if path in by_ack_token:
            assert operation["security"] == [], (method, path)
            assert {"403", "404", "410", "503"} <= statuses, (method, path)
            continue
        if path in signed:
            assert operation["security"] == [], (method, path)
            assert {"403", "404", "413"} <= statuses, (method, path)
            continue
        assert {"401", "403", "503"} <= statuses, (method, path)
        if method in ("POST", "PATCH"):
            assert {"400", "413", "422"} <= statuses, (method, path)
        if "{id}" in path:
            assert "404" in statuses, (method, path)
        for status, response in operation["responses"].items():
            if "$ref" in response:
                response = _pointer(document, response["$ref"])
            if status.startswith(("4", "5")) and method != "HEAD":
                assert response["content"]["application/json"]["schema"] == {
                    "$ref": COMPONENTS + "Error"
                }, (method, path, status)
    assert len(operation_ids) == len(list(_operations(document))), "operationIds must be unique"


def test_alert_bodies_list_every_accepted_media_type() -> None:
    accepted = (XML_TYPES | JSON_TYPES | SNIFFED_TYPES) - {""}
    paths = _document()["paths"]
    for path in ("/api/v1/alerts", "/api/v1/match"):
        assert set(paths[path]["post"]["requestBody"]["content"]) == accepted, path
        assert "415" in paths[path]["post"]["responses"], path


def test_alert_body_examples_are_accepted() -> None:
    limits = DecodeLimits(max_bytes=1 << 20, max_depth=32)
    defaults = HandlingDefaults(Tlp.AMBER_STRICT, Tlp.CLEAR)
    content = _document()["paths"]["/api/v1/alerts"]["post"]["requestBody"]["content"]
    examples = {name: media["example"] for name, media in content.items() if "example" in media}
    assert {"application/json", "application/geo+json", "application/cap+xml"} <= set(examples)
    for media_type, example in examples.items():
        body = example.encode() if isinstance(example, str) else json.dumps(example).encode()
        assert decode_alerts(body, media_type, limits, defaults), media_type


# ---- the copies of our JSON Schemas ------------------------------------------------------------


def test_copied_schemas_equal_their_sources() -> None:
    components = _document()["components"]["schemas"]
    sources = _sources()
    assert set(sources) <= set(components), "every schema file is copied"
    for name, source in sources.items():
        assert source["$id"] == ID_PREFIX + name
        assert components[name] == copied_schema(name, source), (
            f"components/schemas/{name} differs from schemas/{name}.json: regenerate it with "
            "tests.test_openapi.copied_schema"
        )
    copies = {name for name in components if name[0].islower()}
    assert copies == set(sources), "a lower-case component is a copy of a schema file"


def test_record_and_body_schemas_follow_the_entity_fields() -> None:
    """Records, PATCH bodies and import items name each field of the entity's own schema."""
    components = _document()["components"]["schemas"]
    sources = _sources()
    stamps = {"createdAt": {"$ref": COMPONENTS + "Timestamp"}}
    stamps["updatedAt"] = stamps["createdAt"]
    for name, (spec, title) in ENTITIES.items():
        source = sources[name]
        assert set(source["properties"]) == set(spec.fields), f"{name}: schema vs directory"
        fields = {f: {"$ref": f"{COMPONENTS}{name}/properties/{f}"} for f in source["properties"]}
        record = components[f"{title}Record"]
        assert record["properties"] == {"id": {"$ref": COMPONENTS + "EntityId"}} | fields | stamps
        assert set(record["required"]) == set(record["properties"])
        assert record["additionalProperties"] is False
        patch = components[f"{title}Patch"]
        assert patch["properties"] == fields
        assert "required" not in patch
        assert patch["additionalProperties"] is False
    created = components["ContactCreated"]
    record = components["ContactRecord"]
    assert created["properties"] == record["properties"] | {
        "signingSecret": {"$ref": COMPONENTS + "SigningSecret"}
    }
    assert created["required"] == record["required"]
    for name, title in (("contact", "ImportContact"), ("subscription", "ImportSubscription")):
        child = components[title]
        source = sources[name]
        assert set(child["properties"]) == set(source["properties"])
        assert set(child["required"]) == set(source["required"]) - {"stakeholderId"}
    imported = components["ImportStakeholder"]
    assert set(imported["properties"]) == set(sources["stakeholder"]["properties"]) | {
        "contacts",
        "subscriptions",
    }
    assert imported["required"] == sources["stakeholder"]["required"]


def test_withheld_reasons_are_the_matchers() -> None:
    reasons = _document()["components"]["schemas"]["WithheldReason"]["enum"]
    assert set(reasons) == {code.value for code in WithheldCode} | {NO_CONTACT}


# ---- the running service ---------------------------------------------------------------------


@dataclass
class Running:
    """The service under test, an admin token, and the entities seeded into it."""

    service: Service
    base: str
    token: str
    seeds: dict[str, list[str]]

    @property
    def auth(self) -> Headers:
        return {"Authorization": f"Bearer {self.token}"}


STAKEHOLDER_BODY: dict[str, Any] = {
    "name": "Duty Officer Lee",
    "organization": "Example County",
    "sector": "law_enforcement",
    "jurisdiction": {"geocodes": [{"valueName": "SAME", "value": "006109"}]},
    "clearance": {"maxTlp": "AMBER"},
}


async def _seed(base: str, auth: Headers) -> dict[str, list[str]]:
    """A few real entities, so that generated requests also reach the success paths."""
    seeds: dict[str, list[str]] = {
        "stakeholder": [],
        "contact": [],
        "subscription": [],
        "list": [],
    }
    async with aiohttp.ClientSession(base, headers=auth) as session:

        async def create(kind: str, body: dict[str, Any]) -> str:
            async with session.post(f"/api/v1/{kind}s", json=body) as response:
                assert response.status == 201, await response.text()
                entity_id = str((await response.json())["id"])
            seeds[kind].append(entity_id)
            return entity_id

        for clearance in ("AMBER", "RED"):
            sid = await create(
                "stakeholder", STAKEHOLDER_BODY | {"clearance": {"maxTlp": clearance}}
            )
            for channel, address in (("email", "desk@example.org"), ("webhook", WEBHOOK_URLS[0])):
                contact = {"stakeholderId": sid, "channel": channel, "address": address}
                await create("contact", contact)
            subscription = {"stakeholderId": sid, "rule": {"area": "jurisdiction"}}
            await create("subscription", subscription | {"channels": ["email", "webhook"]})
        members = [{"kind": "stakeholder", "id": sid} for sid in seeds["stakeholder"]]
        await create("list", {"name": "Seeded desk", "members": members})
    return seeds


@pytest.fixture
async def running(service_env: dict[str, str]) -> AsyncIterator[Running]:
    env = service_env | {"DISSEMINATION_WEBHOOK_ALLOWED_NETWORKS": "127.0.0.1/32"}
    service = Service(load_settings(env))
    await service.start()
    try:
        assert service.database is not None
        assert service.http is not None
        _info, token = await TokenStore(service.database).create(
            "openapi-admin", Role.ADMIN, datetime.now(UTC), TEST_SENDERS
        )
        host, port = service.http.addresses[0][:2]
        base = f"http://{host}:{port}"
        auth = {"Authorization": f"Bearer {token}"}
        yield Running(service, base, token, await _seed(base, auth))
    finally:
        await service.stop()


def _steer(case: schemathesis.Case[Any], data: st.DataObject, seeds: dict[str, list[str]]) -> None:
    """Point some generated requests at entities that exist, and keep webhook URLs to IP
    literals (validating a host name would need DNS)."""
    path = case.operation.path
    for kind, ids in seeds.items():
        if path.startswith(f"/api/v1/{kind}s/") and case.path_parameters:
            generated = case.path_parameters["id"]
            case.path_parameters["id"] = data.draw(st.sampled_from([*ids, generated]), label="id")

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("stakeholderId"), str):
                choices = [*seeds["stakeholder"], node["stakeholderId"]]
                node["stakeholderId"] = data.draw(st.sampled_from(choices), label="stakeholderId")
            address, channel = node.get("address"), node.get("channel")
            if isinstance(address, str) and isinstance(channel, str | None):
                if channel in VALID_ADDRESSES and data.draw(st.booleans(), label="valid address"):
                    node["address"] = VALID_ADDRESSES[channel].format(next(_unique))
                elif channel == "webhook" or address.lower().startswith("http"):
                    node["address"] = data.draw(st.sampled_from(WEBHOOK_URLS), label="webhook")
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(case.body)
    if path.endswith("/events"):  # an event stream ends only when asked to
        case.query = {"seconds": "1"}
    if path == "/api/v1/match" and data.draw(st.booleans(), label="a CAP alert that matches"):
        case.body = cap_json("OPENAPI-MATCH", handling={"tlp": "AMBER"})
        case.media_type = "application/json"


def _failure_text(failure: BaseException, case: schemathesis.Case[Any], auth: Headers) -> str:
    return f"{failure}\n\nreproduce: {case.as_curl_command(auth)}"


@dataclass
class FuzzReport:
    operations: set[str] = field(default_factory=set)
    calls: int = 0
    statuses: dict[str, set[int]] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)


def _fuzz_operation(
    operation: schemathesis.APIOperation[Any, Any, Any, Any],
    mode: schemathesis.GenerationMode,
    running: Running,
    session: requests.Session,
    report: FuzzReport,
) -> None:
    """MAX_EXAMPLES generated requests (derandomized), every response checked; a failing check
    is recorded, once per operation, mode and kind of failure, and generation goes on."""
    label = f"{operation.method.upper()} {operation.path}"
    report.operations.add(label)
    statuses = report.statuses.setdefault(label, set())

    @hypothesis.given(case=operation.as_strategy(generation_mode=mode), data=st.data())
    @hypothesis.settings(
        max_examples=MAX_EXAMPLES[mode],
        derandomize=True,
        database=None,
        deadline=None,
        phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate],
        suppress_health_check=list(hypothesis.HealthCheck),
    )
    def examples(case: schemathesis.Case[Any], data: st.DataObject) -> None:
        _steer(case, data, running.seeds)
        report.calls += 1
        try:
            response = case.call_and_validate(
                base_url=running.base, session=session, headers=running.auth, checks=CHECKS
            )
            statuses.add(response.status_code)
        except (AssertionError, BaseExceptionGroup) as failure:
            key = f"{label} ({mode.value}): {type(failure).__name__}"
            report.failures.setdefault(key, _failure_text(failure, case, running.auth))

    try:
        examples()
    except hypothesis.errors.Unsatisfiable:
        # Negative mode, for an operation with nothing to make invalid (no parameter but the
        # bearer token, no body).
        assert mode is schemathesis.GenerationMode.NEGATIVE, label


def _served_schema(running: Running) -> schemathesis.BaseSchema:
    """The document as the service serves it. Loaded with from_dict, since from_url leaves out
    the operation that served the document."""
    served = requests.get(f"{running.base}/api/v1/openapi.json", timeout=10)
    assert served.status_code == 200
    assert served.content == DOCUMENT_PATH.read_bytes()
    return schemathesis.openapi.from_dict(served.json())


def _fuzz(running: Running) -> FuzzReport:
    """Every operation, valid data then invalid data; deletes last, stakeholders' very last
    (they take the seeded contacts and subscriptions along). Blocking: runs in a thread."""
    schema = _served_schema(running)
    operations = []
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), result
        operations.append(result.ok())
    operations.sort(
        key=lambda op: (op.method.upper() == "DELETE", op.path.startswith("/api/v1/stakeholders/"))
    )
    report = FuzzReport()
    with requests.Session() as session:
        for mode in (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE):
            for operation in operations:
                _fuzz_operation(operation, mode, running, session, report)
    return report


@pytest.mark.slow
async def test_running_service_conforms_to_the_document(running: Running) -> None:
    started = time.monotonic()
    report = await asyncio.to_thread(_fuzz, running)
    elapsed = time.monotonic() - started
    assert running.service.http is not None
    routes = _routes(running.service.http.app)
    assert report.operations == routes
    assert report.calls >= len(routes) * 2, report.calls
    print(f"\nschemathesis: {len(routes)} operations, {report.calls} requests, {elapsed:.1f}s")
    for label, seen in sorted(report.statuses.items()):
        print(f"  {label}: {sorted(seen)}")
    assert not report.failures, "\n\n".join(f"{k}\n{v}" for k, v in report.failures.items())


@dataclass(frozen=True)
class EdgeCase:
    """One request: what `APIOperation.Case` takes, plus what the call takes (a raw body)."""

    name: str
    method: str
    path: str
    case: dict[str, Any]
    call: dict[str, Any] = field(default_factory=dict)


def _edge_cases(running: Running) -> dict[str, str]:
    """Requests that generated data seldom or never makes, each once found to be answered 500:
    each must get a documented answer. Blocking: runs in a thread."""
    sid = running.seeds["stakeholder"][0]
    raw_json = {"headers": {"Content-Type": "application/json"}}
    nested = b"[" * 100_000 + b"]" * 100_000
    surrogate = json.dumps(STAKEHOLDER_BODY | {"name": "\ud800"}).encode()
    duplicate = {"stakeholderId": sid, "channel": "email", "address": "desk@example.org"}
    csv_rows = "stakeholderId,channel,address\n" + f"{sid},sms,2025550188\n" * 2
    cases = [
        EdgeCase(
            "limit of Unicode digits", "GET", "/api/v1/stakeholders", {"query": {"limit": "²"}}
        ),
        EdgeCase("after of Unicode digits", "GET", "/api/v1/audit", {"query": {"after": "²"}}),
        EdgeCase("after beyond 64 bits", "GET", "/api/v1/audit", {"query": {"after": "9" * 20}}),
        EdgeCase("after beyond 32 bits", "GET", "/api/v1/audit", {"query": {"after": "9" * 10}}),
        EdgeCase("JSON nested deep", "POST", "/api/v1/stakeholders", raw_json, {"data": nested}),
        EdgeCase("lone surrogate", "POST", "/api/v1/stakeholders", raw_json, {"data": surrogate}),
        EdgeCase(
            "NUL in a string",
            "POST",
            "/api/v1/stakeholders",
            {"body": STAKEHOLDER_BODY | {"organization": "Example\x00County"}},
        ),
        EdgeCase(
            "NUL in an id", "GET", "/api/v1/stakeholders/{id}", {"path_parameters": {"id": "a\x00"}}
        ),
        EdgeCase(
            "NUL in an alert id", "GET", "/api/v1/alerts/{id}", {"path_parameters": {"id": "a\x00"}}
        ),
        EdgeCase(
            "NUL in an alert id acknowledged on behalf",
            "POST",
            "/api/v1/alerts/{id}/acks",
            {
                "path_parameters": {"id": "a\x00"},
                "body": {"stakeholderId": sid, "reason": "by phone"},
            },
        ),
        EdgeCase(
            "NUL in an ack token", "GET", "/ack/{token}", {"path_parameters": {"token": "a\x00"}}
        ),
        EdgeCase(
            "imported contact that is a string",
            "POST",
            "/api/v1/import",
            {"body": {"stakeholders": [STAKEHOLDER_BODY | {"contacts": ["ab"]}]}},
        ),
        EdgeCase("duplicate contact", "POST", "/api/v1/contacts", {"body": duplicate}),
        EdgeCase(
            "duplicate CSV rows",
            "POST",
            "/api/v1/contacts/import",
            {"body": csv_rows, "media_type": "text/csv"},
        ),
    ]
    schema = _served_schema(running)
    failures: dict[str, str] = {}
    with requests.Session() as session:
        for edge in cases:
            case = schema[edge.path][edge.method].Case(**edge.case)
            headers = running.auth | edge.case.get("headers", {})
            try:
                case.call_and_validate(
                    base_url=running.base,
                    session=session,
                    headers=headers,
                    checks=CHECKS,
                    **edge.call,
                )
            except (AssertionError, BaseExceptionGroup) as failure:
                failures[f"{edge.name}: {edge.method} {edge.path}"] = _failure_text(
                    failure, case, headers
                )
        # 405 is answered for any method a path does not have, with the methods it has.
        response = session.put(f"{running.base}/api/v1/audit", headers=running.auth, timeout=10)
        components = _document()["components"]["schemas"]
        error_schema = {"$ref": "#/components/schemas/Error", "components": {"schemas": components}}
        if response.status_code != 405 or response.json()["error"]["code"] != "method_not_allowed":
            failures["PUT /api/v1/audit"] = f"{response.status_code} {response.text}"
        elif not jsonschema.Draft202012Validator(error_schema).is_valid(response.json()):
            failures["PUT /api/v1/audit"] = f"not an Error: {response.text}"
        elif "Allow" not in response.headers:
            failures["PUT /api/v1/audit"] = "405 without the Allow header that RFC 9110 requires"
    return failures


@pytest.mark.slow
async def test_edge_cases_get_documented_answers(running: Running) -> None:
    failures = await asyncio.to_thread(_edge_cases, running)
    assert not failures, "\n\n".join(f"{k}\n{v}" for k, v in failures.items())


def sync_copied_schemas() -> None:
    """Rewrite the copies under components/schemas from schemas/*.json (after a schema file
    changed): `python -m tests.test_openapi`."""
    document = _document()
    copies = document["components"]["schemas"]
    for name, source in _sources().items():
        copies[name] = copied_schema(name, source)
    text = json.dumps(document, indent=2, ensure_ascii=False) + "\n"
    DOCUMENT_PATH.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    sync_copied_schemas()
