"""Logs never carry tokens, secrets, message bodies or personal data: a whole alert's life
(delivery by email, SMS and webhook, acknowledgment by link, SMS reply and webhook token, a
refused token) runs with our own loggers at DEBUG and every library at INFO, and none of
those values appears in any record the service's process writes."""

from __future__ import annotations

import json
import logging
import re

import aiohttp
import pytest
from aio_pika.abc import AbstractChannel
from sqlalchemy import select

from dissemination.service import Service
from dissemination.settings import Settings
from dissemination.store.tables import service_secrets
from testbed.twilio import AUTH_TOKEN
from tests.deliveryrig import (  # noqa: F401 - fixtures
    Sinks,
    delivery_settings_fixture,
    post_inbound,
    publish_alert,
    settled,
    sinks_fixture,
)
from tests.people import enrol

pytestmark = pytest.mark.slow
# The loopback sinks log what they receive, as a real mail server would; they are not us.
SINK_LOGGERS = ("mail.log", "aiohttp.access")
HEADLINE = "Armed subject Jordan Example, DOB 1970-01-01, plate 7ABC123"
DESCRIPTION = "Last seen at 12 Example Street driving a blue sedan."


async def test_no_token_secret_body_or_address_reaches_the_logs(
    service: Service,
    channel: AbstractChannel,
    settings: Settings,
    sinks: Sinks,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    for ours in ("dissemination", "channels", "subscriptions"):
        caplog.set_level(logging.DEBUG, logger=ours)
    phone, mail = "+12025550177", "dana.reed@example.org"
    await enrol(service, "Dana Reed", {"email": mail}, ack_required=True)
    await enrol(service, "Kai Moss", {"sms": phone}, ack_required=True)
    hook = await enrol(service, "Ops", {"webhook": sinks.hooks.base + "ops"}, ack_required=True)
    info = {
        "language": "en-US",
        "category": ["Security"],
        "event": "BOLO",
        "urgency": "Immediate",
        "severity": "Severe",
        "certainty": "Observed",
        "headline": HEADLINE,
        "description": DESCRIPTION,
        "area": [{"areaDesc": "Example County"}],
    }
    alert_id = await publish_alert(channel, settings, "LOGS-1", info=[info])
    await settled(service, alert_id, 3)
    text = (await sinks.smtp.message(0)).parsed().get_body(("plain",)).get_content()  # type: ignore[union-attr]
    link = re.search(r"http://\S+/ack/[A-Za-z0-9_-]+", text)
    assert link is not None
    (sms,) = sinks.twilio.messages
    code = re.search(r"Reply ACK (\d{4})", sms["body"])
    assert code is not None
    webhook_body = json.loads(sinks.hooks.requests[-1][1])
    async with aiohttp.ClientSession() as session:
        async with session.post(link.group(0), data={"comment": "copy"}) as response:
            assert response.status == 200
        await post_inbound(sinks, phone, f"ACK {code.group(1)}")
        acks = sinks.public_url + "/api/v1/acks"
        async with session.post(acks, json={"token": webhook_body["ack"]["token"]}) as response:
            assert response.status == 201
        async with session.get(sinks.public_url + "/ack/" + "x" * 51) as response:
            assert response.status == 403
    assert service.database is not None
    async with service.database.reading() as conn:
        signing_key = await conn.scalar(select(service_secrets.c.value))
    secrets = {
        "email address": mail,
        "phone number": phone,
        "headline": "Jordan Example",
        "description": "Example Street",
        "ack link token": link.group(0).rsplit("/", 1)[1],
        "webhook ack token": webhook_body["ack"]["token"],
        "webhook signing secret": hook.secrets["webhook"].removeprefix("whsec_"),
        "Twilio auth token": AUTH_TOKEN,
        "ack signing key": str(signing_key),
        "SMS body": sms["body"][:40],
    }
    logged = "\n".join(
        record.getMessage() + (record.exc_text or "")
        for record in caplog.records
        if not record.name.startswith(SINK_LOGGERS)
    )
    assert len(caplog.records) > 10  # the run was logged
    for what, value in secrets.items():
        assert value not in logged, f"the logs contain the {what}"
