"""The admin API against the running service on both stores: role checks, CRUD with
pagination and filters, validation with JSON paths, webhook destination checks, bulk import
and export, the audit log, and the matching dry run."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import text

from core.alert import Tlp
from dissemination.api.directory import ADMIN
from dissemination.intake.normalize import HandlingDefaults, alert_from_cap
from dissemination.service import Service
from dissemination.settings import Settings, load_settings
from testbed.alerts import cap_json
from tests.apirig import Api, api_client, create_stakeholder, stakeholder
from tests.brokerutil import wait_until

pytestmark = pytest.mark.slow


@pytest.fixture
async def api(service_env: dict[str, str]) -> AsyncIterator[Api]:
    async for client in api_client(service_env):
        yield client


ENDPOINTS = [
    ("GET", "/api/v1/stakeholders", "read"),
    ("POST", "/api/v1/stakeholders", "write"),
    ("GET", "/api/v1/stakeholders/{id}", "read"),
    ("PATCH", "/api/v1/stakeholders/{id}", "write"),
    ("DELETE", "/api/v1/stakeholders/{id}", "write"),
    ("GET", "/api/v1/contacts", "read"),
    ("POST", "/api/v1/contacts", "write"),
    ("GET", "/api/v1/subscriptions", "read"),
    ("POST", "/api/v1/subscriptions", "write"),
    ("POST", "/api/v1/import", "write"),
    ("GET", "/api/v1/export", "admin"),
    ("GET", "/api/v1/contacts.csv", "admin"),
    ("GET", "/api/v1/audit", "admin"),
    ("POST", "/api/v1/match", "read"),
]


async def test_roles_are_enforced_on_every_endpoint(api: Api) -> None:
    target = await create_stakeholder(api)
    for method, template, kind in ENDPOINTS:
        path = template.format(id=target)
        for role in (None, "publisher", "viewer"):
            status, body = await api.call(method, path, role=role, body={})
            allowed = role == "viewer" and kind == "read"
            expected = 401 if role is None else None
            if expected:
                assert status == 401, (method, path, role)
                assert body["error"]["code"] == "unauthenticated"
            elif not allowed:
                assert (status, body["error"]["code"]) == (403, "forbidden"), (method, path, role)
            else:
                assert status not in (401, 403), (method, path, role)


async def test_unknown_ids_are_404(api: Api) -> None:
    for method in ("GET", "PATCH", "DELETE"):
        for path in ("stakeholders", "contacts", "subscriptions"):
            status, body = await api.call(method, f"/api/v1/{path}/nope", body={})
            assert (status, body["error"]["code"]) == (404, "not_found"), (method, path)


async def test_stakeholder_lifecycle_is_audited(api: Api) -> None:
    sid = await create_stakeholder(api)
    status, record = await api.call("GET", f"/api/v1/stakeholders/{sid}", role="viewer")
    assert status == 200
    assert record["kind"] == "individual"
    assert record["clearance"] == {"maxTlp": "AMBER", "caveats": ["LES"], "lawEnforcement": True}
    status, updated = await api.call(
        "PATCH", f"/api/v1/stakeholders/{sid}", body={"name": "Sgt. Lee"}
    )
    assert (status, updated["name"], updated["sector"]) == (200, "Sgt. Lee", "law_enforcement")
    assert (await api.call("DELETE", f"/api/v1/stakeholders/{sid}"))[0] == 204
    assert (await api.call("GET", f"/api/v1/stakeholders/{sid}"))[0] == 404
    status, audit = await api.call("GET", f"/api/v1/audit?entity=stakeholder&entityId={sid}")
    entries = audit["items"]
    assert [e["action"] for e in entries] == ["create", "update", "delete"]
    assert {e["actor"]["name"] for e in entries} == {"admin-1"}
    assert entries[1]["before"]["name"] == "Duty Officer Lee"
    assert entries[1]["after"]["name"] == "Sgt. Lee"
    assert entries[2]["after"] is None


async def test_lists_are_paginated_and_filtered(api: Api) -> None:
    for i in range(5):
        await create_stakeholder(
            api, name=f"Person {i}", organization="Org A" if i % 2 else "Org B"
        )
    seen: list[str] = []
    cursor = None
    while True:
        query = "?limit=2" + (f"&after={cursor}" if cursor else "")
        status, page = await api.call("GET", "/api/v1/stakeholders" + query, role="viewer")
        assert status == 200
        seen += [item["id"] for item in page["items"]]
        cursor = page["next"]
        if cursor is None:
            break
    assert len(seen) == len(set(seen)) == 5
    status, page = await api.call("GET", "/api/v1/stakeholders?organization=Org+A")
    assert {item["organization"] for item in page["items"]} == {"Org A"}
    assert len(page["items"]) == 2
    for bad in ("?limit=0", "?limit=9999", "?colour=red", "?active=maybe"):
        status, body = await api.call("GET", "/api/v1/stakeholders" + bad)
        assert (status, body["error"]["code"]) == (400, "invalid_parameter"), bad


@pytest.mark.parametrize(
    ("body", "code", "path"),
    [
        (stakeholder(role="admin"), "schema_violation", "$"),
        (stakeholder(id="chosen-by-client"), "schema_violation", "$"),
        (stakeholder(sector="pirates"), "schema_violation", "$.sector"),
        (stakeholder(clearance={"maxTlp": "PINK"}), "schema_violation", "$.clearance.maxTlp"),
        (stakeholder(timezone="Mars/Olympus"), "invalid_field", "$.timezone"),
        (
            stakeholder(quietHours={"start": "25:00", "end": "06:00"}),
            "schema_violation",
            "$.quietHours",
        ),
        ({"name": "No org"}, "schema_violation", "$"),
    ],
)
async def test_stakeholder_validation_names_the_path(
    api: Api, body: Any, code: str, path: str
) -> None:
    status, error = await api.call("POST", "/api/v1/stakeholders", body=body)
    assert (status, error["error"]["code"]) == (422, code)
    assert path in [d["path"] for d in error["error"]["details"]]


async def test_contacts_are_normalized_and_validated(api: Api) -> None:
    sid = await create_stakeholder(api)
    status, phone = await api.call(
        "POST",
        "/api/v1/contacts",
        body={"stakeholderId": sid, "channel": "sms", "address": "(202) 555-0143"},
    )
    assert (status, phone["address"]) == (201, "+12025550143")
    status, mail = await api.call(
        "POST",
        "/api/v1/contacts",
        body={"stakeholderId": sid, "channel": "email", "address": "Lee@Example.ORG"},
    )
    assert (status, mail["address"]) == (201, "Lee@example.org")
    bad = [
        ({"channel": "sms", "address": "12"}, "invalid_field"),
        ({"channel": "email", "address": "not-an-email"}, "invalid_field"),
        ({"channel": "pigeon", "address": "loft 3"}, "schema_violation"),
        (
            {"channel": "email", "address": "a@example.org", "stakeholderId": "ghost"},
            "unknown_stakeholder",
        ),
    ]
    for fields, code in bad:
        status, error = await api.call(
            "POST", "/api/v1/contacts", body={"stakeholderId": sid} | fields
        )
        assert (status, error["error"]["code"]) == (422, code), fields


@pytest.mark.parametrize(
    ("url", "code"),
    [
        ("ftp://127.0.0.1/hook", "invalid_field"),
        ("http://user:pw@127.0.0.1/hook", "invalid_field"),
        ("http://10.0.0.1/hook", "forbidden_destination"),
        ("http://192.168.1.20/hook", "forbidden_destination"),
        ("http://169.254.169.254/latest/meta-data", "forbidden_destination"),
        ("http://127.0.0.2/hook", "forbidden_destination"),
        ("http://0x7f000002/hook", "forbidden_destination"),
        ("http://[::1]/hook", "forbidden_destination"),
        ("http://[::ffff:10.0.0.1]/hook", "forbidden_destination"),
        ("http://[fd00:ec2::254]/hook", "forbidden_destination"),
        ("http://100.64.0.1/hook", "forbidden_destination"),
        ("http://no-such-host.invalid/hook", "invalid_field"),
    ],
)
async def test_webhook_destinations_are_checked_when_saved(api: Api, url: str, code: str) -> None:
    sid = await create_stakeholder(api)
    status, error = await api.call(
        "POST",
        "/api/v1/contacts",
        body={"stakeholderId": sid, "channel": "webhook", "address": url},
    )
    assert (status, error["error"]["code"]) == (422, code)


DISGUISED = [
    "http://１２７.０.０.２/hook",  # noqa: RUF001 - fullwidth digits
    "http://①②⑦.0.0.2/hook",
    "http://١٢٧.٠.٠.٢/hook",  # noqa: RUF001 - Arabic-Indic digits
    "http://[64:ff9b::127.0.0.2]/hook",
    "http://[64:ff9b:1::8.8.8.8]/hook",
    "http://[::10.0.0.1]/hook",
    "http://[fec0::1]/hook",
]
"""Internal destinations (127.0.0.1 alone is allowed here) in spellings that hide them."""


async def test_disguised_internal_destinations_are_refused_when_saved(api: Api) -> None:
    sid = await create_stakeholder(api)
    for url in DISGUISED:
        status, error = await api.call(
            "POST",
            "/api/v1/contacts",
            body={"stakeholderId": sid, "channel": "webhook", "address": url},
        )
        assert (status, error["error"]["code"]) == (422, "forbidden_destination"), url


async def test_webhook_secret_is_shown_once(api: Api) -> None:
    sid = await create_stakeholder(api)
    status, created = await api.call(
        "POST",
        "/api/v1/contacts",
        body={"stakeholderId": sid, "channel": "webhook", "address": "http://127.0.0.1:9/hook"},
    )
    assert status == 201
    assert created["signingSecret"].startswith("whsec_")
    status, again = await api.call("GET", f"/api/v1/contacts/{created['id']}")
    assert "signingSecret" not in again
    status, audit = await api.call("GET", f"/api/v1/audit?entityId={created['id']}")
    assert created["signingSecret"] not in json.dumps(audit)


async def test_subscription_validation(api: Api) -> None:
    sid = await create_stakeholder(api)
    ok = {
        "stakeholderId": sid,
        "rule": {"minSeverity": "Severe", "area": "jurisdiction"},
        "channels": ["sms", "email"],
    }
    status, created = await api.call("POST", "/api/v1/subscriptions", body=ok)
    assert status == 201
    assert created["channels"] == ["sms", "email"]
    assert created["enabled"] is True
    cases = [
        (ok | {"rule": {"minSeverity": "Huge"}}, "schema_violation", "$.rule.minSeverity"),
        (ok | {"channels": []}, "schema_violation", "$.channels"),
        (ok | {"rule": {"colour": "red"}}, "schema_violation", "$.rule"),
        (ok | {"stakeholderId": "ghost"}, "unknown_stakeholder", "$.stakeholderId"),
    ]
    for body, code, path in cases:
        status, error = await api.call("POST", "/api/v1/subscriptions", body=body)
        assert (status, error["error"]["code"]) == (422, code), body
        assert path in [d["path"] for d in error["error"]["details"]], error
    status, error = await api.call(
        "PATCH", f"/api/v1/subscriptions/{created['id']}", body={"stakeholderId": "other"}
    )
    assert (status, error["error"]["code"]) == (422, "immutable_field")


async def test_a_stakeholders_subscriptions_are_capped(service_env: dict[str, str]) -> None:
    env = service_env | {"DISSEMINATION_SERVICE_MAX_SUBSCRIPTIONS_PER_STAKEHOLDER": "3"}
    async for capped in api_client(env):
        sid = await create_stakeholder(capped)
        one = {"stakeholderId": sid, "rule": {"kinds": ["cap"]}, "channels": ["email"]}
        for _ in range(3):
            assert (await capped.call("POST", "/api/v1/subscriptions", body=one))[0] == 201
        status, error = await capped.call("POST", "/api/v1/subscriptions", body=one)
        assert (status, error["error"]["code"]) == (422, "too_many_subscriptions")
        assert [d["path"] for d in error["error"]["details"]] == ["$.stakeholderId"]
        listed = (await capped.call("GET", f"/api/v1/subscriptions?stakeholderId={sid}"))[1]
        assert len(listed["items"]) == 3
        many = stakeholder(subscriptions=[{"rule": {}, "channels": ["email"]}] * 4)
        status, error = await capped.call("POST", "/api/v1/import", body={"stakeholders": [many]})
        assert (status, error["error"]["code"]) == (422, "too_many_subscriptions")
        assert error["error"]["details"][0]["path"] == "$.stakeholders[0].subscriptions"


async def test_import_is_all_or_nothing_and_export_round_trips(api: Api) -> None:
    good = stakeholder(
        contacts=[{"channel": "email", "address": "desk@example.org"}],
        subscriptions=[{"rule": {"kinds": ["sar"]}, "channels": ["email"]}],
    )
    bad = stakeholder(sector="pirates")
    status, error = await api.call("POST", "/api/v1/import", body={"stakeholders": [good, bad]})
    assert (status, error["error"]["code"]) == (422, "schema_violation")
    assert "$.stakeholders[1].sector" in [d["path"] for d in error["error"]["details"]]
    assert (await api.call("GET", "/api/v1/stakeholders"))[1]["items"] == []
    status, created = await api.call("POST", "/api/v1/import", body={"stakeholders": [good, good]})
    assert status == 201
    assert len(created["stakeholders"]) == 2
    status, exported = await api.call("GET", "/api/v1/export")
    assert len(exported["stakeholders"]) == 2
    first = exported["stakeholders"][0]
    assert [c["address"] for c in first["contacts"]] == ["desk@example.org"]
    assert first["subscriptions"][0]["rule"] == {"kinds": ["sar"]}
    status, _created_again = await api.call("POST", "/api/v1/import", body=exported)
    assert status == 201
    assert len((await api.call("GET", "/api/v1/stakeholders"))[1]["items"]) == 4


async def test_an_import_answers_each_stakeholder_with_its_own_contacts_and_subscriptions(
    api: Api,
) -> None:
    """Each kind goes in one insert: the answer still names, per stakeholder and in order,
    the ids made for its own contacts and subscriptions, a signing secret for each webhook
    contact only, and a contact repeated inside one import refuses the whole import."""
    people = [
        stakeholder(
            name=f"Officer {n}",
            contacts=[
                {"channel": "webhook", "address": f"http://127.0.0.1:9/cad{n}"},
                *[{"channel": "email", "address": f"p{n}-{m}@example.org"} for m in range(n)],
            ],
            subscriptions=[{"rule": {"kinds": ["bolo"]}, "channels": ["email"]}] * (2 - n),
        )
        for n in range(3)
    ]
    status, created = await api.call("POST", "/api/v1/import", body={"stakeholders": people})
    assert status == 201, created
    for n, summary in enumerate(created["stakeholders"]):
        _, holder = await api.call("GET", f"/api/v1/stakeholders/{summary['id']}")
        assert holder["name"] == f"Officer {n}"
        assert [bool(c.get("signingSecret")) for c in summary["contacts"]] == [True] + [False] * n
        for contact in summary["contacts"]:
            _, stored = await api.call("GET", f"/api/v1/contacts/{contact['id']}")
            assert stored["stakeholderId"] == summary["id"]
        assert len(summary["subscriptions"]) == 2 - n
        for subscription in summary["subscriptions"]:
            _, stored = await api.call("GET", f"/api/v1/subscriptions/{subscription['id']}")
            assert stored["stakeholderId"] == summary["id"]
    twice = stakeholder(contacts=[{"channel": "email", "address": "same@example.org"}] * 2)
    status, error = await api.call("POST", "/api/v1/import", body={"stakeholders": [twice]})
    assert (status, error["error"]["code"]) == (422, "duplicate_contact")
    assert len((await api.call("GET", "/api/v1/stakeholders"))[1]["items"]) == 3


async def test_duplicate_contacts_are_refused_not_crashing(api: Api) -> None:
    sid = await create_stakeholder(api)
    body = {"stakeholderId": sid, "channel": "email", "address": "dup@example.org"}
    assert (await api.call("POST", "/api/v1/contacts", body=body))[0] == 201
    status, error = await api.call("POST", "/api/v1/contacts", body=body)
    assert (status, error["error"]["code"]) == (422, "duplicate_contact")


@pytest.mark.parametrize(
    ("path", "status", "code"),
    [
        ("/api/v1/stakeholders?limit=%C2%B2", 400, "invalid_parameter"),
        ("/api/v1/audit?after=99999999999999999999", 400, "invalid_parameter"),
        ("/api/v1/stakeholders?organization=a%00b", 400, "invalid_parameter"),
        ("/api/v1/stakeholders/a%00b", 404, "not_found"),
        ("/api/v1/stakeholders?limit=" + "9" * 5000, 400, "invalid_parameter"),
        ("/api/v1/audit?after=" + "0" * 5000, 400, "invalid_parameter"),
    ],
)
async def test_hostile_parameters_get_clear_errors(
    api: Api, path: str, status: int, code: str
) -> None:
    got, error = await api.call("GET", path)
    assert (got, error["error"]["code"]) == (status, code)


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (b'{"name": "a", "name": "b"}', "invalid_json"),
        (b'{"name": "a\\u0000b"}', "invalid_json"),
        (b"[" * 10000 + b"]" * 10000, "invalid_json"),
        (b'{"n": NaN}', "invalid_json"),
        (b'{"name": ' + b"1" * 5000 + b"}", "invalid_json"),
        (b'{"name": 1e999}', "invalid_json"),
    ],
)
async def test_hostile_bodies_get_clear_errors(api: Api, raw: bytes, code: str) -> None:
    async with api.session.post(
        api.base + "/api/v1/stakeholders",
        data=raw,
        headers={"Authorization": f"Bearer {api.tokens['admin']}"},
    ) as response:
        assert response.status == 400
        assert (await response.json())["error"]["code"] == code


JUSTIFICATION = "Imminent danger to the named stakeholder, confirmed by phone."
NULLABLE = {("/api/v1/stakeholders", "quietHours"), ("/api/v1/subscriptions", "escalationId")}


def _null_cases(sid: str) -> list[tuple[str, dict[str, Any], str]]:
    """(path, body, the field that is null) for every field of every admin body."""
    contact = {"stakeholderId": sid, "channel": "email", "address": "n@example.org"}
    subscription = {"stakeholderId": sid, "rule": {}, "channels": ["email"]}
    step = {"afterSeconds": 60, "action": "notify", "supervisors": [sid], "channels": ["email"]}
    cases: list[tuple[str, dict[str, Any], str]] = []
    for path, body in (
        ("/api/v1/stakeholders", stakeholder()),
        ("/api/v1/contacts", contact | {"label": "desk", "active": True}),
        ("/api/v1/subscriptions", subscription | {"ackRequired": True, "enabled": True}),
    ):
        for name in body:
            if (path, name) not in NULLABLE:
                cases.append((path, body | {name: None}, f"$.{name}"))
    cases += [
        ("/api/v1/stakeholders", stakeholder(clearance={"maxTlp": None}), "$.clearance.maxTlp"),
        ("/api/v1/subscriptions", subscription | {"rule": {"tlp": None}}, "$.rule.tlp"),
        ("/api/v1/escalations", {"name": "desk", "steps": None}, "$.steps"),
        ("/api/v1/escalations", {"name": None, "steps": [step]}, "$.name"),
        (
            "/api/v1/escalations",
            {"name": "d", "steps": [step | {"channels": None}]},
            "$.steps[0].channels",
        ),
        (
            "/api/v1/import",
            {"stakeholders": [stakeholder(contacts=None)]},
            "$.stakeholders[0].contacts",
        ),
        ("/api/v1/import", {"stakeholders": [stakeholder(kind=None)]}, "$.stakeholders[0].kind"),
        ("/api/v1/alerts/nope/approve", {"comment": None}, "$.comment"),
        ("/api/v1/alerts/nope/reject", {"reason": None}, "$.reason"),
        (
            "/api/v1/alerts/nope/releases",
            {"stakeholderId": sid, "justification": None},
            "$.justification",
        ),
        (
            "/api/v1/alerts/nope/releases",
            {"stakeholderId": None, "justification": JUSTIFICATION},
            "$.stakeholderId",
        ),
        (
            "/api/v1/alerts/nope/releases",
            {"stakeholderId": sid, "justification": JUSTIFICATION, "channels": None},
            "$.channels",
        ),
        ("/api/v1/releases/nope/review", {"note": None}, "$.note"),
        ("/api/v1/alerts/nope/revalidate", {"reason": None}, "$.reason"),
        (
            "/api/v1/alerts/nope/acks",
            {"stakeholderId": sid, "reason": "by phone", "comment": None},
            "$.comment",
        ),
    ]
    return cases


async def test_null_in_any_field_is_422_naming_the_field(api: Api) -> None:
    sid = await create_stakeholder(api)
    wrong = []
    for path, body, field in _null_cases(sid):
        status, answer = await api.call("POST", path, body=body)
        named = [d["path"] for d in answer["error"]["details"]] if status >= 400 else []
        if status != 422 or field not in named:
            wrong.append((path, field, status, named))
    assert wrong == [], "\n".join(map(str, wrong))
    for path, name in sorted(NULLABLE):
        body = (
            stakeholder()
            if path.endswith("stakeholders")
            else {"stakeholderId": sid, "rule": {}, "channels": ["email"]}
        )
        status, answer = await api.call("POST", path, body=body | {name: None})
        assert status == 201, answer


async def test_contacts_csv_export_and_import(api: Api) -> None:
    sid = await create_stakeholder(api)
    rows = (
        "stakeholderId,channel,address,label,active\n"
        f'{sid},email,ops@example.org,=HYPERLINK("x"),true\n'
        f"{sid},sms,202-555-0188,,false\n"
    )
    async with api.session.post(
        api.base + "/api/v1/contacts/import",
        data=rows,
        headers={"Authorization": f"Bearer {api.tokens['admin']}", "Content-Type": "text/csv"},
    ) as response:
        assert response.status == 201
        created = (await response.json())["items"]
    assert [c["address"] for c in created] == ["ops@example.org", "+12025550188"]
    status, exported = await api.call("GET", "/api/v1/contacts.csv")
    assert status == 200
    parsed = list(csv.DictReader(io.StringIO(exported)))
    assert {r["address"] for r in parsed} == {"ops@example.org", "+12025550188"}
    assert all(not r["label"].startswith("=") for r in parsed)
    bad_rows = f"stakeholderId,channel,address\n{sid},email,fine@example.org\n{sid},sms,12\n"
    async with api.session.post(
        api.base + "/api/v1/contacts/import",
        data=bad_rows,
        headers={"Authorization": f"Bearer {api.tokens['admin']}"},
    ) as response:
        error = (await response.json())["error"]
        assert response.status == 422
    assert "$[1].address" in [d["path"] for d in error["details"]]
    assert len((await api.call("GET", "/api/v1/contacts"))[1]["items"]) == 2


async def test_a_contacts_csv_with_nul_is_400_not_stored(api: Api) -> None:
    """csv reads NUL since Python 3.11; PostgreSQL text cannot hold it."""
    sid = await create_stakeholder(api)
    rows = f"stakeholderId,channel,address,label\n{sid},email,nul@example.org,desk\x00\n"
    async with api.session.post(
        api.base + "/api/v1/contacts/import",
        data=rows.encode(),
        headers={"Authorization": f"Bearer {api.tokens['admin']}", "Content-Type": "text/csv"},
    ) as response:
        assert response.status == 400
        assert (await response.json())["error"]["code"] == "invalid_csv"
    assert (await api.call("GET", "/api/v1/contacts"))[1]["items"] == []


async def test_audit_log_cannot_be_changed(api: Api, settings: Settings) -> None:
    await create_stakeholder(api)
    for method in ("PATCH", "DELETE", "PUT", "POST"):
        status, _ = await api.call(method, "/api/v1/audit", body={})
        assert status == 405
    assert api.service.database is not None
    for statement in ("UPDATE audit_log SET actor_name = 'x'", "DELETE FROM audit_log"):
        with pytest.raises(Exception, match="append-only"):
            async with api.service.database.transaction() as conn:
                await conn.execute(text(statement))


async def test_match_dry_run_explains_targets_and_withholdings(api: Api) -> None:
    officer = await create_stakeholder(api)
    desk = await create_stakeholder(
        api,
        name="County EOC desk",
        kind="group",
        sector="emergency_management",
        clearance={"maxTlp": "RED"},
    )
    for sid, address in ((officer, "lee@example.org"), (desk, "eoc@example.org")):
        await api.call(
            "POST",
            "/api/v1/contacts",
            body={"stakeholderId": sid, "channel": "email", "address": address},
        )
        status, _ = await api.call(
            "POST",
            "/api/v1/subscriptions",
            body={"stakeholderId": sid, "rule": {"area": "jurisdiction"}, "channels": ["email"]},
        )
        assert status == 201
    alert = cap_json("MATCH-1", handling={"tlp": "AMBER"})
    status, result = await api.call("POST", "/api/v1/match", role="viewer", body=alert)
    assert status == 200
    (explained,) = result["alerts"]
    assert {t["address"] for t in explained["targets"]} == {"lee@example.org", "eoc@example.org"}
    red = cap_json("MATCH-2", handling={"tlp": "RED"})
    status, result = await api.call("POST", "/api/v1/match", body=red)
    (explained,) = result["alerts"]
    reasons = {w["address"]: w["reason"] for w in explained["withheld"]}
    assert reasons == {
        "lee@example.org": "tlp_above_clearance",
        "eoc@example.org": "red_requires_named_individual",
    }
    assert explained["targets"] == []
    status, error = await api.call("POST", "/api/v1/match", body={"identifier": "x"})
    assert (status, error["error"]["code"]) == (422, "schema_violation")


async def test_a_change_made_on_one_instance_reaches_the_others_matcher(
    api: Api, service_env: dict[str, str]
) -> None:
    env = service_env | {
        "DISSEMINATION_WEBHOOK_ALLOWED_NETWORKS": "127.0.0.1/32",
        "DISSEMINATION_SERVICE_DIRECTORY_POLL_SECONDS": "0.05",
    }
    other = Service(load_settings(env))
    await other.start()
    try:
        assert other.http is not None
        other_matcher = other.http.app[ADMIN].matcher
        sid = await create_stakeholder(api)
        await api.call(
            "POST",
            "/api/v1/contacts",
            body={"stakeholderId": sid, "channel": "email", "address": "a@example.org"},
        )
        status, _subscription = await api.call(
            "POST",
            "/api/v1/subscriptions",
            body={"stakeholderId": sid, "rule": {}, "channels": ["email"]},
        )
        assert status == 201
        alert = alert_from_cap(
            cap_json("FOLLOW-1"), "cap-json", HandlingDefaults(Tlp.AMBER, Tlp.CLEAR)
        )

        async def targeted(expected: int) -> bool:
            return len(other_matcher.match(alert).targets) == expected

        await wait_until(
            lambda: targeted(1), timeout=10, what="the other instance to see the subscription"
        )
        assert (await api.call("DELETE", f"/api/v1/stakeholders/{sid}"))[0] == 204
        await wait_until(
            lambda: targeted(0), timeout=10, what="the other instance to see the deletion"
        )
    finally:
        await other.stop()
