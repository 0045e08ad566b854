"""Ad-hoc and scheduled sends through the running service, on both stores, with a real broker
and loopback email and webhook sinks: a list-based BOLO with its dry run first (the dry run's
recipients are the delivered ones; a non-member with a matching standing subscription gets
nothing), withheld members named with reasons, approval holding a send, an Update reaching
the same audience, a scheduled send released after a restart, cancelled before it is due,
released once by two instances on one PostgreSQL, and bad input refused with nothing sent."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest
from sqlalchemy import func, select, update

from dissemination.api.tokens import Role, TokenStore
from dissemination.ledger.sends import Sends
from dissemination.service import Service
from dissemination.store.tables import alerts, audit_log, sends
from tests.alerts import TEST_SENDERS, fixture_document
from tests.brokerutil import wait_until
from tests.deliveryrig import Sinks, StartService, custom_service_fixture, rows_of, settled
from tests.deliveryrig import sinks_fixture as sinks_fixture
from tests.people import Enrolled, enrol

pytestmark = pytest.mark.slow
custom_service = custom_service_fixture


@dataclass
class Desk:
    """A running service and a client holding one token per role."""

    service: Service
    sinks: Sinks
    session: aiohttp.ClientSession
    base: str
    tokens: dict[str, str]

    async def call(
        self, method: str, path: str, body: Any = None, role: str = "publisher"
    ) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {self.tokens[role]}"}
        data = None if body is None else json.dumps(body)
        if data is not None:
            headers["Content-Type"] = "application/json"
        async with self.session.request(
            method, self.base + path, headers=headers, data=data
        ) as response:
            raw = await response.read()
            return response.status, json.loads(raw) if raw else None

    async def send(self, body: dict[str, Any], expect: int = 202) -> Any:
        status, answer = await self.call("POST", "/api/v1/sends", body)
        assert status == expect, answer
        return answer

    async def people(self) -> tuple[Enrolled, Enrolled, Enrolled, Enrolled]:
        """Two cleared members (email, webhook), a member cleared for GREEN only, and a
        non-member whose standing subscription matches everything."""
        hooks = self.sinks.hooks.base
        ana = await enrol(self.service, "Ana", {"email": "ana@example.org"})
        ben = await enrol(self.service, "Ben", {"webhook": hooks + "ok"})
        cal = await enrol(self.service, "Cal", {"email": "cal@example.org"}, max_tlp="GREEN")
        dee = await enrol(self.service, "Dee", {"email": "dee@example.org"})
        return ana, ben, cal, dee

    async def list_of(self, name: str, *members: Enrolled) -> str:
        body = {"name": name, "members": [{"kind": "stakeholder", "id": m.id} for m in members]}
        status, created = await self.call("POST", "/api/v1/lists", body, role="admin")
        assert status == 201, created
        return str(created["id"])


async def start_desk(start: StartService, sinks: Sinks, **overrides: str) -> Desk:
    service, _settings, _channel = await start(**overrides)
    store = TokenStore(service.database)
    tokens = {}
    for role in Role:
        _info, tokens[role.value] = await store.create(
            f"{role.value}-{id(service)}", role, datetime.now(UTC), TEST_SENDERS
        )
    host, port = service.http.addresses[0][:2]
    return Desk(service, sinks, _session(), f"http://{host}:{port}", tokens)


_sessions: list[aiohttp.ClientSession] = []


def _session() -> aiohttp.ClientSession:
    session = aiohttp.ClientSession()
    _sessions.append(session)
    return session


@pytest.fixture(autouse=True)
async def sessions_closed() -> AsyncIterator[None]:
    yield
    while _sessions:
        await _sessions.pop().close()


@pytest.fixture
async def desk(custom_service: StartService, sinks: Sinks) -> Desk:
    return await start_desk(custom_service, sinks)


def bolo(**changes: Any) -> dict[str, Any]:
    """A BOLO as an analyst composes it: no identifier or sent (filled in), AMBER."""
    document = fixture_document("bolo_minimal.json") | {"handling": {"tlp": "AMBER"}} | changes
    del document["identifier"], document["sent"]
    return document


def keys(rows: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    return {(r["stakeholderId"], r["channel"], r["address"]) for r in rows}


async def audit_actions(service: Service, entity_id: str | None = None) -> list[str]:
    async with service.database.reading() as conn:
        query = select(audit_log.c.action).where(audit_log.c.entity == "send")
        if entity_id is not None:
            query = query.where(audit_log.c.entity_id == entity_id)
        return list(await conn.scalars(query.order_by(audit_log.c.id)))


async def count(service: Service, table: Any) -> int:
    async with service.database.reading() as conn:
        return int(await conn.scalar(select(func.count()).select_from(table)) or 0)


async def test_list_send_with_dry_run_reaches_exactly_the_list(desk: Desk) -> None:
    ana, ben, cal, dee = await desk.people()
    watch = await desk.list_of("Watch desk", ana, ben, cal)
    request = {"alert": bolo(), "audience": {"lists": [watch]}}

    plan = await desk.send(request | {"dryRun": True}, expect=200)
    hook = desk.sinks.hooks.base + "ok"
    assert keys(plan["targets"]) == {
        (ana.id, "email", "ana@example.org"),
        (ben.id, "webhook", hook),
    }
    assert [(w["stakeholderId"], w["reason"]) for w in plan["withheld"]] == [
        (cal.id, "tlp_above_clearance")
    ]
    assert plan["approval"] == {"required": False, "rule": None}
    assert (plan["recipients"], plan["withheldCount"]) == (2, 1)
    # a dry run writes nothing but its audit entry
    assert (await count(desk.service, sends), await count(desk.service, alerts)) == (0, 0)
    assert await audit_actions(desk.service) == ["dry_run"]

    sent = await desk.send(request)
    assert sent["state"] == "released"
    rows = await settled(desk.service, sent["alertId"], 3)
    delivered = {
        (r["stakeholder_id"], r["channel"], r["address"])
        for r in rows
        if r["state"] in ("sent", "delivered")
    }
    assert delivered == keys(plan["targets"])
    withheld = [(r["stakeholder_id"], r["reason"]) for r in rows if r["state"] == "withheld"]
    assert withheld == [(cal.id, "tlp_above_clearance")]
    assert {r["origin"] for r in rows} == {"audience"}
    assert dee.id not in {r["stakeholder_id"] for r in rows}  # standing subscriptions: no
    recipients = {to for m in desk.sinks.smtp.messages for to in m.rcpt_tos}
    assert recipients == {"ana@example.org"}
    assert await audit_actions(desk.service, sent["id"]) == ["create", "release"]
    status, listed = await desk.call("GET", "/api/v1/sends", role="viewer")
    assert status == 200
    assert [(s["id"], s["state"]) for s in listed["items"]] == [(sent["id"], "released")]
    assert listed["items"][0]["audience"]["lists"] == [watch]


async def test_update_reaches_the_same_audience(desk: Desk) -> None:
    ana, _ben, _cal, dee = await desk.people()
    sent = await desk.send({"alert": bolo(), "audience": {"stakeholders": [ana.id]}})
    await settled(desk.service, sent["alertId"], 1)
    async with desk.service.database.reading() as conn:
        row = (await conn.execute(select(alerts).where(alerts.c.id == sent["alertId"]))).one()
    update_doc = fixture_document("bolo_minimal.json") | {
        "identifier": row.identifier + "-u1",
        "sent": datetime.now(UTC).isoformat(timespec="seconds"),
        "msgType": "Update",
        "handling": {"tlp": "AMBER"},
        "references": [{"sender": row.sender, "identifier": row.identifier, "sent": row.sent}],
    }
    status, answer = await desk.call("POST", "/api/v1/alerts", update_doc)
    assert status == 202, answer
    rows = await settled(desk.service, answer["id"], 1)
    assert [r["stakeholder_id"] for r in rows] == [ana.id]  # not Dee's standing subscription
    assert dee.id not in {r["stakeholder_id"] for r in rows}


async def test_approval_holds_a_send(desk: Desk) -> None:
    ana = await enrol(
        desk.service,
        "Ana",
        {"email": "ana@example.org"},
        clearance={"maxTlp": "AMBER", "caveats": ["PII"]},
    )
    request = {
        "alert": bolo(handling={"tlp": "AMBER", "caveats": ["PII"]}),
        "audience": {"stakeholders": [ana.id]},
    }
    plan = await desk.send(request | {"dryRun": True}, expect=200)
    assert plan["approval"] == {"required": True, "rule": "local pii"}
    sent = await desk.send(request)

    async def held() -> bool:
        return [r["state"] for r in await rows_of(desk.service, sent["alertId"])] == ["held"]

    await wait_until(held, what="the send's row held for approval")
    assert desk.sinks.smtp.messages == []


async def _schedule(desk: Desk, audience: dict[str, Any], hours: float = 1) -> dict[str, Any]:
    send_at = (datetime.now(UTC) + timedelta(hours=hours)).isoformat(timespec="seconds")
    sent = await desk.send({"alert": bolo(), "audience": audience, "sendAt": send_at})
    assert sent["state"] == "scheduled"
    return dict(sent)


async def _come_due(service: Service, send_id: str) -> None:
    """Time passes: the send's moment is now behind us (as a clock moved on would have it)."""
    async with service.database.transaction() as conn:
        past = datetime.now(UTC) - timedelta(seconds=1)
        await conn.execute(update(sends).where(sends.c.id == send_id).values(send_at=past))


async def test_scheduled_send_survives_a_restart(
    custom_service: StartService, sinks: Sinks
) -> None:
    fast = {"sends_poll_seconds": "0.2"}
    first = await start_desk(custom_service, sinks, **fast)
    ana = await enrol(first.service, "Ana", {"email": "ana@example.org"})
    sent = await _schedule(first, {"stakeholders": [ana.id]})
    await first.service.stop()
    await _come_due_offline(first, sent["id"])
    second = await start_desk(custom_service, sinks, **fast)
    rows = await settled(second.service, sent["alertId"], 1)
    assert [(r["stakeholder_id"], r["state"]) for r in rows] == [(ana.id, "sent")]

    async def marked_released() -> bool:  # written after the publish, so after a quick send
        _, shown = await second.call("GET", f"/api/v1/sends/{sent['id']}")
        return bool(shown["state"] == "released")

    await wait_until(marked_released, what="the send marked released")
    status, shown = await second.call("GET", f"/api/v1/sends/{sent['id']}")
    assert (status, shown["state"]) == (200, "released")
    assert await audit_actions(second.service, sent["id"]) == ["create", "release"]
    assert len(sinks.smtp.messages) == 1


async def _come_due_offline(desk: Desk, send_id: str) -> None:
    """The same, while the service is stopped: through a store of its own."""
    from dissemination.store.database import Database

    settings = desk.service.settings
    database = Database.from_settings(settings.store, settings.data_path)
    try:
        async with database.transaction() as conn:
            past = datetime.now(UTC) - timedelta(seconds=1)
            await conn.execute(update(sends).where(sends.c.id == send_id).values(send_at=past))
            assert int(await conn.scalar(select(func.count()).select_from(alerts)) or 0) == 0
    finally:
        await database.close()


async def test_cancel_before_due(desk: Desk) -> None:
    ana = await enrol(desk.service, "Ana", {"email": "ana@example.org"})
    sent = await _schedule(desk, {"stakeholders": [ana.id]})
    path = f"/api/v1/sends/{sent['id']}"
    assert (await desk.call("DELETE", path, role="viewer"))[0] == 403
    assert (await desk.call("DELETE", path))[0] == 204
    status, error = await desk.call("DELETE", path)
    assert (status, error["error"]["code"]) == (409, "not_cancellable")
    assert (await desk.call("GET", path))[1]["state"] == "cancelled"
    later = Sends(desk.service.database)
    assert await later.due(datetime.now(UTC) + timedelta(days=1)) == []
    await _come_due(desk.service, sent["id"])
    assert await desk.service.releaser.run_due() == 0
    assert await count(desk.service, alerts) == 0
    assert await audit_actions(desk.service, sent["id"]) == ["create", "cancel"]
    assert (await desk.call("DELETE", "/api/v1/sends/nope"))[0] == 404


@pytest.mark.parametrize("store_kind", ["postgresql"])
async def test_two_instances_release_once(
    custom_service: StartService, sinks: Sinks, store_kind: str
) -> None:
    one = await start_desk(custom_service, sinks)
    two = await start_desk(custom_service, sinks, http_port="0")
    ana = await enrol(one.service, "Ana", {"email": "ana@example.org"})
    await enrol(two.service, "Placeholder", {"email": "p@example.org"})
    sent = await _schedule(one, {"stakeholders": [ana.id]})
    await _come_due(one.service, sent["id"])
    results = await asyncio.gather(
        *(s.releaser.release(sent["id"]) for s in (one.service, two.service) for _ in range(3))
    )
    assert sum(results) <= 1  # a periodic job may have been first: then none of these
    rows = await settled(one.service, sent["alertId"], 1)
    assert [r["stakeholder_id"] for r in rows] == [ana.id]
    assert await audit_actions(one.service, sent["id"]) == ["create", "release"]


async def test_bad_input_is_refused_and_nothing_is_sent(
    custom_service: StartService, sinks: Sinks
) -> None:
    desk = await start_desk(custom_service, sinks, sends_max_audience="2")
    ana, ben, cal, _dee = await desk.people()
    everyone = await desk.list_of("Everyone", ana, ben, cal)
    cases: list[tuple[dict[str, Any], int, str, str]] = [
        ({"alert": bolo(), "audience": {"lists": ["nope"]}}, 422, "unknown_recipient",
         "$.audience.lists[0]"),
        ({"alert": bolo(), "audience": {"stakeholders": [ana.id, "ghost"]}}, 422,
         "unknown_recipient", "$.audience.stakeholders[1]"),
        ({"alert": {k: v for k, v in bolo().items() if k != "details"},
          "audience": {"stakeholders": [ana.id]}}, 422, "schema_violation", "$.alert"),
        ({"alert": bolo(), "audience": {"stakeholders": [ana.id]},
          "sendAt": "2020-01-01T00:00:00Z"}, 422, "send_at_past", "$.sendAt"),
        ({"alert": bolo(), "audience": {"lists": [everyone]}}, 422, "audience_too_large",
         "$.audience"),
        ({"alert": bolo(), "audience": {}}, 422, "schema_violation", "$.audience"),
        ({"alert": bolo(), "audience": {"stakeholders": [ana.id]}, "extra": 1}, 422,
         "schema_violation", "$"),
        ({"alert": bolo(sender="someone@else.example"), "audience": {"stakeholders": [ana.id]}},
         403, "sender_not_allowed", ""),
    ]  # fmt: skip
    for body, status, code, path in cases:
        got, error = await desk.call("POST", "/api/v1/sends", body)
        assert (got, error["error"]["code"]) == (status, code), (body, error)
        if path:
            assert any(d["path"].startswith(path) for d in error["error"]["details"]), error
    got, error = await desk.call("POST", "/api/v1/sends", cases[0][0], role="viewer")
    assert (got, error["error"]["code"]) == (403, "forbidden")
    assert (await count(desk.service, sends), await count(desk.service, alerts)) == (0, 0)
    assert await audit_actions(desk.service) == []
    assert desk.sinks.smtp.messages == []
    # and the service still sends
    sent = await desk.send({"alert": bolo(), "audience": {"stakeholders": [ana.id]}})
    await settled(desk.service, sent["alertId"], 1)
