"""Log lines: JSON objects one per line or console text, ours and every library's alike,
carrying the instance and the ids that apply; a failed send is one WARNING with its reason; and
no line carries a token, a secret, a message body or personal data: a whole alert's life
(delivery by email, SMS and webhook, acknowledgment by link, SMS reply and webhook token, a
refused token) runs with our own loggers at DEBUG and every library at INFO, and none of those
values appears in any line the service's process writes."""

from __future__ import annotations

import io
import json
import logging
import os
import re
import socket
import warnings
from collections.abc import Iterator
from typing import Any

import aio_pika
import aiohttp
import pytest
import structlog
from aio_pika.abc import AbstractChannel
from sqlalchemy import select

from core.errors import ConfigError
from dissemination.logs import configure, instance_name
from dissemination.service import Service
from dissemination.settings import Settings, load_settings
from dissemination.store.tables import service_secrets
from testbed.alerts import cap_json
from testbed.twilio import AUTH_TOKEN
from tests.brokerutil import get_all, publish, rejection_of
from tests.deliveryrig import (  # noqa: F401 - fixtures
    Sinks,
    delivery_settings_fixture,
    post_inbound,
    publish_alert,
    rows_of,
    settled,
    sinks_fixture,
)
from tests.logcapture import LogLines
from tests.people import enrol

# The loopback sinks log what they receive, as a real mail server would; they are not us.
SINK_LOGGERS = ("mail.log", "aiohttp.access")
HEADLINE = "Armed subject Jordan Example, DOB 1970-01-01, plate 7ABC123"
DESCRIPTION = "Last seen at 12 Example Street driving a blue sedan."
log = structlog.stdlib.get_logger("dissemination.test")


@pytest.fixture
def configured() -> Iterator[Any]:
    """`configure` as the CLI calls it, writing to a buffer; the root logger restored after."""
    root, twilio = logging.getLogger(), logging.getLogger("twilio")
    levels = (root.level, twilio.level)
    handlers: list[logging.Handler] = []
    stream = io.StringIO()

    def start(log_format: str, level: str = "INFO") -> io.StringIO:
        handlers.append(configure(level, log_format, "host-a:42", stream))
        return stream

    yield start
    for handler in handlers:
        root.removeHandler(handler)
    root.setLevel(levels[0])
    twilio.setLevel(levels[1])
    logging.captureWarnings(False)
    structlog.contextvars.clear_contextvars()


def test_json_mode_writes_one_object_per_line_with_the_bound_ids(configured: Any) -> None:
    stream = configured("json")
    structlog.contextvars.bind_contextvars(alert_id="a-1", delivery_id="d-1", channel="sms")
    log.warning("send_failed", reason="timed out", attempts=2)
    log.debug("below the level")
    try:
        raise RuntimeError("kaput")
    except RuntimeError:
        log.exception("send_raised")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    first, second = (json.loads(line) for line in lines)
    assert list(first)[:5] == ["timestamp", "level", "instance", "logger", "event"]
    assert first == {
        "timestamp": first["timestamp"],
        "level": "warning",
        "instance": "host-a:42",
        "logger": "dissemination.test",
        "event": "send_failed",
        "reason": "timed out",
        "attempts": 2,
        "alert_id": "a-1",
        "delivery_id": "d-1",
        "channel": "sms",
    }
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z", first["timestamp"])
    assert (second["level"], second["event"]) == ("error", "send_raised")
    assert "RuntimeError: kaput" in second["exception"]  # the traceback, inside the one line


def test_console_mode_is_text_for_people(configured: Any) -> None:
    stream = configured("console")
    structlog.contextvars.bind_contextvars(delivery_id="d-1")
    log.warning("send_failed", channel="email", reason="550 mailbox unavailable")
    (line,) = stream.getvalue().splitlines()
    assert not line.startswith("{")
    assert "[warning" in line
    assert "send_failed" in line
    assert "[dissemination.test]" in line
    assert "channel=email" in line
    assert "reason='550 mailbox unavailable'" in line
    assert "delivery_id=d-1" in line
    assert "instance=host-a:42" in line
    assert "\x1b[" not in line  # no colours unless writing to a terminal


@pytest.mark.parametrize("log_format", ["json", "console"])
def test_a_library_record_comes_out_in_the_chosen_format(configured: Any, log_format: str) -> None:
    stream = configured(log_format)
    structlog.contextvars.bind_contextvars(alert_id="a-2")
    logging.getLogger("aio_pika.robust_connection").warning("connection lost: %s", "reset")
    logging.getLogger("twilio.http_client").info("-- BEGIN Twilio API Request --")  # noise
    (line,) = stream.getvalue().splitlines()
    if log_format == "json":
        assert json.loads(line) | {"timestamp": None} == {
            "timestamp": None,
            "level": "warning",
            "instance": "host-a:42",
            "logger": "aio_pika.robust_connection",
            "event": "connection lost: reset",
            "alert_id": "a-2",
        }
    else:
        assert "[warning" in line
        assert "connection lost: reset" in line
        assert "[aio_pika.robust_connection]" in line
        assert "alert_id=a-2" in line


def test_python_warnings_come_out_as_lines_too(configured: Any) -> None:
    stream = configured("json")
    warnings.warn("an old API", DeprecationWarning, stacklevel=1)
    (line,) = stream.getvalue().splitlines()
    assert json.loads(line)["logger"] == "py.warnings"


def test_the_instance_is_the_configured_name_or_host_and_pid() -> None:
    assert instance_name("eoc-east-1") == "eoc-east-1"
    assert instance_name("") == f"{socket.gethostname()}:{os.getpid()}"


def test_log_format_and_instance_name_are_settings() -> None:
    service = load_settings({}).service
    assert (service.log_format, service.instance_name) == ("console", "")
    env = {"DISSEMINATION_SERVICE_LOG_FORMAT": "json", "DISSEMINATION_SERVICE_INSTANCE_NAME": "a"}
    service = load_settings(env).service
    assert (service.log_format, service.instance_name) == ("json", "a")
    with pytest.raises(ConfigError) as error:
        load_settings({"DISSEMINATION_SERVICE_LOG_FORMAT": "xml"})
    assert error.value.key == "service.log_format"


@pytest.mark.slow
async def test_start_up_names_the_http_address_the_store_the_broker_and_the_channels(
    logged: LogLines, service: Service, settings: Settings
) -> None:
    (http,) = logged.named("http_listening")
    host, port = service.http.addresses[0][:2]
    assert http["address"] == f"{host}:{port}"
    assert port != 0
    (store,) = logged.named("store_opened")
    assert store["url"].endswith(("ledger.db", "/" + settings.store.url.rsplit("/", 1)[1]))
    (broker,) = logged.named("broker_connected")
    assert broker["url"] == settings.broker.url
    assert broker["user"] == settings.broker.username
    (started,) = logged.named("service_started")
    assert started["channels"] == list(settings.delivery.channels)
    assert started["consuming"] == settings.broker.inbound_queue
    assert all(e["level"] == "info" for e in (http, store, broker, started))


@pytest.mark.slow
async def test_the_store_and_broker_lines_mask_passwords(
    logged: LogLines, service_env: dict[str, str], store_kind: str
) -> None:
    if store_kind == "sqlite":
        pytest.skip("only PostgreSQL's URL carries a password")
    env = service_env | {
        "DISSEMINATION_STORE_PASSWORD": "hunter2-store",
        "DISSEMINATION_BROKER_PASSWORD": "guest",
    }
    service = Service(load_settings(env))
    await service.start()
    await service.stop()
    (store,) = logged.named("store_opened")
    assert "hunter2" not in json.dumps(logged.events)
    assert "guest@" not in json.dumps(logged.events)
    assert store["url"].startswith("postgresql+asyncpg://")


@pytest.mark.slow
async def test_a_failed_send_is_one_warning_with_the_row_the_channel_and_the_reason(
    logged: LogLines, service: Service, channel: AbstractChannel, settings: Settings, sinks: Sinks
) -> None:
    await enrol(service, "Gone", {"webhook": sinks.hooks.base + "missing"})  # 404: permanent
    await enrol(service, "Down", {"webhook": sinks.hooks.base + "broken"})  # 503: retried
    await enrol(service, "Fine", {"webhook": sinks.hooks.base + "ok"})
    alert_id = await publish_alert(channel, settings, "LOGS-FAIL")
    rows = {r["address"].rsplit("/", 1)[1]: r for r in await settled(service, alert_id, 3)}
    assert {name: r["state"] for name, r in rows.items()} == {
        "missing": "failed",
        "broken": "failed",
        "ok": "sent",
    }

    def warnings_of(name: str) -> list[dict[str, Any]]:
        row_id = rows[name]["id"]
        return [
            e for e in logged.events if e["level"] == "warning" and e.get("delivery_id") == row_id
        ]

    (gone,) = warnings_of("missing")
    assert gone["event"] == "send_failed"
    assert (gone["alert_id"], gone["channel"]) == (alert_id, "webhook")
    assert "404" in gone["reason"]
    assert gone["attempts"] == 1
    retry, failed = warnings_of("broken")  # max_attempts 2: one retry, then given up
    assert (retry["event"], failed["event"]) == ("send_retry", "send_failed")
    assert "503" in retry["reason"]
    assert retry["at"]
    assert failed["reason"].startswith("gave up after 2 attempts")
    assert warnings_of("ok") == []  # a success is no warning
    (sent,) = logged.named("send_sent", delivery_id=rows["ok"]["id"])
    assert sent["level"] == "debug"
    done = [e for e in logged.named("task_done") if e["channel"] == "webhook"]
    assert sum(e.get("sent", 0) for e in done) == 1


@pytest.mark.slow
async def test_an_intake_rejection_names_the_message_the_alert_and_the_reason_only(
    logged: LogLines, service: Service, channel: AbstractChannel, settings: Settings
) -> None:
    info = cap_json()["info"][0] | {"headline": HEADLINE, "description": DESCRIPTION}
    unknown = cap_json("LOGS-ANON", info=[info])
    invalid = cap_json("LOGS-BAD", info=[info | {"urgency": "Whenever"}])
    exchange = await channel.get_exchange(settings.broker.exchange)
    await exchange.publish(  # names no broker user: publisher_unknown, after decoding
        aio_pika.Message(
            json.dumps(unknown).encode(), content_type="application/json", message_id="anon-1"
        ),
        routing_key="test.alert",
    )
    await publish(channel, settings, json.dumps(invalid).encode(), message_id="bad-1")
    dead = await get_all(channel, settings.broker.dead_letter_queue, 2)
    assert {m.message_id: rejection_of(m)[0] for m in dead} == {
        "anon-1": "publisher_unknown",
        "bad-1": "schema_violation",
    }
    (anon,) = logged.named("message_rejected", message_id="anon-1")
    assert anon["level"] == "warning"
    assert anon["reason"] == "publisher_unknown"
    assert anon["alert_id"]  # decoded before it was refused: the alert is named
    (bad,) = logged.named("message_rejected", message_id="bad-1")
    assert bad["reason"] == "schema_violation"
    assert "alert_id" not in bad
    text = "\n".join(logged.lines)
    for content in ("Jordan Example", "Example Street", "Whenever"):
        assert content not in text


@pytest.mark.slow
async def test_no_token_secret_body_or_address_reaches_the_logs(
    service: Service,
    channel: AbstractChannel,
    settings: Settings,
    sinks: Sinks,
    logged: LogLines,
) -> None:
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
    ours = [
        (line, event)
        for line, event in zip(logged.lines, logged.events, strict=True)  # each one JSON
        if not event["logger"].startswith(SINK_LOGGERS)
    ]
    assert len(ours) > 10  # the run was logged
    assert len(logged.named("alert_recorded", alert_id=alert_id)) == 1
    assert len(logged.named("send_sent", alert_id=alert_id)) == 3
    for what, value in secrets.items():
        for line, event in ours:
            assert value not in line, f"the logs contain the {what}"
            # JSON escapes some characters: the parsed values must not hold it either
            assert value not in json.dumps(event, ensure_ascii=False), (
                f"the logs contain the {what}"
            )
