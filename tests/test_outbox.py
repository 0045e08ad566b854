"""The outbox transports (channels/outbox.py) and how the settings choose a transport
(dissemination/delivery/configure.py): with no SMTP relay or Twilio account, each email is an
.eml file and each SMS a JSON file under the data directory, written whole, owner-only, named
by the ledger row; a failure to write is retried; a relay or an account switches to the real
transport, and the start-up log says which."""

from __future__ import annotations

import hashlib
import json
import stat
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from email.message import EmailMessage
from email.parser import BytesParser
from email.policy import default as default_policy
from pathlib import Path
from typing import Any

import pytest
from aio_pika.abc import AbstractChannel

from channels.base import Outcome
from channels.email import EmailChannel
from channels.outbox import EmailOutbox, SmsOutbox
from channels.sms import SmsChannel, SmsOff
from core.errors import ConfigError
from dissemination.delivery.configure import configured_channel, describe_channel
from dissemination.service import Service
from dissemination.settings import Settings, load_settings
from testbed.smtp import SmtpSink, start_smtp_sink
from tests.brokerutil import wait_until
from tests.deliveryrig import publish_alert, rows_of, settled
from tests.emailrig import DOMAIN, FROM, config, message
from tests.logcapture import capturing
from tests.people import enrol

NOW = datetime(2026, 11, 24, 15, 0, tzinfo=UTC)


def parsed(raw: bytes) -> EmailMessage:
    mail = BytesParser(policy=default_policy).parsebytes(raw)
    assert isinstance(mail, EmailMessage)
    return mail


def comparable(raw: bytes) -> bytes:
    """`raw` without what differs each time a mail is composed: its Date and MIME boundary."""
    boundary = parsed(raw).get_boundary()
    assert boundary is not None
    lines = (line for line in raw.splitlines(True) if not line.startswith(b"Date: "))
    return b"".join(lines).replace(boundary.encode(), b"BOUNDARY")


def owner_only(path: Path) -> bool:
    return stat.S_IMODE(path.stat().st_mode) == 0o600


@pytest.fixture
async def sink() -> AsyncIterator[SmtpSink]:
    async with start_smtp_sink() as running:
        yield running


async def test_an_email_is_the_message_smtp_would_submit(tmp_path: Path, sink: SmtpSink) -> None:
    outbox = EmailOutbox(tmp_path / "email", FROM, DOMAIN)
    result = await outbox.send(message(delivery_id="row-7"))
    written = tmp_path / "email" / "row-7.eml"
    assert result.outcome is Outcome.SENT, result.detail
    assert result.detail == f"written to {written}"
    assert result.provider_id == f"<row-7@{DOMAIN}>"
    raw = written.read_bytes()
    assert result.content_sha256 == hashlib.sha256(raw).hexdigest()
    assert owner_only(written)
    assert b"\n" not in raw.replace(b"\r\n", b"")  # RFC 5322 line ends
    relay = EmailChannel(config(sink))
    try:
        assert (await relay.send(message(delivery_id="row-7"))).outcome is Outcome.SENT
    finally:
        await relay.close()
    # byte for byte what the relay received, but for the moment it was composed
    assert comparable(raw) == comparable((await sink.message(0)).raw)
    mail = parsed(raw)
    assert (mail["To"], mail["From"]) == ("analyst@example.org", FROM)
    assert [part.get_content_type() for part in mail.iter_parts()] == ["text/plain", "text/html"]


async def test_a_resend_replaces_the_file_and_leaves_nothing_else(tmp_path: Path) -> None:
    outbox = EmailOutbox(tmp_path / "email", FROM, DOMAIN)
    first = await outbox.send(message(delivery_id="row-1", headline="First words"))
    second = await outbox.send(message(delivery_id="row-1", headline="Second words"))
    assert (first.outcome, second.outcome) == (Outcome.SENT, Outcome.SENT)
    assert [p.name for p in (tmp_path / "email").iterdir()] == ["row-1.eml"]
    assert "Second words" in str(parsed((tmp_path / "email" / "row-1.eml").read_bytes())["Subject"])
    assert stat.S_IMODE((tmp_path / "email").stat().st_mode) == 0o700


async def test_an_sms_is_a_json_record_of_the_text(tmp_path: Path) -> None:
    outbox = SmsOutbox(tmp_path / "sms", "+12025550199", clock=lambda: NOW)
    outbound = message(to="+12025550100", delivery_id="row-2")
    result = await outbox.send(outbound)
    written = tmp_path / "sms" / "row-2.json"
    assert result.outcome is Outcome.SENT, result.detail
    body = SmsChannel.compose(outbound)
    assert json.loads(written.read_text()) == {
        "to": "+12025550100",
        "sender": "+12025550199",
        "body": body,
        "delivery_id": "row-2",
        "time": "2026-11-24T15:00:00+00:00",
    }
    assert result.content_sha256 == hashlib.sha256(body.encode()).hexdigest()
    assert owner_only(written)
    assert outbox.host(outbound) == "sms outbox"


@pytest.mark.parametrize("kind", ["email", "sms"])
async def test_a_failure_to_write_is_transient_and_the_next_try_succeeds(
    tmp_path: Path, kind: str
) -> None:
    blocked = tmp_path / "outbox"
    blocked.write_text("a file where the directory should be")
    channel: EmailOutbox | SmsOutbox = (
        EmailOutbox(blocked / kind, FROM, DOMAIN)
        if kind == "email"
        else SmsOutbox(blocked / kind, None)
    )
    to = "analyst@example.org" if kind == "email" else "+12025550100"
    result = await channel.send(message(to=to, delivery_id="row-3"))
    assert result.outcome is Outcome.TRANSIENT
    assert result.detail.startswith(f"cannot write to the outbox {blocked / kind}: ")
    assert result.content_sha256 is None
    blocked.unlink()
    assert (await channel.send(message(to=to, delivery_id="row-3"))).outcome is Outcome.SENT
    assert [p.name for p in (blocked / kind).iterdir()] == [
        "row-3.eml" if kind == "email" else "row-3.json"
    ]


async def test_what_cannot_be_composed_or_named_fails_permanently(tmp_path: Path) -> None:
    email = EmailOutbox(tmp_path / "email", FROM, DOMAIN)
    bad_address = await email.send(message(to="two@example.org, three@example.org"))
    assert bad_address.outcome is Outcome.PERMANENT
    assert bad_address.detail.startswith("cannot address the message")
    sms = SmsOutbox(tmp_path / "sms", None)
    for delivery_id in ("../escape", ".hidden", ""):
        result = await sms.send(message(to="+12025550100", delivery_id=delivery_id))
        assert result.outcome is Outcome.PERMANENT
        assert result.detail.startswith("cannot name the outbox file")
    assert not (tmp_path / "email").exists()
    assert not (tmp_path / "escape.json").exists()


def settings_with(tmp_path: Path, **env: str) -> Settings:
    return load_settings(
        {"DISSEMINATION_SERVICE_DATA_DIR": str(tmp_path)}
        | {f"DISSEMINATION_{k.upper()}": v for k, v in env.items()}
    )


def test_the_embedded_defaults_deliver_to_the_outbox(tmp_path: Path) -> None:
    settings = settings_with(tmp_path)
    assert (settings.email.host, settings.sms.transport) == ("", "auto")
    email, sms = configured_channel("email", settings), configured_channel("sms", settings)
    assert isinstance(email, EmailOutbox)
    assert isinstance(sms, SmsOutbox)
    assert email.outbox.path == tmp_path / "outbox" / "email"
    assert sms.outbox.path == tmp_path / "outbox" / "sms"
    assert describe_channel("email", settings) == f"outbox at {tmp_path}/outbox/email"
    assert describe_channel("sms", settings) == f"outbox at {tmp_path}/outbox/sms"
    assert describe_channel("webhook", settings) == "webhooks to public addresses only"


def test_a_relay_or_an_account_switches_to_the_real_transport(tmp_path: Path) -> None:
    settings = settings_with(
        tmp_path,
        email_host="relay.example.org",
        email_port="587",
        email_security="starttls",
        sms_account_sid="AC" + "0" * 32,
        sms_messaging_service_sid="MG" + "1" * 32,
        webhook_allowed_networks="127.0.0.1/32",
    )
    assert isinstance(configured_channel("email", settings), EmailChannel)
    assert isinstance(configured_channel("sms", settings), SmsChannel)
    assert describe_channel("email", settings) == "smtp relay.example.org:587 starttls"
    assert describe_channel("sms", settings) == f"twilio messaging service MG{'1' * 32}"
    assert describe_channel("webhook", settings) == "webhooks to public addresses and 127.0.0.1/32"
    by_number = settings_with(
        tmp_path, sms_account_sid="AC1", sms_from_number="+12025550199", sms_api_base="http://h:1"
    )
    assert describe_channel("sms", by_number) == "twilio number +12025550199 via http://h:1"
    forced = settings_with(tmp_path, sms_account_sid="AC1", sms_transport="outbox")
    assert isinstance(configured_channel("sms", forced), SmsOutbox)


def test_sms_can_be_switched_off_to_fall_back(tmp_path: Path) -> None:
    for account in ("", "AC1"):
        settings = settings_with(tmp_path, sms_transport="off", sms_account_sid=account)
        assert isinstance(configured_channel("sms", settings), SmsOff)
        assert describe_channel("sms", settings) == "off (sms rows fall back to the next channel)"


def test_an_unknown_sms_transport_is_refused_naming_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as raised:
        settings_with(tmp_path, sms_transport="carrier-pigeon")
    assert "sms.transport='carrier-pigeon'" in str(raised.value)
    assert "auto, outbox, off" in str(raised.value)


async def test_a_first_delivery_needs_no_other_server(
    service: Service,
    channel: AbstractChannel,
    settings: Settings,
) -> None:
    outbox = settings.data_path / "outbox"
    await enrol(service, "by-email", {"email": "analyst@example.org"})
    await enrol(service, "by-sms", {"sms": "+12025550100"})
    alert_id = await publish_alert(channel, settings, "OUTBOX-1")
    rows = {r["channel"]: r for r in await settled(service, alert_id, 2)}
    assert {c: r["state"] for c, r in rows.items()} == {"email": "sent", "sms": "sent"}
    mail = parsed((outbox / "email" / f"{rows['email']['id']}.eml").read_bytes())
    assert mail["To"] == "analyst@example.org"
    text: dict[str, Any] = json.loads((outbox / "sms" / f"{rows['sms']['id']}.json").read_text())
    assert (text["to"], text["delivery_id"]) == ("+12025550100", rows["sms"]["id"])
    assert text["body"].startswith("TLP:GREEN")


async def test_the_start_up_log_names_each_transport(settings: Settings) -> None:
    with capturing() as logs:
        running = Service(settings, only=("email", "sms"))
        await running.start()
        await running.stop()
    outbox = settings.data_path / "outbox"
    assert [(e["channel"], e["transport"]) for e in logs.named("channel_transport")] == [
        ("email", f"outbox at {outbox}/email"),
        ("sms", f"outbox at {outbox}/sms"),
    ]


async def test_a_write_failure_is_retried_by_the_worker(
    service: Service, channel: AbstractChannel, settings: Settings
) -> None:
    outbox = settings.data_path / "outbox"
    outbox.mkdir(parents=True, exist_ok=True)
    (outbox / "email").write_text("in the way")
    await enrol(service, "retried", {"email": "analyst@example.org"})
    alert_id = await publish_alert(channel, settings, "OUTBOX-2")

    async def tried() -> bool:
        rows = await rows_of(service, alert_id)
        return bool(rows) and rows[0]["attempts"] >= 1 and rows[0]["state"] != "sending"

    await wait_until(tried, what="a first, failed attempt")
    (outbox / "email").unlink()
    [row] = await settled(service, alert_id, 1)
    assert row["state"] == "sent"
    assert row["attempts"] >= 2
    assert (outbox / "email" / f"{row['id']}.eml").exists()
