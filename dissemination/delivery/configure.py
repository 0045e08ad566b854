"""The delivery channels as the settings configure them."""

from __future__ import annotations

from channels.base import ChannelName, DeliveryChannel
from channels.destinations import parse_networks
from channels.email import EmailChannel, SmtpConfig
from channels.sms import SmsChannel, TwilioConfig, UnconfiguredSms
from channels.webhook import WebhookChannel
from dissemination.settings import Settings

STATUS_HOOK = "/hooks/twilio/status"
"""Where Twilio posts delivery status (served by `dissemination.api.twiliohooks`)."""


def configured_channel(name: str, settings: Settings) -> DeliveryChannel:
    """The channel `name` as `settings` configure it: SMS without an account is a channel
    that refuses every message, saying so."""
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
        email = settings.email
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
    sms = settings.sms
    if not sms.account_sid:
        return UnconfiguredSms()
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
