"""The one seam every delivery channel implements: send one rendered message and say whether
it went, whether trying again may help, or whether it never will.

    SENT       the provider accepted it (provider_id says how to find it there)
    TRANSIENT  worth retrying (timeouts, 429, 5xx, SMTP 4xx); retry_after if the peer said
    PERMANENT  retrying cannot help (bad address, 4xx, SMTP 5xx); fall back to another channel
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol


class Outcome(StrEnum):
    SENT = "sent"
    TRANSIENT = "transient"
    PERMANENT = "permanent"


@dataclass(frozen=True, slots=True)
class SendResult:
    """What one send attempt came to; `content_sha256` is the hash of the exact content sent,
    for the dissemination record."""

    outcome: Outcome
    detail: str
    provider_id: str | None = None
    retry_after_seconds: float | None = None
    disable_address: bool = False
    content_sha256: str | None = None


class DeliveryChannel(Protocol):
    """A channel: one `send` per rendered message. `Message` is the channel's own type."""

    name: str

    async def close(self) -> None: ...
