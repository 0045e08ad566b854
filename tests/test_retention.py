"""Retention: content older than the period is purged unless revalidated; the ledger rows and
the dissemination record (with its hashes) stay, every purge is audited, and a second run
finds nothing to do. The service runs it every `retention.interval_hours`, once per interval
across the instances sharing a store."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest
from aio_pika.abc import AbstractChannel
from sqlalchemy import select, update

from dissemination.api.tokens import Role, TokenStore
from dissemination.controls import record
from dissemination.controls.jobs import RetentionJob, ScheduledControls
from dissemination.controls.retention import run_retention
from dissemination.service import Service
from dissemination.settings import Settings, load_settings
from dissemination.store.database import Database
from dissemination.store.locks import lock_key, try_lock
from dissemination.store.tables import alerts, audit_log, deliveries, payloads
from tests.deliveryrig import (  # noqa: F401 - fixtures
    Sinks,
    StartService,
    custom_service_fixture,
    delivery_settings_fixture,
    publish_alert,
    settled,
    sinks_fixture,
)
from tests.fakeclock import FakeClock
from tests.logcapture import capturing
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
    assert out.rstrip().endswith("quarantined inputs; would empty 0 sends")
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


NO_JOBS = {"retention_interval_hours": "0", "record_anchor_interval_minutes": "0"}


async def test_the_scheduled_job_purges_what_is_due_and_keeps_the_rest(
    custom_service: StartService, sinks: Sinks
) -> None:
    service, settings, channel = await custom_service(**NO_JOBS)
    database = service.database
    await enrol(service, "Keeper", {"webhook": sinks.hooks.base + "k"})
    old, recent = [await publish_alert(channel, settings, name) for name in ("JOB-OLD", "JOB-NEW")]
    for alert_id in (old, recent):
        await settled(service, alert_id, 1)
    clock = FakeClock(datetime.now(UTC))
    async with database.transaction() as conn:
        await conn.execute(
            update(alerts).where(alerts.c.id == old).values(received_at=clock.now - SIX_YEARS)
        )
    daily = replace(settings, retention=replace(settings.retention, interval_hours=24))
    job = RetentionJob(database, daily, clock)  # the service's own is off: this test runs it

    report = await job.run()
    assert report is not None
    assert report.alerts == 1
    assert await job.run() is None  # not due again within the interval
    clock.advance(23 * 3600)
    assert await job.run() is None
    clock.advance(3600)
    report = await job.run()
    assert report is not None
    assert report.alerts == 0
    async with database.reading() as conn:
        documents = dict(list(await conn.execute(select(alerts.c.id, alerts.c.document))))
        runs = list(
            await conn.scalars(
                select(audit_log.c.actor_name).where(audit_log.c.action == "retention_run")
            )
        )
    assert documents[old]["purged"] is True
    assert documents[recent]["infos"]
    assert runs == ["retention", "retention"]  # audited as `dissemination retention run` is


@pytest.mark.parametrize("store_kind", ["postgresql"])
async def test_instances_sharing_a_store_run_the_job_once_per_interval(
    store_url: str, tmp_path: Path
) -> None:
    settings = load_settings(
        {"DISSEMINATION_STORE_URL": store_url, "DISSEMINATION_SERVICE_DATA_DIR": str(tmp_path)}
    )
    first = Database.from_settings(settings.store, settings.data_path)
    second = Database.from_settings(settings.store, settings.data_path)
    clock = FakeClock(datetime.now(UTC))
    jobs = [RetentionJob(first, settings, clock), RetentionJob(second, settings, clock)]
    try:
        async with first.transaction() as conn:  # an instance in the middle of its run
            assert await try_lock(conn, lock_key("scheduled-job", "retention"))
            with capturing() as logs:
                assert await jobs[1].run() is None
        assert logs.named("job_skipped_running_elsewhere", level="debug", job="retention")

        for _ in range(3):
            reports = await asyncio.gather(*(job.run() for job in jobs))
            assert sum(report is not None for report in reports) == 1
            assert [await job.run() for job in jobs] == [None, None]
            clock.advance(24 * 3600)
        async with first.reading() as conn:
            runs = list(
                await conn.scalars(
                    select(audit_log.c.at).where(audit_log.c.action == "retention_run")
                )
            )
        assert len(runs) == 3
    finally:
        await first.close()
        await second.close()


def test_a_job_whose_interval_is_0_is_not_scheduled(tmp_path: Path) -> None:
    def names(**env: str) -> list[tuple[str, float]]:
        settings = load_settings(
            {"DISSEMINATION_SERVICE_DATA_DIR": str(tmp_path)}
            | {f"DISSEMINATION_{k.upper()}": v for k, v in env.items()}
        )
        database = Database.from_settings(settings.store, settings.data_path)
        tasks = ScheduledControls(database, settings, None, datetime.now).tasks()
        return [(task.name, task.seconds) for task in tasks]

    # each is checked every minute (`store.scheduled.check_period`), run once per interval
    assert names() == [("retention", 60), ("record-anchoring", 60)]
    assert names(retention_interval_hours="0") == [("record-anchoring", 60)]
    assert names(record_anchor_interval_minutes="0", retention_interval_hours="0.5") == [
        ("retention", 60)
    ]
    assert names(**NO_JOBS) == []
    with pytest.raises(Exception, match=r"retention\.interval_hours"):
        names(retention_interval_hours="-1")


async def test_the_service_starts_the_jobs_unless_disabled(custom_service: StartService) -> None:
    def running() -> set[str]:
        return {task.get_name() for task in asyncio.all_tasks()}

    service, _, _ = await custom_service()
    assert {"retention", "record-anchoring"} <= running()
    assert service.scheduled is not None
    assert service.record_verification is service.scheduled.anchoring.status
    await service.stop()
    assert not {"retention", "record-anchoring"} & running()
    await custom_service(**NO_JOBS)
    assert not {"retention", "record-anchoring"} & running()
