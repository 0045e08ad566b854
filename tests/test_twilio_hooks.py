"""Twilio's callbacks into the running service, as Twilio sends them: signed, sometimes
retried (the very same request again), and sometimes before the API call that created the
message has returned. A replayed inbound message or status changes nothing; a status that
overtakes the send is kept and applied when the send is recorded."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest
from sqlalchemy import select

from dissemination.api.twiliohooks import INBOUND_HOOK
from dissemination.service import Service
from dissemination.store.tables import audit_log, sms_opt_outs
from tests.deliveryrig import (  # noqa: F401 - fixtures
    Sinks,
    delivery_settings_fixture,
    sinks_fixture,
)

pytestmark = pytest.mark.slow
NUMBER = "+12025550142"


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
