"""The per-channel half of a delivery worker: turn a claimed ledger row into the channel's
message, send it, and name the destination host (the circuit breaker's key).

Rendering happens here, per row, from the stored normalized document; nothing on this path
validates against a schema again.
"""

from __future__ import annotations

import functools
import json
from typing import Any, Protocol
from urllib.parse import urlsplit

from aiolimiter import AsyncLimiter

from channels.base import Outcome, SendResult
from channels.content import AlertContent, Rendering
from channels.email import EmailChannel, compose_email
from channels.sms import SmsChannel, SmsMessage, compose_sms
from channels.webhook import WebhookChannel, WebhookMessage

ALERT_CACHE_SIZE = 64


class Sender(Protocol):
    """One channel as the worker sees it."""

    channel: str

    def host(self, row: dict[str, Any]) -> str: ...

    async def send(self, row: dict[str, Any]) -> SendResult: ...

    async def close(self) -> None: ...


def rendering_of(row: dict[str, Any]) -> Rendering:
    return Rendering(delivery_id=row["id"])


def webhook_body(row: dict[str, Any]) -> bytes:
    """The JSON a webhook receiver gets: the delivery id and the normalized alert."""
    return json.dumps(
        {"type": "alert", "deliveryId": row["id"], "alert": row["document"]},
        separators=(",", ":"),
    ).encode()


@functools.lru_cache(maxsize=65536)
def _netloc(url: str) -> str:
    return urlsplit(url).netloc.lower()


class WebhookSender:
    """Signed JSON POSTs; the host is the URL's."""

    channel = "webhook"

    def __init__(self, webhook: WebhookChannel) -> None:
        self.webhook = webhook
        self._alert_json: dict[str, bytes] = {}

    def host(self, row: dict[str, Any]) -> str:
        return _netloc(str(row["address"]))

    def body(self, row: dict[str, Any]) -> bytes:
        """`webhook_body(row)`, with the alert serialized once per alert, not once per row."""
        alert_json = self._alert_json.get(row["alert_id"])
        if alert_json is None:
            if len(self._alert_json) >= ALERT_CACHE_SIZE:
                self._alert_json.clear()
            alert_json = json.dumps(row["document"], separators=(",", ":")).encode()
            self._alert_json[row["alert_id"]] = alert_json
        delivery_id = json.dumps(row["id"]).encode()
        return b'{"type":"alert","deliveryId":' + delivery_id + b',"alert":' + alert_json + b"}"

    async def send(self, row: dict[str, Any]) -> SendResult:
        if not row["secret"]:
            return SendResult(Outcome.PERMANENT, "the webhook contact has no signing secret")
        message = WebhookMessage(row["id"], row["address"], row["secret"], self.body(row))
        return await self.webhook.send(message)

    async def close(self) -> None:
        await self.webhook.close()


class EmailSender:
    """Multipart mail through the configured relay; every row shares that relay's circuit."""

    channel = "email"

    def __init__(self, email: EmailChannel, from_address: str, message_id_domain: str) -> None:
        self.email = email
        self.from_address = from_address
        self.message_id_domain = message_id_domain

    def host(self, row: dict[str, Any]) -> str:
        return "smtp relay"

    async def send(self, row: dict[str, Any]) -> SendResult:
        try:
            message = compose_email(
                AlertContent.from_document(row["document"]),
                rendering_of(row),
                row["address"],
                self.from_address,
                self.message_id_domain,
            )
        except ValueError as error:
            return SendResult(Outcome.PERMANENT, f"cannot address the message: {error}")
        return await self.email.send(message)

    async def close(self) -> None:
        await self.email.close()


class SmsSender:
    """Short texts through Twilio at no more than the configured messages per second."""

    channel = "sms"

    def __init__(self, sms: SmsChannel | None, messages_per_second: float) -> None:
        self.sms = sms
        if messages_per_second >= 1:
            self.limiter = AsyncLimiter(messages_per_second, 1.0)
        else:
            self.limiter = AsyncLimiter(1, 1.0 / messages_per_second)

    def host(self, row: dict[str, Any]) -> str:
        return "twilio"

    async def send(self, row: dict[str, Any]) -> SendResult:
        if self.sms is None:
            return SendResult(Outcome.PERMANENT, "sms is not configured (sms.account_sid)")
        try:
            body = compose_sms(AlertContent.from_document(row["document"]), rendering_of(row))
        except ValueError as error:
            return SendResult(Outcome.PERMANENT, f"cannot compose the text: {error}")
        async with self.limiter:
            return await self.sms.send(SmsMessage(row["id"], row["address"], body))

    async def close(self) -> None:
        if self.sms is not None:
            await self.sms.close()
