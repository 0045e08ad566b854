"""Distribution lists through the admin API of the running service, on both stores: CRUD with
audit entries, resolution through nesting, cycles refused (directly and through three
levels), deletion refused while a list is used, bad input with clear errors, subscription
rules restricted to a list's members, and another instance's matcher following list
changes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from core.alert import Tlp
from dissemination.api.directory import ADMIN
from dissemination.intake.normalize import HandlingDefaults, alert_from_cap
from dissemination.service import Service
from dissemination.settings import load_settings
from testbed.alerts import cap_json
from tests.apirig import Api, api_client, create_stakeholder
from tests.brokerutil import wait_until

pytestmark = pytest.mark.slow


@pytest.fixture
async def api(service_env: dict[str, str]) -> AsyncIterator[Api]:
    async for client in api_client(service_env):
        yield client


async def _create_list(api: Api, name: str, *members: tuple[str, str]) -> str:
    body: dict[str, Any] = {"name": name}
    if members:
        body["members"] = [{"kind": kind, "id": member_id} for kind, member_id in members]
    status, created = await api.call("POST", "/api/v1/lists", body=body)
    assert status == 201, created
    return str(created["id"])


async def _add(api: Api, list_id: str, kind: str, member_id: str) -> tuple[int, Any]:
    return await api.call(
        "POST", f"/api/v1/lists/{list_id}/members", body={"kind": kind, "id": member_id}
    )


async def _audit_actions(api: Api, list_id: str) -> list[str]:
    status, page = await api.call(
        "GET", f"/api/v1/audit?entity=distribution_list&entityId={list_id}"
    )
    assert status == 200
    return [entry["action"] for entry in page["items"]]


async def test_list_lifecycle_resolves_nesting_and_is_audited(api: Api) -> None:
    s1, s2, s3 = [await create_stakeholder(api, name=f"Officer {i}") for i in (1, 2, 3)]
    desk = await _create_list(api, "Watch desk", ("stakeholder", s1))
    region = await _create_list(api, "Region", ("list", desk), ("stakeholder", s2))
    state = await _create_list(api, "State", ("list", region))
    assert (await _add(api, state, "stakeholder", s3))[0] == 201
    status, shown = await api.call("GET", f"/api/v1/lists/{state}", role="viewer")
    assert status == 200
    assert shown["members"] == [
        {"kind": "list", "id": region},
        {"kind": "stakeholder", "id": s3},
    ]
    assert shown["stakeholders"] == sorted([s1, s2, s3])
    # adding a member twice changes nothing and writes nothing
    status, same = await _add(api, state, "stakeholder", s3)
    assert (status, same["members"]) == (200, shown["members"])

    status, renamed = await api.call("PATCH", f"/api/v1/lists/{desk}", body={"name": "Night desk"})
    assert (status, renamed["name"]) == (200, "Night desk")
    status, page = await api.call("GET", "/api/v1/lists?limit=2", role="viewer")
    assert status == 200
    assert len(page["items"]) == 2
    assert page["next"]
    status, rest = await api.call("GET", f"/api/v1/lists?after={page['next']}", role="viewer")
    assert {item["id"] for item in page["items"] + rest["items"]} == {desk, region, state}

    assert (await api.call("DELETE", f"/api/v1/lists/{region}/members/list/{desk}"))[0] == 204
    _status, shown = await api.call("GET", f"/api/v1/lists/{state}")
    assert shown["stakeholders"] == sorted([s2, s3])
    assert (await api.call("DELETE", f"/api/v1/lists/{desk}"))[0] == 204
    assert (await api.call("GET", f"/api/v1/lists/{desk}"))[0] == 404

    assert await _audit_actions(api, state) == ["create", "add_member"]
    assert await _audit_actions(api, region) == ["create", "remove_member"]
    assert await _audit_actions(api, desk) == ["create", "update", "delete"]
    _status, entries = await api.call("GET", f"/api/v1/audit?entityId={desk}")
    assert entries["items"][-1]["before"]["name"] == "Night desk"
    assert entries["items"][-1]["actor"]["name"] == "admin-1"


async def test_cycles_are_refused_naming_their_path(api: Api) -> None:
    a = await _create_list(api, "A")
    status, error = await _add(api, a, "list", a)
    assert (status, error["error"]["code"]) == (409, "list_cycle")
    assert error["error"]["details"][0]["message"].endswith(f"{a} > {a}")
    b = await _create_list(api, "B", ("list", a))
    c = await _create_list(api, "C", ("list", b))
    d = await _create_list(api, "D", ("list", c))
    status, error = await _add(api, a, "list", d)
    assert (status, error["error"]["code"]) == (409, "list_cycle")
    assert error["error"]["details"][0] == {
        "path": "$.id",
        "message": f"the lists would form a cycle: {a} > {d} > {c} > {b} > {a}",
    }
    # nothing was written: A still has no members, and no audit entry says otherwise
    assert (await api.call("GET", f"/api/v1/lists/{a}"))[1]["members"] == []
    assert await _audit_actions(api, a) == ["create"]


async def test_bad_input_gets_clear_errors(api: Api) -> None:
    sid = await create_stakeholder(api)
    existing = await _create_list(api, "Duty Officers")
    one = f"/api/v1/lists/{existing}"
    members = f"{one}/members"
    someone = {"kind": "stakeholder", "id": sid}
    nobody = {"kind": "list", "id": "nope"}
    cases: list[tuple[str, str, Any, int, str, str | None]] = [
        ("POST", "/api/v1/lists", {"name": "x" * 201}, 422, "schema_violation", "$.name"),
        ("POST", "/api/v1/lists", {"name": ""}, 422, "schema_violation", "$.name"),
        ("POST", "/api/v1/lists", {"name": " padded"}, 422, "schema_violation", "$.name"),
        ("POST", "/api/v1/lists", {"name": "duty OFFICERS"}, 409, "duplicate_list_name", "$.name"),
        (
            "POST",
            "/api/v1/lists",
            {"name": "New", "members": [someone, nobody]},
            422,
            "unknown_member",
            "$.members[1].id",
        ),
        ("POST", "/api/v1/lists", {"name": "New", "id": "x"}, 422, "schema_violation", None),
        ("POST", members, someone | {"id": "nope"}, 422, "unknown_member", "$.id"),
        ("POST", members, someone | {"kind": "group"}, 422, "schema_violation", "$.kind"),
        ("POST", "/api/v1/lists/nope/members", someone, 404, "not_found", None),
        ("PATCH", one, {"members": []}, 422, "immutable_field", "$.members"),
        ("PATCH", one, {"name": "y" * 201}, 422, "schema_violation", "$.name"),
        ("DELETE", f"{members}/stakeholder/{sid}", None, 404, "not_found", None),
        ("DELETE", f"{members}/group/{sid}", None, 404, "not_found", None),
        ("DELETE", "/api/v1/lists/nope", None, 404, "not_found", None),
        ("GET", "/api/v1/lists?name=x", None, 400, "invalid_parameter", None),
    ]
    for method, path, body, want_status, want_code, want_path in cases:
        status, error = await api.call(method, path, body=body)
        assert (status, error["error"]["code"]) == (want_status, want_code), (method, path, error)
        if want_path is not None:
            assert error["error"]["details"][0]["path"] == want_path, error
    other = await _create_list(api, "Other")
    status, error = await api.call(
        "PATCH", f"/api/v1/lists/{other}", body={"name": "DUTY officers"}
    )
    assert (status, error["error"]["code"]) == (409, "duplicate_list_name")
    # renaming to its own name in another case is no conflict
    status, renamed = await api.call(
        "PATCH", f"/api/v1/lists/{existing}", body={"name": "DUTY officers"}
    )
    assert (status, renamed["name"]) == (200, "DUTY officers")
    assert (await api.call("POST", "/api/v1/lists", role="viewer", body={"name": "Z"}))[0] == 403
    assert (await api.call("GET", "/api/v1/lists", role=None))[0] == 401


async def _subscribe(api: Api, sid: str, rule: dict[str, Any]) -> tuple[int, Any]:
    await api.call(
        "POST",
        "/api/v1/contacts",
        body={"stakeholderId": sid, "channel": "email", "address": f"{sid[:8]}@example.org"},
    )
    return await api.call(
        "POST",
        "/api/v1/subscriptions",
        body={"stakeholderId": sid, "rule": rule, "channels": ["email"]},
    )


async def _targeted(api: Api, identifier: str) -> set[str]:
    body = cap_json(identifier, handling={"tlp": "GREEN"})
    status, result = await api.call("POST", "/api/v1/match", role="viewer", body=body)
    assert status == 200, result
    return {t["stakeholderId"] for t in result["alerts"][0]["targets"]}


async def test_rules_reach_only_the_members_of_their_lists(api: Api) -> None:
    member, outsider = [await create_stakeholder(api, name=n) for n in ("In", "Out")]
    desk = await _create_list(api, "Desk", ("stakeholder", member))
    region = await _create_list(api, "Region", ("list", desk))
    status, error = await _subscribe(api, member, {"lists": [region, "no-such-list"]})
    assert (status, error["error"]["code"]) == (422, "unknown_list")
    assert error["error"]["details"] == [
        {"path": "$.rule.lists[1]", "message": "no distribution list 'no-such-list'"}
    ]
    for sid in (member, outsider):
        status, created = await _subscribe(api, sid, {"lists": [region], "area": "jurisdiction"})
        assert status == 201, created
    assert await _targeted(api, "LISTS-1") == {member}
    assert (await _add(api, desk, "stakeholder", outsider))[0] == 201
    assert await _targeted(api, "LISTS-2") == {member, outsider}

    status, error = await api.call("DELETE", f"/api/v1/lists/{region}")
    assert (status, error["error"]["code"]) == (409, "list_in_use")
    named = {d["path"].split()[0] for d in error["error"]["details"]}
    assert named == {"subscription"}
    assert len(error["error"]["details"]) == 2
    status, error = await api.call("DELETE", f"/api/v1/lists/{desk}")
    assert (status, error["error"]["code"]) == (409, "list_in_use")
    assert error["error"]["details"] == [
        {"path": f"list {region}", "message": "contains this list"}
    ]
    assert (await api.call("GET", f"/api/v1/lists/{desk}"))[0] == 200


async def test_a_deleted_stakeholder_leaves_its_lists_audited(api: Api) -> None:
    sid = await create_stakeholder(api)
    keep = await create_stakeholder(api, name="Stays")
    desk = await _create_list(api, "Desk", ("stakeholder", sid), ("stakeholder", keep))
    assert (await api.call("DELETE", f"/api/v1/stakeholders/{sid}"))[0] == 204
    _status, shown = await api.call("GET", f"/api/v1/lists/{desk}")
    assert shown["members"] == [{"kind": "stakeholder", "id": keep}]
    _status, entries = await api.call(
        "GET", f"/api/v1/audit?entity=distribution_list&entityId={desk}"
    )
    removal = entries["items"][-1]
    assert (removal["action"], removal["reason"]) == ("remove_member", "stakeholder deleted")
    assert {"kind": "stakeholder", "id": sid} in removal["before"]["members"]


async def test_another_instance_follows_list_changes(api: Api, service_env: dict[str, str]) -> None:
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
        desk = await _create_list(api, "Desk")
        status, _created = await _subscribe(api, sid, {"lists": [desk]})
        assert status == 201
        alert = alert_from_cap(
            cap_json("FOLLOW-LISTS"), "cap-json", HandlingDefaults(Tlp.AMBER, Tlp.CLEAR)
        )

        async def targeted(expected: int) -> bool:
            return len(other_matcher.match(alert).targets) == expected

        async def subscribed() -> bool:
            return other_matcher.stakeholder(sid) is not None and len(other_matcher) == 1

        await wait_until(subscribed, timeout=10, what="the other instance to see the subscription")
        assert await targeted(0)
        assert (await _add(api, desk, "stakeholder", sid))[0] == 201
        await wait_until(
            lambda: targeted(1), timeout=10, what="the other instance to see the member"
        )
        path = f"/api/v1/lists/{desk}/members/stakeholder/{sid}"
        assert (await api.call("DELETE", path))[0] == 204
        await wait_until(lambda: targeted(0), timeout=10, what="the other instance to see it go")
    finally:
        await other.stop()
