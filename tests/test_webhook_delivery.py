"""End to end through the webhook worker: an alert published on the broker reaches a real
receiver on loopback, signed; transient failures are retried, and the ledger records each
outcome with the provider's id."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aio_pika.abc import AbstractChannel
from aiohttp import web
from sqlalchemy import select, update

from dissemination.api.directory import ADMIN
from dissemination.controls import record
from dissemination.controls.sendcheck import RESENT_NOTE
from dissemination.directory.store import CONTACT, STAKEHOLDER, SUBSCRIPTION, Directory, EntitySpec
from dissemination.directory.sync import apply_change
from dissemination.ledger.progress import ProgressStore
from dissemination.service import Service
from dissemination.settings import Settings
from dissemination.store.audit import Actor, AuditLog
from dissemination.store.tables import contacts, deliveries
from subscriptions.codec import validate_stakeholder, validate_subscription
from testbed.alerts import cap_json
from testbed.webhooks import WebhookContract
from tests.brokerutil import publish, wait_until
from tests.deliveryrig import serve_on_loopback
from tests.webhookrig import independent_signature

pytestmark = pytest.mark.slow


@dataclass
class Receiver:
    base: str = ""
    calls: dict[str, int] = field(default_factory=dict)
    requests: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    contract: WebhookContract = field(default_factory=WebhookContract)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    state = Receiver()

    async def handle(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        state.calls[name] = state.calls.get(name, 0) + 1
        body = await request.read()
        state.contract.check(body)
        state.requests.append((dict(request.headers), body))
        if name == "flaky" and state.calls[name] == 1:
            return web.Response(status=503)
        return web.Response(status={"gone": 410, "missing": 404}.get(name, 200))

    app = web.Application()
    app.router.add_post("/{name}", handle)
    runner, state.base = await serve_on_loopback(app)
    yield state
    await runner.cleanup()
    state.contract.assert_kept()


async def _create(
    service: Service, spec: EntitySpec, fields: dict[str, Any]
) -> tuple[str, str | None]:
    assert service.database is not None
    assert service.http is not None
    record, secret = await Directory(service.database).create(
        spec, fields, Actor(None, "test"), datetime.now(UTC)
    )
    apply_change(service.http.app[ADMIN].matcher, spec, record, record["id"])
    return str(record["id"]), secret


async def _endpoint(service: Service, name: str, url: str) -> tuple[str, str]:
    stakeholder = validate_stakeholder(
        {
            "name": name,
            "organization": "Partner",
            "sector": "government",
            "kind": "individual",
            "clearance": {"maxTlp": "AMBER"},
        }
    )
    sid, _ = await _create(service, STAKEHOLDER, stakeholder)
    contact_id, secret = await _create(
        service,
        CONTACT,
        {"stakeholderId": sid, "channel": "webhook", "address": url, "label": "", "active": True},
    )
    assert secret is not None
    await _create(
        service,
        SUBSCRIPTION,
        validate_subscription({"stakeholderId": sid, "rule": {}, "channels": ["webhook"]}),
    )
    return contact_id, secret


async def _rows(service: Service) -> dict[str, dict[str, Any]]:
    assert service.database is not None
    async with service.database.reading() as conn:
        result = await conn.execute(select(deliveries))
        return {r["address"].rsplit("/", 1)[1]: dict(r) for r in result.mappings()}


async def test_alerts_reach_webhooks_signed_with_retries_and_outcomes(
    service: Service, channel: AbstractChannel, settings: Settings, receiver: Receiver
) -> None:
    secrets = {}
    contact_ids = {}
    for name in ("ok", "flaky", "gone", "missing"):
        contact_ids[name], secrets[name] = await _endpoint(service, name, receiver.base + name)
    await publish(
        channel, settings, json.dumps(cap_json("HOOK-1", handling={"tlp": "GREEN"})).encode()
    )

    async def settled() -> bool:
        rows = await _rows(service)
        return len(rows) == 4 and all(r["state"] in ("sent", "failed") for r in rows.values())

    await wait_until(settled, timeout=30, what="every webhook row settled")
    rows = await _rows(service)
    summary = {name: (r["state"], r["attempts"], r["provider_id"]) for name, r in rows.items()}
    assert summary == {
        "ok": ("sent", 1, "200"),
        "flaky": ("sent", 2, "200"),
        "gone": ("failed", 1, None),
        "missing": ("failed", 1, None),
    }
    for headers, body in receiver.requests:
        name = next(n for n in secrets if headers["webhook-id"] == rows[n]["id"])
        assert headers["webhook-signature"] == independent_signature(secrets[name], headers, body)
        assert json.loads(body)["alert"]["identifier"] == "HOOK-1"
    assert receiver.calls == {"ok": 1, "flaky": 2, "gone": 1, "missing": 1}
    assert service.database is not None
    async with service.database.reading() as conn:
        active = await conn.scalar(
            select(contacts.c.active).where(contacts.c.id == contact_ids["gone"])
        )
    assert active is False  # a 410 disables the endpoint, audited, and the matcher follows
    entries = await AuditLog(service.database).entries(
        entity="contact", entity_id=contact_ids["gone"]
    )
    assert [e["action"] for e in entries] == ["create", "update"]
    assert entries[-1]["actor"]["name"] == "delivery worker"
    assert entries[-1]["after"]["active"] is False


async def _age_into_sending(service: Service, delivery_id: str) -> None:
    """What a worker that died mid-send leaves behind: a row in `sending`, long untouched."""
    assert service.database is not None
    async with service.database.transaction() as conn:
        await conn.execute(
            update(deliveries)
            .where(deliveries.c.id == delivery_id)
            .values(state="sending", updated_at=datetime.now(UTC) - timedelta(hours=1))
        )


async def test_a_row_stuck_in_sending_is_resent_once_flagged_then_failed(
    service: Service, channel: AbstractChannel, settings: Settings, receiver: Receiver
) -> None:
    await _endpoint(service, "ok", receiver.base + "ok")
    await publish(channel, settings, json.dumps(cap_json("STUCK-1")).encode())

    async def state_is(expected: str, calls: int) -> bool:
        row = (await _rows(service)).get("ok")
        return row is not None and row["state"] == expected and receiver.calls.get("ok") == calls

    await wait_until(lambda: state_is("sent", 1), what="first delivery")
    row = (await _rows(service))["ok"]
    worker = next(w for w in service.workers if w.channel == "webhook")
    await _age_into_sending(service, row["id"])
    assert await worker.sweep() == [row["id"]]
    await wait_until(lambda: state_is("sent", 2), what="the one resend")
    assert (await _rows(service))["ok"]["resent"] is True
    # the flag shows wherever the delivery is reported: the deliveries API (and its CSV,
    # made from the same items) and the dissemination record
    [item] = await ProgressStore(service.database).deliveries(row["alert_id"])
    assert item["resent"] is True
    entries = await record.export(service.database, alert_id=row["alert_id"])
    assert [entry["outcome"] for entry in entries] == ["released", "released"]
    assert RESENT_NOTE not in entries[0]["justification"]
    assert entries[1]["justification"].endswith(RESENT_NOTE)
    await _age_into_sending(service, row["id"])
    assert await worker.sweep() == []
    failed = (await _rows(service))["ok"]
    assert (failed["state"], failed["reason"]) == (
        "failed",
        "stuck in sending again after one resend",
    )
    assert receiver.calls["ok"] == 2


async def test_the_sweep_leaves_alone_rows_its_own_worker_is_still_sending(
    service: Service, channel: AbstractChannel, settings: Settings, receiver: Receiver
) -> None:
    await _endpoint(service, "ok", receiver.base + "ok")
    await publish(channel, settings, json.dumps(cap_json("SLOW-1")).encode())

    async def sent() -> bool:
        row = (await _rows(service)).get("ok")
        return row is not None and row["state"] == "sent"

    await wait_until(sent, what="the delivery")
    row = (await _rows(service))["ok"]
    worker = next(w for w in service.workers if w.channel == "webhook")
    await _age_into_sending(service, row["id"])
    worker._in_flight.add(row["id"])  # as if this worker were still waiting on a slow host
    try:
        assert await worker.sweep() == []
    finally:
        worker._in_flight.discard(row["id"])
    assert (await _rows(service))["ok"]["resent"] is False
    assert await worker.sweep() == [row["id"]]  # once it is not ours, it is stuck
    await wait_until(sent, what="the one resend")
