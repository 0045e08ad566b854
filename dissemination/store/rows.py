"""The vocabulary of ledger rows: the states an alert and a delivery row can be in, a delivery
row as planned, and its stable id."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from typing import Any

DELIVERY_ID_NAMESPACE = uuid.UUID("5b0f7c2e-3a7d-5e61-9c4b-0d2e8f1a6b73")


class DeliveryState(StrEnum):
    """A ledger row's state; it only moves forward (see `dissemination.delivery.worker`). `held`
    rows wait for a second administrator's approval (`dissemination.controls.approval`)."""

    PENDING = "pending"
    HELD = "held"
    SENDING = "sending"
    SENT = "sent"
    DELIVERED = "delivered"
    FAILED = "failed"
    WITHHELD = "withheld"
    SUPPRESSED = "suppressed"


OWING_STATES = frozenset({DeliveryState.PENDING.value, DeliveryState.HELD.value})
"""States of a row that will be sent (held ones once approved): it owes an acknowledgment."""


def delivery_id(alert_id: str, stakeholder_id: str, channel: str, address: str) -> str:
    """Stable row id: re-planning the same alert yields the same ids, so nothing doubles."""
    return str(
        uuid.uuid5(DELIVERY_ID_NAMESPACE, f"{alert_id}|{stakeholder_id}|{channel}|{address}")
    )


@dataclass(frozen=True, slots=True)
class PlannedRow:
    """One delivery row as planned, before it is written."""

    stakeholder_id: str
    subscription_id: str | None
    contact_id: str | None
    channel: str
    address: str
    state: DeliveryState
    reason: str | None = None
    detail: str | None = None
    fallback_channels: tuple[str, ...] = ()
    ack_required: bool = False
    subscriptions: tuple[str, ...] = field(default=())
    origin: str = "match"
    not_before: datetime | None = None

    def key(self) -> tuple[str, str, str]:
        return (self.stakeholder_id, self.channel, self.address)

    def values(self, alert_id: str) -> dict[str, Any]:
        """Column values for the deliveries table (timestamps added by the writer)."""
        return {
            "id": delivery_id(alert_id, self.stakeholder_id, self.channel, self.address),
            "alert_id": alert_id,
            "stakeholder_id": self.stakeholder_id,
            "subscription_id": self.subscription_id,
            "contact_id": self.contact_id,
            "channel": self.channel,
            "address": self.address,
            "state": self.state.value,
            "reason": self.reason,
            "detail": self.detail,
            "attempts": 0,
            "fallback_channels": list(self.fallback_channels),
            "ack_required": self.ack_required,
            "subscriptions": list(self.subscriptions),
            "origin": self.origin,
            "resent": False,
            "not_before": self.not_before,
        }


class AlertState(StrEnum):
    """Where an alert stands; `received` alerts go on to matching and delivery."""

    RECEIVED = "received"
    PLANNED = "planned"
    EXPIRED = "expired"
    DRAFT = "draft"


def held(row: PlannedRow) -> PlannedRow:
    """A pending row of an alert held for approval: written `held`, sent once approved."""
    if row.state is not DeliveryState.PENDING:
        return row
    return replace(row, state=DeliveryState.HELD)
