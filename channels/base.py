"""The one seam every delivery channel implements: take one outbound message, compose it in
the channel's form, send it, and say whether it went, whether trying again may help, or
whether it never will.

    SENT       the provider accepted it (provider_id says how to find it there)
    TRANSIENT  worth retrying (timeouts, 429, 5xx, SMTP 4xx); retry_after if the peer said
    PERMANENT  retrying cannot help (bad address, 4xx, SMTP 5xx); fall back to another channel

The channels are named here once (`ChannelName`, `CHANNEL_NAMES`); every other list of them
is made from this one.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any, Protocol

from channels.content import AlertContent, Rendering, notice_content


class ChannelName(StrEnum):
    """The delivery channels, each with one queue, one worker and one class here."""

    EMAIL = "email"
    SMS = "sms"
    WEBHOOK = "webhook"


CHANNEL_NAMES: tuple[str, ...] = tuple(name.value for name in ChannelName)
"""The channel names as plain strings: ("email", "sms", "webhook")."""


class Outcome(StrEnum):
    """What a send attempt came to (see above)."""

    SENT = "sent"
    TRANSIENT = "transient"
    PERMANENT = "permanent"


@dataclass(frozen=True, slots=True)
class SendResult:
    """What one send attempt came to; `content_sha256` is the hash of the exact content sent,
    for the dissemination record. `opted_out`: the recipient told the provider to stop (a
    permanent refusal that suppresses the row rather than failing it)."""

    outcome: Outcome
    detail: str
    provider_id: str | None = None
    retry_after_seconds: float | None = None
    disable_address: bool = False
    content_sha256: str | None = None
    opted_out: bool = False


def with_content_hash(result: SendResult, content: bytes) -> SendResult:
    """`result`, carrying the SHA-256 of `content` (the exact bytes sent) if it was sent."""
    if result.outcome is not Outcome.SENT:
        return result
    return replace(result, content_sha256=hashlib.sha256(content).hexdigest())


@dataclass(frozen=True, slots=True)
class OutboundMessage:
    """One delivery as a channel receives it, whatever the channel.

    `document` is the stored alert as this recipient may see it (already redacted; never to
    be changed), and `document_key` names that version, (alert id, redacted), so a channel
    can serialize it once per alert and entitlement rather than once per delivery.
    `rendering` holds the per-delivery values (ack link, code and token). `notice`, when
    set, is a supervisor's notice that the alert went unacknowledged, sent instead of the
    alert. `secret` is the webhook contact's signing secret, when it has one.
    """

    delivery_id: str
    address: str
    document: dict[str, Any]
    document_key: tuple[str, bool]
    rendering: Rendering
    notice: dict[str, Any] | None = None
    secret: str | None = None

    def content(self) -> AlertContent:
        """What a rendered message shows: the alert itself, or the supervisor's notice."""
        content = AlertContent.from_document(self.document)
        return content if self.notice is None else notice_content(content, self.notice)


class DeliveryChannel(Protocol):
    """A channel: `host` names the destination a message goes to (one circuit breaker per
    host), `send` composes, sends and classifies it, with `content_sha256` set when sent."""

    name: str

    def host(self, message: OutboundMessage) -> str: ...

    async def send(self, message: OutboundMessage) -> SendResult: ...

    async def close(self) -> None: ...
