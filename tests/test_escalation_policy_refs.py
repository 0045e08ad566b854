"""A subscription names only an escalation policy that exists, however it is made: an import
naming none is refused whole (422 `unknown_escalation`, with the subscription's path), as one
subscription created alone is; and a policy that subscriptions still name is not deleted (409
`policy_in_use`, naming them) until none does."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.apirig import Api, api_client, create_stakeholder, stakeholder

BOGUS = "00000000-0000-0000-0000-00000000dead"


@pytest.fixture
async def api(service_env: dict[str, str]) -> AsyncIterator[Api]:
    async for client in api_client(service_env):
        yield client


async def _policy(api: Api) -> str:
    body = {"name": "desk", "steps": [{"afterSeconds": 60, "action": "resend"}]}
    status, policy = await api.call("POST", "/api/v1/escalations", body=body)
    assert status == 201, policy
    return str(policy["id"])


def _subscription(escalation_id: str | None) -> dict[str, Any]:
    return {"rule": {}, "channels": ["email"], "ackRequired": True, "escalationId": escalation_id}


async def test_an_import_naming_no_escalation_policy_is_refused_whole(api: Api) -> None:
    policy = await _policy(api)
    items = [
        stakeholder(name="Named", subscriptions=[_subscription(policy)]),
        stakeholder(name="Dangling", subscriptions=[_subscription(None), _subscription(BOGUS)]),
    ]
    status, error = await api.call("POST", "/api/v1/import", body={"stakeholders": items})
    assert status == 422, error
    assert error["error"]["code"] == "unknown_escalation"
    assert error["error"]["details"] == [
        {
            "path": "$.stakeholders[1].subscriptions[1].escalationId",
            "message": f"no escalation policy {BOGUS!r}",
        }
    ]
    _status, stored = await api.call("GET", "/api/v1/stakeholders")
    assert stored["items"] == []  # nothing of it

    status, made = await api.call("POST", "/api/v1/import", body={"stakeholders": items[:1]})
    assert status == 201, made
    [sub] = made["stakeholders"][0]["subscriptions"]
    _status, shown = await api.call("GET", f"/api/v1/subscriptions/{sub['id']}")
    assert shown["escalationId"] == policy


async def test_a_policy_subscriptions_name_is_not_deleted(api: Api) -> None:
    policy = await _policy(api)
    holder = await create_stakeholder(api)
    subs = []
    for _ in range(2):
        body = _subscription(policy) | {"stakeholderId": holder}
        status, sub = await api.call("POST", "/api/v1/subscriptions", body=body)
        assert status == 201, sub
        subs.append(sub["id"])

    status, error = await api.call("DELETE", f"/api/v1/escalations/{policy}")
    assert status == 409, error
    assert error["error"]["code"] == "policy_in_use"
    assert error["error"]["details"] == [
        {"path": f"subscription {sub_id}", "message": "names this policy"}
        for sub_id in sorted(subs)
    ]
    assert (await api.call("GET", f"/api/v1/escalations/{policy}"))[0] == 200

    # once no subscription names it, it goes
    first, second = subs
    patched = await api.call("PATCH", f"/api/v1/subscriptions/{first}", body={"escalationId": None})
    assert patched[0] == 200
    assert (await api.call("DELETE", f"/api/v1/subscriptions/{second}"))[0] == 204
    assert (await api.call("DELETE", f"/api/v1/escalations/{policy}"))[0] == 204
    assert (await api.call("DELETE", f"/api/v1/escalations/{policy}"))[0] == 404
