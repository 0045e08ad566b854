"""Twilio's callbacks into the running service, as Twilio sends them: signed, sometimes
retried (the very same request again), and sometimes before the API call that created the
message has returned. A replayed inbound message or status changes nothing; a status that
overtakes the send is kept and applied when the send is recorded."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aio_pika.abc import AbstractChannel
from sqlalchemy import select

from dissemination.api.twiliohooks import INBOUND_HOOK
from dissemination.service import Service
from dissemination.settings import Settings, StoreSettings
from dissemination.store.database import Database
from dissemination.store.rows import ProviderStatus, record_provider_status
from dissemination.store.tables import audit_log, provider_statuses, sms_opt_outs
from testbed.directory import enrol_many
from tests.brokerutil import wait_until
from tests.deliveryrig import (  # noqa: F401 - fixtures
    Sinks,
    StartService,
    custom_service_fixture,
    delivery_settings_fixture,
    publish_alert,
    rows_of,
    settled,
    sinks_fixture,
)
from tests.people import enrol

pytestmark = pytest.mark.slow
NUMBER = "+12025550142"
FAN_OUT = 60


class Inbound:
    """One inbound SMS as Twilio signed it, to post as often as Twilio might."""

    def __init__(self, sinks: Sinks, number: str, body: str) -> None:
        self.url = sinks.public_url + INBOUND_HOOK
        self.form, self.headers = sinks.twilio.inbound_sms(self.url, from_=number, body=body)

    async def post(self) -> str:
        async with (
            aiohttp.ClientSession() as session,
            session.post(self.url, data=self.form, headers=self.headers) as response,
        ):
            text = await response.text()
            assert response.status == 200, text
            return text


async def opt_out_audit(service: Service) -> list[str]:
    assert service.database is not None
    async with service.database.reading() as conn:
        actions = await conn.scalars(
            select(audit_log.c.action)
            .where(audit_log.c.entity == "sms_opt_out")
            .order_by(audit_log.c.id)
        )
        return list(actions)


async def kept_statuses(service: Service) -> list[str]:
    assert service.database is not None
    async with service.database.reading() as conn:
        return list(await conn.scalars(select(provider_statuses.c.provider_id)))


async def opted_out(service: Service, number: str) -> bool:
    assert service.database is not None
    async with service.database.reading() as conn:
        keyword: Any = await conn.scalar(
            select(sms_opt_outs.c.keyword).where(sms_opt_outs.c.address == number)
        )
    return keyword is not None


async def test_a_replayed_inbound_message_changes_nothing(service: Service, sinks: Sinks) -> None:
    stop, start = Inbound(sinks, NUMBER, "STOP"), Inbound(sinks, NUMBER, "START")
    stopped, started = await stop.post(), await start.post()
    assert not await opted_out(service, NUMBER)
    for _ in range(3):  # Twilio retrying each, in turn
        assert await stop.post() == stopped
        assert await start.post() == started
    assert not await opted_out(service, NUMBER)
    assert await opt_out_audit(service) == ["opt_out", "opt_in"]


async def test_simultaneous_copies_of_an_inbound_message_count_once(
    service: Service, sinks: Sinks
) -> None:
    stop = Inbound(sinks, NUMBER, "stop")
    replies = await asyncio.gather(*(stop.post() for _ in range(4)))
    assert len(set(replies)) == 1
    assert await opted_out(service, NUMBER)
    assert await opt_out_audit(service) == ["opt_out"]
    help_ = Inbound(sinks, NUMBER, "HELP")
    assert "Reply STOP" in await help_.post()
    assert "Reply STOP" in await help_.post()  # a replay is answered as the first was


async def test_a_replayed_status_callback_changes_nothing(
    service: Service, channel: AbstractChannel, settings: Settings, sinks: Sinks
) -> None:
    await enrol(service, "phone", {"sms": NUMBER})
    alert_id = await publish_alert(channel, settings, "STATUS-REPLAY-1")
    (row,) = await settled(service, alert_id, 1)
    sid = row["provider_id"]
    assert await sinks.twilio.send_status_callback(sid, "undelivered", 30003) == 204
    (failed,) = await rows_of(service, alert_id)
    assert (failed["state"], failed["reason"]) == ("failed", "undelivered: Twilio error 30003")
    for _ in range(3):
        assert await sinks.twilio.send_status_callback(sid, "undelivered", 30003) == 204
    assert await rows_of(service, alert_id) == [failed]
    assert await kept_statuses(service) == []


async def enrol_phones(store_url: str, tmp_path: Path, count: int) -> None:
    """`count` stakeholders with a phone each, enrolled before the service starts."""
    database = Database.from_settings(StoreSettings(store_url, 5, 0.05, 0.2), tmp_path)
    try:
        await enrol_many(database, count, "sms", lambda n: f"+120255501{n:02d}")
    finally:
        await database.close()


@pytest.mark.parametrize("overtaking", [True, False], ids=["before-answer", "with-answer"])
async def test_statuses_sent_at_once_are_applied_whenever_they_arrive(
    custom_service: StartService, sinks: Sinks, store_url: str, tmp_path: Path, overtaking: bool
) -> None:
    await enrol_phones(store_url, tmp_path, FAN_OUT)
    sinks.twilio.report_at_once = ("delivered", None)
    sinks.twilio.report_before_answer = overtaking
    service, settings, channel = await custom_service(sms_timeout_seconds="10")
    alert_id = await publish_alert(channel, settings, "EARLY-STATUS-1")
    await settled(service, alert_id, FAN_OUT)

    async def reported() -> bool:
        return len(sinks.twilio.reported) == FAN_OUT

    await wait_until(reported, what="every status callback answered")
    assert sinks.twilio.reported == [204] * FAN_OUT
    rows = await rows_of(service, alert_id)
    assert Counter(r["state"] for r in rows) == {"delivered": FAN_OUT}
    # Late and repeated callbacks never move a delivered row back.
    for row in rows[:5]:
        for status, code in (("sent", None), ("undelivered", 30003), ("delivered", None)):
            assert await sinks.twilio.send_status_callback(row["provider_id"], status, code) == 204
    assert await rows_of(service, alert_id) == rows
    assert await kept_statuses(service) == []


async def test_a_failure_that_overtakes_the_send_fails_the_row(
    custom_service: StartService, sinks: Sinks, store_url: str, tmp_path: Path
) -> None:
    await enrol_phones(store_url, tmp_path, 1)
    sinks.twilio.report_at_once = ("undelivered", 30003)
    service, settings, channel = await custom_service()
    alert_id = await publish_alert(channel, settings, "EARLY-STATUS-2")
    (row,) = await settled(service, alert_id, 1)
    assert (row["state"], row["reason"]) == ("failed", "undelivered: Twilio error 30003")
    assert await sinks.twilio.send_status_callback(row["provider_id"], "delivered") == 204
    assert await rows_of(service, alert_id) == [row]


async def test_statuses_no_send_matched_for_a_day_are_forgotten_by_the_sms_worker(
    custom_service: StartService, store_url: str, tmp_path: Path
) -> None:
    database = Database.from_settings(StoreSettings(store_url, 5, 0.05, 0.2), tmp_path)
    now = datetime.now(UTC)
    try:
        for sid, age in (("SMold", timedelta(days=1, minutes=1)), ("SMnew", timedelta(hours=23))):
            async with database.transaction() as conn:
                status = ProviderStatus("sms", sid, "delivered")
                await record_provider_status(conn, status, now - age)
    finally:
        await database.close()
    service, _, _ = await custom_service()  # the worker sweeps as it starts
    assert await kept_statuses(service) == ["SMnew"]
