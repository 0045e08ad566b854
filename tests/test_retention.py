"""Retention: content older than the period is purged unless revalidated; the ledger rows and
the dissemination record (with its hashes) stay, every purge is audited, and a second run
finds nothing to do."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import aiohttp
import pytest
from aio_pika.abc import AbstractChannel
from sqlalchemy import select, update

from dissemination.api.tokens import Role, TokenStore
from dissemination.controls import record
from dissemination.controls.retention import run_retention
from dissemination.service import Service
from dissemination.settings import Settings
from dissemination.store.tables import alerts, audit_log, deliveries, payloads
from tests.deliveryrig import (  # noqa: F401 - fixtures
    Sinks,
    delivery_settings_fixture,
    publish_alert,
    settled,
    sinks_fixture,
)
from tests.people import enrol
from tests.serviceproc import run_cli

pytestmark = pytest.mark.slow
SIX_YEARS = timedelta(days=6 * 365)


async def test_old_content_is_purged_unless_revalidated_and_the_record_stays(
    service: Service,
    channel: AbstractChannel,
    settings: Settings,
    sinks: Sinks,
    service_env: dict[str, str],
) -> None:
    database = service.database
    assert database is not None
    await enrol(service, "Keeper", {"webhook": sinks.hooks.base + "k"})
    old, kept, recent = [
        await publish_alert(channel, settings, identifier) for identifier in ("OLD", "KEPT", "NEW")
    ]
    for alert_id in (old, kept, recent):
        await settled(service, alert_id, 1)
    now = datetime.now(UTC)
    async with database.transaction() as conn:
        for table in (alerts, payloads):
            key = table.c.id if table is alerts else table.c.sha256
            aged = select(alerts.c.payload_sha256).where(alerts.c.id.in_([old, kept]))
            target = key.in_([old, kept]) if table is alerts else key.in_(aged)
            await conn.execute(update(table).where(target).values(received_at=now - SIX_YEARS))

    _, secret = await TokenStore(database).create("keeper", Role.ADMIN, now)
    url = f"{sinks.public_url}/api/v1/alerts/{kept}/revalidate"
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {secret}"}) as session:
        async with session.post(url, json={"reason": ""}) as response:
            assert response.status == 422
        async with session.post(url, json={"reason": "open investigation 24-117"}) as response:
            assert response.status == 200
        async with session.post(
            f"{sinks.public_url}/api/v1/alerts/none/revalidate", json={"reason": "why not"}
        ) as response:
            assert response.status == 404

    code, out, _ = await run_cli(service_env, "retention", "run", "--dry-run")
    assert code == 0
    assert "would purge 1 alerts, 1 payloads" in out
    report = await run_retention(database, now - timedelta(days=1826), now)
    assert (report.alerts, report.payloads) == (1, 1)
    async with database.reading() as conn:
        rows = {
            r.id: r
            for r in await conn.execute(
                select(
                    alerts.c.id,
                    alerts.c.document,
                    alerts.c.headline,
                    alerts.c.content_hash,
                    alerts.c.payload_sha256,
                )
            )
        }
        bodies = {
            r.sha256: r.body for r in await conn.execute(select(payloads.c.sha256, payloads.c.body))
        }
        kept_rows = await conn.scalar(
            select(deliveries.c.state).where(deliveries.c.alert_id == old)
        )
        purges = list(
            await conn.scalars(select(audit_log.c.entity_id).where(audit_log.c.action == "purge"))
        )
    assert set(rows[old].document) == {"id", "handling", "purged"}
    assert rows[old].document["handling"]["tlp"] == "GREEN"  # the marks stay with the id
    assert rows[old].headline is None
    assert rows[old].content_hash  # what was received stays provable by hash
    assert rows[kept].document["infos"]
    assert rows[recent].document["infos"]
    assert bodies[rows[old].payload_sha256] == b""
    assert bodies[rows[kept].payload_sha256]
    assert bodies[rows[recent].payload_sha256]
    assert kept_rows == "sent"
    assert purges == [old]
    assert (await record.verify(database, key=service.record_key)).checked == 3
    assert (await run_retention(database, now - timedelta(days=1826), now)).alerts == 0
