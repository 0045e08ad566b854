"""The delivery channels as the settings configure them, and the one phrase per channel that
the start-up log shows: email goes to the SMTP relay, or to the outbox when no relay is
set; SMS goes through Twilio when an account is set, else to the outbox, unless switched off."""

from __future__ import annotations

from pathlib import Path

from channels.base import ChannelName, DeliveryChannel
from channels.destinations import parse_networks
from channels.email import EmailChannel, SmtpConfig
from channels.outbox import EmailOutbox, SmsOutbox
from channels.sms import SmsChannel, SmsOff, TwilioConfig
from channels.webhook import WebhookChannel
from dissemination.settings import Settings

STATUS_HOOK = "/hooks/twilio/status"
"""Where Twilio posts delivery status (served by `dissemination.api.twiliohooks`)."""


def outbox_path(settings: Settings, channel: str) -> Path:
    """Where the outbox keeps `channel`'s files: `<data_dir>/outbox/<channel>`."""
    return settings.data_path / "outbox" / channel


def sms_transport(settings: Settings) -> str:
    """ "twilio", "outbox" or "off", as `sms.transport` and `sms.account_sid` decide."""
    transport = settings.sms.transport
    if transport == "auto":
        return "twilio" if settings.sms.account_sid else "outbox"
    return transport


def configured_channel(name: str, settings: Settings) -> DeliveryChannel:
    """The channel `name` as `settings` configure it."""
    if name == ChannelName.WEBHOOK:
        webhook = settings.webhook
        timeout = webhook.timeout_seconds
        return WebhookChannel(
            parse_networks(webhook.allowed_networks),
            connect_timeout=timeout / 3,
            read_timeout=timeout,
            total_timeout=timeout,
        )
    if name == ChannelName.EMAIL:
        return _email(settings)
    return _sms(settings)


def _email(settings: Settings) -> DeliveryChannel:
    email = settings.email
    if not email.host:
        return EmailOutbox(
            outbox_path(settings, ChannelName.EMAIL), email.from_address, email.message_id_domain
        )
    config = SmtpConfig(
        host=email.host,
        port=email.port,
        security=email.security,
        username=email.username or None,
        password=email.password,
        from_address=email.from_address,
        pool_size=email.pool_size,
        timeout_seconds=email.timeout_seconds,
        validate_certs=email.validate_certs,
        message_id_domain=email.message_id_domain,
    )
    return EmailChannel(config)


def _sms(settings: Settings) -> DeliveryChannel:
    sms = settings.sms
    transport = sms_transport(settings)
    if transport == "off":
        return SmsOff()
    if transport == "outbox":
        sender = sms.from_number or sms.messaging_service_sid or None
        return SmsOutbox(outbox_path(settings, ChannelName.SMS), sender)
    return SmsChannel(
        TwilioConfig(
            account_sid=sms.account_sid,
            auth_token=sms.auth_token or "",
            messaging_service_sid=sms.messaging_service_sid or None,
            from_number=sms.from_number or None,
            api_base=sms.api_base or None,
            status_callback_url=settings.http.public_url.rstrip("/") + STATUS_HOOK,
            timeout_seconds=sms.timeout_seconds,
        ),
        messages_per_second=sms.messages_per_second,
    )


def describe_channel(name: str, settings: Settings) -> str:
    """Where `name`'s messages go, in one short phrase for the start-up log, e.g. "outbox at
    data/outbox/email", "smtp relay.example.org:587 starttls", "twilio messaging service MG…"."""
    if name == ChannelName.WEBHOOK:
        networks = settings.webhook.allowed_networks
        return "webhooks to public addresses" + (
            f" and {', '.join(networks)}" if networks else " only"
        )
    if name == ChannelName.EMAIL:
        email = settings.email
        if not email.host:
            return f"outbox at {outbox_path(settings, name)}"
        return f"smtp {email.host}:{email.port} {email.security}"
    sms = settings.sms
    transport = sms_transport(settings)
    if transport == "off":
        return "off (sms rows fall back to the next channel)"
    if transport == "outbox":
        return f"outbox at {outbox_path(settings, name)}"
    sender = (
        f"messaging service {sms.messaging_service_sid}"
        if sms.messaging_service_sid
        else f"number {sms.from_number}"
    )
    return f"twilio {sender}" + (f" via {sms.api_base}" if sms.api_base else "")
