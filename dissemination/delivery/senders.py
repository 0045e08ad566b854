"""The per-channel half of a delivery worker: turn a claimed ledger row into the channel's
message, send it, and name the destination host (the circuit breaker's key).

Rendering happens here, per row, from the stored normalized document; nothing on this path
validates against a schema again.
"""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import replace
from typing import Any, Protocol
from urllib.parse import urlsplit

from aiolimiter import AsyncLimiter

from channels.base import Outcome, SendResult
from channels.content import AlertContent, Rendering, notice_content
from channels.email import EmailChannel, compose_email
from channels.sms import SmsChannel, SmsMessage, compose_sms
from channels.webhook import WebhookChannel, WebhookMessage
from dissemination.acks.tokens import AckSigner
from dissemination.controls.redaction import Redactions

ACK_PATH_PREFIX = "/ack/"
NOTICE = "notice"

ALERT_CACHE_SIZE = 64


class Sender(Protocol):
    """One channel as the worker sees it."""

    channel: str

    def host(self, row: dict[str, Any]) -> str: ...

    async def send(self, row: dict[str, Any]) -> SendResult: ...

    async def close(self) -> None: ...


def with_content_hash(result: SendResult, content: bytes) -> SendResult:
    """`result`, carrying the hash of what was sent if it was sent."""
    if result.outcome is not Outcome.SENT:
        return result
    return replace(result, content_sha256=hashlib.sha256(content).hexdigest())


class AckLinks:
    """Per-row rendering values: the signed ack token of the row's (alert, stakeholder), the
    link that acknowledges with it, and the SMS reply code. Rows owing no acknowledgment, or
    a service without a signer, get neither."""

    def __init__(self, signer: AckSigner | None = None, public_url: str = "") -> None:
        self.signer = signer
        self.ack_base = public_url.rstrip("/") + ACK_PATH_PREFIX

    def rendering(self, row: dict[str, Any]) -> Rendering:
        token_id = row.get("ack_token_id")
        if self.signer is None or not token_id or row.get("origin") == NOTICE:
            return Rendering(delivery_id=row["id"])
        token = self.signer.sign(token_id, row["ack_expires_at"])
        return Rendering(
            delivery_id=row["id"],
            ack_url=self.ack_base + token,
            ack_code=row["ack_code"],
            ack_token=token,
        )


def document_of(row: dict[str, Any], redactions: Redactions) -> dict[str, Any]:
    """The alert document as this row's recipient may see it: without the personal fields
    unless the recipient is entitled to PII."""
    redacted = redactions.for_row(row)
    return row["document"] if redacted is None else redacted.document


def content_of(row: dict[str, Any], redactions: Redactions) -> AlertContent:
    """The alert as this row presents it: the alert itself, or a supervisor's notice."""
    content = AlertContent.from_document(document_of(row, redactions))
    if row.get("origin") == NOTICE:
        return notice_content(content, json.loads(row["detail"] or "{}"))
    return content


def notice_body(row: dict[str, Any], document: dict[str, Any]) -> bytes:
    """A supervisor's notice as webhook JSON; the alert (`document`, as the supervisor may
    see it) only if the supervisor is cleared."""
    notice = json.loads(row["detail"] or "{}")
    alert = (
        document
        if notice.get("cleared")
        else {"id": document.get("id"), "handling": document.get("handling")}
    )
    body = {
        "type": "unacknowledged",
        "deliveryId": row["id"],
        "notAcknowledgedBy": notice.get("about"),
        "afterSeconds": notice.get("afterSeconds"),
        "alert": alert,
    }
    return json.dumps(body, separators=(",", ":")).encode()


def webhook_body(row: dict[str, Any], rendering: Rendering, document: dict[str, Any]) -> bytes:
    """The JSON a webhook receiver gets: the delivery id, the ack token and link when the
    alert must be acknowledged (POST the token to /api/v1/acks), and the normalized alert
    (`document`, as the recipient may see it)."""
    body: dict[str, Any] = {"type": "alert", "deliveryId": row["id"]}
    if rendering.ack_token:
        body["ack"] = {"token": rendering.ack_token, "url": rendering.ack_url}
    body["alert"] = document
    return json.dumps(body, separators=(",", ":")).encode()


@functools.lru_cache(maxsize=65536)
def _netloc(url: str) -> str:
    return urlsplit(url).netloc.lower()


class WebhookSender:
    """Signed JSON POSTs; the host is the URL's."""

    channel = "webhook"

    def __init__(self, webhook: WebhookChannel, links: AckLinks | None = None) -> None:
        self.webhook = webhook
        self.links = links or AckLinks()
        self.redactions = Redactions()
        self._alert_json: dict[tuple[str, bool], bytes] = {}

    def host(self, row: dict[str, Any]) -> str:
        return _netloc(str(row["address"]))

    def body(self, row: dict[str, Any]) -> bytes:
        """`webhook_body(row, rendering, document)`, with the alert serialized once per alert
        and entitlement, not once per row (or a supervisor's notice)."""
        redacted = self.redactions.for_row(row)
        document = row["document"] if redacted is None else redacted.document
        if row.get("origin") == NOTICE:
            return notice_body(row, document)
        key = (row["alert_id"], redacted is not None)
        alert_json = self._alert_json.get(key)
        if alert_json is None:
            if len(self._alert_json) >= ALERT_CACHE_SIZE:
                self._alert_json.clear()
            alert_json = json.dumps(document, separators=(",", ":")).encode()
            self._alert_json[key] = alert_json
        rendering = self.links.rendering(row)
        head = b'{"type":"alert","deliveryId":' + json.dumps(row["id"]).encode()
        if rendering.ack_token:
            ack = {"token": rendering.ack_token, "url": rendering.ack_url}
            head += b',"ack":' + json.dumps(ack, separators=(",", ":")).encode()
        return head + b',"alert":' + alert_json + b"}"

    async def send(self, row: dict[str, Any]) -> SendResult:
        if not row["secret"]:
            return SendResult(Outcome.PERMANENT, "the webhook contact has no signing secret")
        body = self.body(row)
        result = await self.webhook.send(
            WebhookMessage(row["id"], row["address"], row["secret"], body)
        )
        return with_content_hash(result, body)

    async def close(self) -> None:
        await self.webhook.close()


class EmailSender:
    """Multipart mail through the configured relay; every row shares that relay's circuit."""

    channel = "email"

    def __init__(
        self,
        email: EmailChannel,
        from_address: str,
        message_id_domain: str,
        links: AckLinks | None = None,
    ) -> None:
        self.email = email
        self.from_address = from_address
        self.message_id_domain = message_id_domain
        self.links = links or AckLinks()
        self.redactions = Redactions()

    def host(self, row: dict[str, Any]) -> str:
        return "smtp relay"

    async def send(self, row: dict[str, Any]) -> SendResult:
        try:
            message = compose_email(
                content_of(row, self.redactions),
                self.links.rendering(row),
                row["address"],
                self.from_address,
                self.message_id_domain,
            )
        except ValueError as error:
            return SendResult(Outcome.PERMANENT, f"cannot address the message: {error}")
        result = await self.email.send(message)
        return (
            with_content_hash(result, message.as_bytes())
            if result.outcome is Outcome.SENT
            else result
        )

    async def close(self) -> None:
        await self.email.close()


class SmsSender:
    """Short texts through Twilio at no more than the configured messages per second."""

    channel = "sms"

    def __init__(
        self, sms: SmsChannel | None, messages_per_second: float, links: AckLinks | None = None
    ) -> None:
        self.sms = sms
        self.links = links or AckLinks()
        self.redactions = Redactions()
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
            body = compose_sms(content_of(row, self.redactions), self.links.rendering(row))
        except ValueError as error:
            return SendResult(Outcome.PERMANENT, f"cannot compose the text: {error}")
        async with self.limiter:
            result = await self.sms.send(SmsMessage(row["id"], row["address"], body))
        return with_content_hash(result, body.encode())

    async def close(self) -> None:
        if self.sms is not None:
            await self.sms.close()
