"""Delivery end to end, the same suite over all three channels: an alert published on the
broker is planned, and its rows are sent by the running service's workers to real loopback
servers (aiosmtpd, the Twilio fake through the real twilio SDK, aiohttp receivers). Success,
retry then success, permanent failure with fallback to the next channel, timeouts; then
Twilio's callbacks, opt-out, quiet hours, Cancel, circuit breakers and slow hosts."""

from __future__ import annotations

import copy
import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest
from aio_pika.abc import AbstractChannel
from sqlalchemy import select

from dissemination.service import Service
from dissemination.settings import Settings
from dissemination.store.tables import contacts, deliveries
from testbed.alerts import cap_json
from testbed.twilio import (
    HANGING_NUMBER,
    INVALID_NUMBER,
)
from tests.brokerutil import wait_until
from tests.deliveryrig import (  # noqa: F401 - fixtures
    Sinks,
    custom_service_fixture,
    delivery_settings_fixture,
    post_inbound,
    publish_alert,
    rows_of,
    settled,
    sinks_fixture,
    start_hooks,
)
from tests.people import enrol
from tests.webhookrig import independent_signature

pytestmark = pytest.mark.slow


def addresses(sinks: Sinks) -> dict[str, dict[str, str]]:
    hooks = sinks.hooks.base
    return {
        "email": {
            "ok": "ok@example.org",
            "flaky": "flaky@example.org",
            "permanent": "reject@example.org",
            "timeout": "hang@example.org",
        },
        "sms": {
            "ok": "+12025550100",
            "flaky": "+12025550101",
            "permanent": INVALID_NUMBER,
            "timeout": HANGING_NUMBER,
        },
        "webhook": {
            "ok": hooks + "ok",
            "flaky": hooks + "flaky",
            "permanent": hooks + "missing",
            "timeout": hooks + "stall",
        },
    }


FALLBACK = {"email": "webhook", "sms": "webhook", "webhook": "email"}


def check_provider_id(channel: str, row: dict[str, Any]) -> None:
    provider_id = row["provider_id"]
    if channel == "email":
        assert provider_id == f"<{row['id']}@dissemination.invalid>"
    elif channel == "sms":
        assert provider_id.startswith("SM")
        assert len(provider_id) == 34
    else:
        assert provider_id == "200"


@pytest.mark.parametrize("channel_name", ["email", "sms", "webhook"])
@pytest.mark.parametrize("case", ["ok", "flaky", "permanent", "timeout"])
async def test_channel_conformance(
    service: Service,
    channel: AbstractChannel,
    settings: Settings,
    sinks: Sinks,
    channel_name: str,
    case: str,
) -> None:
    fallback = FALLBACK[channel_name]
    own = addresses(sinks)
    contacts = {channel_name: own[channel_name][case], fallback: own[fallback]["ok"]}
    if case == "flaky" and channel_name == "sms":
        sinks.twilio.fail_next(1, 500)
    await enrol(service, f"{channel_name}-{case}", contacts)
    alert_id = await publish_alert(channel, settings, f"CONF-{channel_name}-{case}")
    expected_rows = 2 if case in ("permanent", "timeout") else 1
    rows = {r["channel"]: r for r in await settled(service, alert_id, expected_rows)}
    primary = rows[channel_name]
    if case in ("ok", "flaky"):
        assert (primary["state"], primary["attempts"]) == ("sent", 1 if case == "ok" else 2)
        check_provider_id(channel_name, primary)
    else:
        if case == "permanent":
            assert (primary["state"], primary["attempts"]) == ("failed", 1)
        else:  # retried until max_attempts, then given up on
            assert (primary["state"], primary["attempts"]) == ("failed", 2)
            assert primary["reason"].startswith("gave up after 2 attempts")
        second = rows[fallback]
        assert (second["state"], second["origin"], second["fallback_of"]) == (
            "sent",
            "fallback",
            primary["id"],
        )
        check_provider_id(fallback, second)
    if primary["state"] == "sent":
        await check_received(sinks, channel_name, primary)


async def check_received(sinks: Sinks, channel_name: str, row: dict[str, Any]) -> None:
    """What the far end got: parsed back, signature verified, marking present."""
    if channel_name == "email":
        received = (await sinks.smtp.message(0)).parsed()
        assert received["Message-ID"] == row["provider_id"]
        assert "TLP:GREEN" in str(received["Subject"])
        assert received.get_content_type() == "multipart/alternative"
    elif channel_name == "sms":
        (message,) = sinks.twilio.messages
        assert (message["sid"], message["to"]) == (row["provider_id"], row["address"])
        assert message["body"].startswith("TLP:GREEN")
    else:
        headers, body = sinks.hooks.requests[-1]
        assert headers["webhook-id"] == row["id"]
        assert json.loads(body)["deliveryId"] == row["id"]


async def test_twilio_status_callbacks_only_move_rows_forward(
    service: Service, channel: AbstractChannel, settings: Settings, sinks: Sinks
) -> None:
    await enrol(service, "phone", {"sms": "+12025550100"})
    alert_id = await publish_alert(channel, settings, "STATUS-1")
    (row,) = await settled(service, alert_id, 1)
    sid = row["provider_id"]
    assert await sinks.twilio.send_status_callback(sid, "sent") == 204
    assert (await rows_of(service, alert_id))[0]["state"] == "sent"
    assert await sinks.twilio.send_status_callback(sid, "delivered") == 204
    assert (await rows_of(service, alert_id))[0]["state"] == "delivered"
    assert await sinks.twilio.send_status_callback(sid, "undelivered", 30003) == 204
    assert (await rows_of(service, alert_id))[0]["state"] == "delivered"  # never backwards
    async with aiohttp.ClientSession() as session:
        url = sinks.public_url + "/hooks/twilio/status"
        form = {"MessageSid": sid, "MessageStatus": "failed"}
        headers = {"X-Twilio-Signature": "forged"}
        async with session.post(url, data=form, headers=headers) as response:
            assert response.status == 403


async def test_undelivered_callback_fails_the_row_with_the_error_code(
    service: Service, channel: AbstractChannel, settings: Settings, sinks: Sinks
) -> None:
    await enrol(service, "phone", {"sms": "+12025550100"})
    alert_id = await publish_alert(channel, settings, "STATUS-2")
    (row,) = await settled(service, alert_id, 1)
    assert await sinks.twilio.send_status_callback(row["provider_id"], "undelivered", 30003) == 204
    (row,) = await rows_of(service, alert_id)
    assert (row["state"], row["reason"]) == ("failed", "undelivered: Twilio error 30003")


async def test_stop_suppresses_sms_and_falls_back_start_resumes(
    service: Service, channel: AbstractChannel, settings: Settings, sinks: Sinks
) -> None:
    number = "+12025550142"
    await enrol(service, "phone", {"sms": number, "email": "phone-owner@example.org"})
    await post_inbound(sinks, number, "stop", forged=True)  # unsigned: changes nothing
    help_reply = await post_inbound(sinks, number, "HELP")
    assert "Reply STOP" in help_reply
    assert "<Response" in await post_inbound(sinks, number, " Stop ")
    alert_id = await publish_alert(channel, settings, "OPTOUT-1")
    rows = {r["channel"]: r for r in await settled(service, alert_id, 2)}
    assert (rows["sms"]["state"], rows["sms"]["reason"]) == ("suppressed", "opted_out")
    assert (rows["email"]["state"], rows["email"]["origin"]) == ("sent", "fallback")
    assert sinks.twilio.messages == []
    await post_inbound(sinks, number, "START")
    alert_id = await publish_alert(channel, settings, "OPTOUT-2")
    (row,) = await settled(service, alert_id, 1)
    assert (row["channel"], row["state"]) == ("sms", "sent")


def minor(identifier: str) -> dict[str, Any]:
    document = cap_json(identifier, handling={"tlp": "GREEN"})
    info = copy.deepcopy(document["info"][0])
    info.update(severity="Minor", urgency="Expected")
    return {"info": [info]}


async def test_quiet_hours_hold_minor_alerts_and_let_severe_ones_through(
    service: Service, channel: AbstractChannel, settings: Settings, sinks: Sinks
) -> None:
    now = datetime.now(UTC)
    window = {
        "start": (now - timedelta(hours=1)).strftime("%H:%M"),
        "end": (now + timedelta(hours=2)).strftime("%H:%M"),
    }
    await enrol(service, "sleeper", {"webhook": sinks.hooks.base + "ok"}, quiet_hours=window)
    held_id = await publish_alert(channel, settings, "QUIET-1", **minor("QUIET-1"))
    severe_id = await publish_alert(channel, settings, "QUIET-2")
    (severe,) = await settled(service, severe_id, 1)
    assert severe["state"] == "sent"
    (held,) = await rows_of(service, held_id)
    assert (held["state"], held["reason"], held["attempts"]) == ("pending", "quiet_hours", 0)
    assert held["not_before"] > now + timedelta(minutes=100)
    assert sinks.hooks.calls == {"ok": 1}


async def test_cancel_stops_pending_retries_of_the_original(
    custom_service: Callable[..., Awaitable[tuple[Service, Settings, AbstractChannel]]],
    sinks: Sinks,
) -> None:
    service, settings, channel = await custom_service(
        broker_max_attempts="20",
        broker_retry_delay_seconds="0.5",
        broker_retry_max_delay_seconds="1",
    )
    await enrol(service, "dead-end", {"webhook": sinks.hooks.base + "broken"})
    original = cap_json("CANCEL-ME", handling={"tlp": "GREEN"})
    alert_id = await publish_alert(channel, settings, "CANCEL-ME")

    async def tried() -> bool:
        return sinks.hooks.calls.get("broken", 0) >= 1

    await wait_until(tried, what="the first attempt")
    reference = f"{original['sender']},CANCEL-ME,{original['sent']}"
    cancel_id = await publish_alert(
        channel, settings, "CANCEL-1", msgType="Cancel", references=reference
    )
    (row,) = await settled(service, alert_id, 1)
    assert row["state"] == "suppressed"
    assert row["reason"].startswith("cancel")
    assert row["attempts"] < 20
    (cancel_row,) = await rows_of(service, cancel_id)  # the Cancel reaches the same endpoint
    assert cancel_row["address"] == row["address"]


async def test_an_open_circuit_defers_rows_without_spending_their_attempts(
    custom_service: Callable[..., Awaitable[tuple[Service, Settings, AbstractChannel]]],
    sinks: Sinks,
) -> None:
    service, settings, channel = await custom_service(
        delivery_breaker_failures="3",
        delivery_breaker_cooldown_seconds="3600",
        broker_max_attempts="5",
        webhook_timeout_seconds="30",  # the first wave must reach the host, however busy CI is
    )
    for n in range(6):
        await enrol(service, f"dead-{n}", {"webhook": sinks.hooks.base + f"broken?n={n}"})
    alert_id = await publish_alert(channel, settings, "BREAKER-1")

    async def deferred() -> bool:
        rows = await rows_of(service, alert_id)
        circuit = [r for r in rows if r["reason"] == "circuit open for this destination"]
        return len(rows) == 6 and len(circuit) == 6

    await wait_until(deferred, what="every row waiting on the open circuit")
    rows = await rows_of(service, alert_id)
    assert {(r["state"], r["attempts"]) for r in rows} == {("pending", 1)}
    assert sinks.hooks.calls["broken"] == 6  # the first wave only; no retry reached the host


async def test_a_stalled_host_does_not_hold_up_the_others(
    custom_service: Callable[..., Awaitable[tuple[Service, Settings, AbstractChannel]]],
    sinks: Sinks,
) -> None:
    service, settings, channel = await custom_service(
        webhook_timeout_seconds="60", delivery_per_host_concurrency="4"
    )
    other, runner = await start_hooks()
    try:
        for n in range(4):
            await enrol(service, f"stalled-{n}", {"webhook": sinks.hooks.base + f"stall?n={n}"})
        for n in range(20):
            await enrol(service, f"live-{n}", {"webhook": other.base + f"ok?n={n}"})
        alert_id = await publish_alert(channel, settings, "STALL-1")

        async def live_sent() -> bool:
            rows = await rows_of(service, alert_id)
            return len([r for r in rows if r["state"] == "sent"]) == 20

        await wait_until(live_sent, what="every live endpoint")
        rows = await rows_of(service, alert_id)
        stalled = [r for r in rows if "stall" in r["address"]]
        assert {r["state"] for r in stalled} == {"sending"}  # still hanging meanwhile
        sinks.hooks.release.set()
        rows = await settled(service, alert_id, 24)
        assert {r["state"] for r in rows} == {"sent"}
        for headers, body in other.requests:
            (secret,) = await _secrets(service, headers["webhook-id"])
            assert headers["webhook-signature"] == independent_signature(secret, headers, body)
    finally:
        await runner.cleanup()


async def _secrets(service: Service, delivery_id: str) -> list[str]:
    assert service.database is not None
    async with service.database.reading() as conn:
        result = await conn.scalars(
            select(contacts.c.secret)
            .join(deliveries, deliveries.c.contact_id == contacts.c.id)
            .where(deliveries.c.id == delivery_id)
        )
        return [s for s in result if s]
