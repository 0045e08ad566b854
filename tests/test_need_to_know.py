"""Need-to-know for staff: every TLP x caveat x staff clearance x read endpoint, through the
running service. A forbidden cell discloses nothing of the alert (no identifier, details,
recipient name, address or stakeholder id anywhere in the body or stream) and names what
it withheld; an allowed cell shows the content. A shared token still reads everything.

The rule is written out here independently of `subscriptions.clearance`: a reader may read
an alert only if its clearance ranks at or above the TLP, it holds every caveat, and LES
only if it is law enforcement.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest

from dissemination.accounts.store import AccountStore
from dissemination.api.tokens import Role, TokenStore
from dissemination.service import Service
from dissemination.store.audit import Actor
from tests.alerts import TEST_SENDERS, fixture_document
from tests.brokerutil import wait_until
from tests.deliveryrig import Sinks, StartService, custom_service_fixture, rows_of
from tests.deliveryrig import sinks_fixture as sinks_fixture
from tests.people import enrol

pytestmark = pytest.mark.slow
custom_service = custom_service_fixture

TLPS = ("CLEAR", "GREEN", "AMBER", "AMBER+STRICT", "RED")
CAVEATS: tuple[tuple[str, ...], ...] = ((), ("LES",), ("PII",))
CLEARANCES: dict[str, dict[str, Any]] = {
    "public": {"maxTlp": "CLEAR"},
    "green": {"maxTlp": "GREEN", "caveats": ["PII"]},
    "partner": {"maxTlp": "AMBER", "caveats": ["LES"]},
    "analyst": {"maxTlp": "RED", "caveats": ["PII"]},
    "officer": {"maxTlp": "RED", "caveats": ["LES", "PII"], "lawEnforcement": True},
}
VIEW_KEYS = {"id", "kind", "status", "msgType", "handling", "state", "receivedAt", "counts"}


def permitted(tlp: str, caveats: tuple[str, ...], cleared: str) -> bool:
    clearance = CLEARANCES[cleared]
    if TLPS.index(tlp) > TLPS.index(clearance["maxTlp"]):
        return False
    if not set(caveats) <= set(clearance.get("caveats", ())):
        return False
    return "LES" not in caveats or bool(clearance.get("lawEnforcement"))


@dataclass
class Seeded:
    """One alert sent to its own recipient, and the text that is its content."""

    n: int
    tlp: str
    caveats: tuple[str, ...]
    request: dict[str, Any]
    alert_id: str = ""
    send_id: str = ""
    held: bool = False
    secrets: list[str] = field(default_factory=list)


@dataclass
class Reader:
    http: aiohttp.ClientSession
    base: str
    token: str

    async def call(self, method: str, path: str, body: Any = None) -> tuple[int, str]:
        headers = {"Authorization": f"Bearer {self.token}"}
        async with self.http.request(method, self.base + path, json=body, headers=headers) as r:
            return r.status, await r.text()

    async def json(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        status, text = await self.call(method, path, body)
        return status, json.loads(text) if text else None

    async def first_event(self, path: str) -> str:
        """The stream up to its first event, then leave."""
        headers = {"Authorization": f"Bearer {self.token}"}
        async with self.http.get(self.base + path, headers=headers) as response:
            assert response.status == 200, await response.text()
            seen = b""
            while b"\n\n" not in seen:
                seen += await response.content.readany()
            return seen.decode()


def bolo(item: Seeded) -> dict[str, Any]:
    document = fixture_document("bolo_minimal.json") | {
        "identifier": f"NTK-IDENT-{item.n}-X",
        "details": f"Details secret {item.n} of a stolen truck.",
        "vehicles": [{"description": f"Vehicle secret {item.n}"}],
        "handling": {"tlp": item.tlp, "caveats": list(item.caveats)},
    }
    del document["sent"]
    return document


async def seed(service: Service, shared: Reader) -> list[Seeded]:
    items = []
    for n, (tlp, caveats) in enumerate(itertools.product(TLPS, CAVEATS)):
        name, address = f"Recipient Secret {n}-X", f"recipient-secret-{n}@example.org"
        person = await enrol(
            service,
            name,
            {"email": address},
            rule={"events": ["nothing standing"]},
            clearance=CLEARANCES["officer"],
        )
        item = Seeded(n, tlp, caveats, {})
        item.request = {"alert": bolo(item), "audience": {"stakeholders": [person.id]}}
        status, sent = await shared.json("POST", "/api/v1/sends", item.request)
        assert status == 202, sent
        item.alert_id, item.send_id = sent["alertId"], sent["id"]
        item.secrets = [f"NTK-IDENT-{n}-X", f"secret {n} of", f"Vehicle secret {n}", name]
        item.secrets += [address, person.id]
        items.append(item)
    for item in items:
        item.held = await placed(service, item.alert_id)
    return items


async def placed(service: Service, alert_id: str) -> bool:
    """The alert's one row sent, or held for approval (as the default rules hold PII and
    RED): whether it is held."""

    async def done() -> bool:
        rows = await rows_of(service, alert_id)
        return len(rows) == 1 and rows[0]["state"] in ("sent", "delivered", "held")

    await wait_until(done, timeout=30, what="the alert's row placed")
    return bool((await rows_of(service, alert_id))[0]["state"] == "held")


async def readers(service: Service, http: aiohttp.ClientSession, base: str) -> dict[str, Reader]:
    """An administrator account per clearance, each with a personal admin token."""
    assert service.database is not None
    now = datetime.now(UTC)
    tokens, accounts = TokenStore(service.database), AccountStore(service.database)
    found = {}
    for cleared, clearance in CLEARANCES.items():
        fields = {
            "username": f"staff-{cleared}",
            "displayName": cleared.title(),
            "organization": "County Fusion Center",
            "roles": ["administrator"],
            "clearance": clearance,
            "senders": list(TEST_SENDERS),  # a personal token publishes only as its owner may
        }
        record, _password = await accounts.create(fields, Actor(None, "test"), now)
        _info, secret = await tokens.create(
            f"{cleared}-token", Role.ADMIN, now, TEST_SENDERS, str(record["id"]), timedelta(days=1)
        )
        found[cleared] = Reader(http, base, secret)
    return found


def leaked(text: str, item: Seeded) -> list[str]:
    return [secret for secret in item.secrets if secret.lower() in text.lower()]


async def check_alert_endpoints(reader: Reader, item: Seeded, allowed: bool) -> None:
    """The per-alert endpoints for one cell."""
    alert, cell = item.alert_id, (item.tlp, item.caveats)
    status, text = await reader.call("GET", f"/api/v1/alerts/{alert}")
    report = json.loads(text)
    assert status == 200, text
    if allowed:
        assert report["alert"]["identifier"] == f"NTK-IDENT-{item.n}-X", cell
        assert report["alert"]["headline"], cell
    else:
        assert set(report) == VIEW_KEYS | {"withheld"}, cell
        assert {"headline", "content", "recipients"} <= set(report["withheld"]["fields"])
        assert report["withheld"]["reason"] in {
            "tlp_above_clearance",
            "caveat_not_held",
            "les_requires_law_enforcement",
        }
        assert report["counts"]["targeted"] == 1
        assert report["handling"]["tlp"] == item.tlp
        assert not leaked(text, item), cell
    for path, method, body in (
        (f"/api/v1/alerts/{alert}/deliveries", "GET", None),
        (f"/api/v1/alerts/{alert}/deliveries.csv", "GET", None),
        (f"/api/v1/dissemination-records?alertId={alert}", "GET", None),
        (f"/api/v1/dissemination-records?alertId={alert}&format=csv", "GET", None),
        (f"/api/v1/sends/{item.send_id}", "GET", None),
        ("/api/v1/sends", "POST", item.request | {"dryRun": True}),
        ("/api/v1/match", "POST", item.request["alert"] | {"sent": "2026-01-01T00:00:00Z"}),
    ):
        status, text = await reader.call(method, path, body)
        if allowed:
            assert status == 200, (cell, path, text)
            recorded = "records" in path and not item.held
            if "deliveries" in path or recorded:
                assert f"recipient-secret-{item.n}@" in text, (cell, path)
        else:
            assert status == 403, (cell, path, text)
            assert json.loads(text)["error"]["code"] == "above_clearance", (cell, path)
            assert not leaked(text, item), (cell, path)
    path = f"/api/v1/alerts/{alert}/events?seconds=5"
    if allowed:
        assert alert in await reader.first_event(path), cell
    else:
        status, text = await reader.call("GET", path)
        assert (status, json.loads(text)["error"]["code"]) == (403, "above_clearance"), cell


async def check_listings(reader: Reader, cleared: str, items: list[Seeded]) -> None:
    """The listings: forbidden alerts redacted or left out, allowed ones shown."""
    forbidden = [i for i in items if not permitted(i.tlp, i.caveats, cleared)]
    allowed = [i for i in items if permitted(i.tlp, i.caveats, cleared)]
    bodies = {}
    for path in (
        "/api/v1/alerts?limit=100",
        "/api/v1/dissemination-records",
        "/api/v1/dissemination-records?format=csv",
        "/api/v1/audit?entity=send&limit=500",
        "/api/v1/sends?limit=100",
        "/api/v1/approvals?limit=100",
    ):
        status, bodies[path] = await reader.call("GET", path)
        assert status == 200, (path, bodies[path])
        for item in forbidden:
            assert not leaked(bodies[path], item), (cleared, path, item.tlp, item.caveats)
    listed = {a["id"]: a for a in json.loads(bodies["/api/v1/alerts?limit=100"])["items"]}
    assert set(listed) == {i.alert_id for i in items}
    for item in forbidden:
        assert set(listed[item.alert_id]) == VIEW_KEYS | {"withheld"}
    for item in allowed:
        assert listed[item.alert_id]["identifier"] == f"NTK-IDENT-{item.n}-X"
        if not item.held:  # held for approval: nothing released, nothing recorded
            assert f"recipient-secret-{item.n}@" in bodies["/api/v1/dissemination-records"]
        assert f"secret {item.n} of" not in bodies["/api/v1/audit?entity=send&limit=500"]
    records = json.loads(bodies["/api/v1/dissemination-records"])
    recorded = [i for i in items if not i.held]
    assert {e["alert_id"] for e in records["items"]} == {
        i.alert_id for i in allowed if i in recorded
    }
    left_out = [i for i in forbidden if i in recorded]
    if left_out:
        assert records["withheld"] == {"items": len(left_out), "reason": "above_clearance"}
    audit = json.loads(bodies["/api/v1/audit?entity=send&limit=500"])["items"]
    hidden = {i.alert_id for i in forbidden}
    for entry in audit:
        about = (entry["after"] or {}).get("alertId")
        if entry.get("withheld"):
            assert entry["before"] is entry["after"] is None
        else:
            assert about not in hidden, entry
    sends = json.loads(bodies["/api/v1/sends?limit=100"])["items"]
    by_send = {s["id"]: s for s in sends}
    for item in forbidden:
        assert "headline" not in by_send[item.send_id]
        assert by_send[item.send_id]["withheld"]
    for item in allowed:
        assert by_send[item.send_id]["audience"]["stakeholders"]
    held = json.loads(bodies["/api/v1/approvals?limit=100"])["items"]
    assert {a["alertId"] for a in held} == {i.alert_id for i in items if i.held}
    for approval in held:
        assert ("withheld" in approval) == (approval["alertId"] in hidden)
        assert ("rule" in approval) == (approval["alertId"] not in hidden)


async def shared_reader(service: Service, http: aiohttp.ClientSession) -> tuple[str, Reader]:
    """The service's base URL, and a reader holding a shared admin token (no clearance)."""
    assert service.http is not None
    assert service.database is not None
    host, port = service.http.addresses[0][:2]
    base = f"http://{host}:{port}"
    _info, secret = await TokenStore(service.database).create(
        "shared-admin", Role.ADMIN, datetime.now(UTC), TEST_SENDERS
    )
    return base, Reader(http, base, secret)


async def test_every_clearance_reads_only_what_it_admits(
    custom_service: StartService, sinks: Sinks
) -> None:
    service, _settings, _channel = await custom_service()
    async with aiohttp.ClientSession() as http:
        base, shared = await shared_reader(service, http)
        items = await seed(service, shared)
        staff = await readers(service, http, base)
        cells = 0
        for (cleared, reader), item in itertools.product(staff.items(), items):
            await check_alert_endpoints(reader, item, permitted(item.tlp, item.caveats, cleared))
            cells += 1
        assert cells == len(TLPS) * len(CAVEATS) * len(CLEARANCES) == 75
        for cleared, reader in staff.items():
            await check_listings(reader, cleared, items)
        # a shared token has no clearance: it reads everything
        for item in items:
            await check_alert_endpoints(shared, item, allowed=True)
        await check_listings(shared, "officer", items)


async def test_a_green_stream_never_carries_an_amber_alert(
    custom_service: StartService, sinks: Sinks
) -> None:
    service, _settings, _channel = await custom_service()
    async with aiohttp.ClientSession() as http:
        base, shared = await shared_reader(service, http)
        green = (await readers(service, http, base))["green"]
        person = await enrol(service, "Watcher", {"email": "watcher@example.org"})

        async def send(n: int, tlp: str) -> str:
            item = Seeded(100 + n, tlp, (), {})
            body = {"alert": bolo(item), "audience": {"stakeholders": [person.id]}}
            status, sent = await shared.json("POST", "/api/v1/sends", body)
            assert status == 202, sent
            await placed(service, sent["alertId"])
            return str(sent["alertId"])

        async def read_until(response: aiohttp.ClientResponse, wanted: str) -> str:
            seen = ""
            while wanted not in seen:
                seen += (await response.content.readany()).decode()
            return seen

        path = base + "/api/v1/events?seconds=60"
        async with (
            http.get(path, headers={"Authorization": f"Bearer {green.token}"}) as mine,
            http.get(path, headers={"Authorization": f"Bearer {shared.token}"}) as every,
        ):
            assert (mine.status, every.status) == (200, 200)
            amber_id = await send(1, "AMBER")
            green_id = await send(2, "GREEN")
            seen_all = await asyncio.wait_for(read_until(every, amber_id), timeout=30)
            seen_green = await asyncio.wait_for(read_until(mine, green_id), timeout=30)
        assert amber_id in seen_all  # a shared token's stream carries it
        assert amber_id not in seen_green
