"""Claimed delivery rows for unit tests of what is made of one (messages, redactions)."""

from __future__ import annotations

from typing import Any

from dissemination.store.rows import ClaimedRow, RowOrigin


def claimed_row(**fields: Any) -> ClaimedRow:
    """A claimed row with these fields, and a plain webhook row's values for the rest."""
    defaults: dict[str, Any] = {
        "id": "row-1",
        "alert_id": "a-1",
        "stakeholder_id": "s-1",
        "subscription_id": None,
        "contact_id": None,
        "channel": "webhook",
        "address": "https://hooks.example.org/in",
        "attempts": 1,
        "origin": RowOrigin.MATCH,
        "detail": None,
        "fallback_channels": (),
        "ack_required": False,
        "subscriptions": (),
        "resent": False,
        "document": {},
        "stakeholder": None,
    }
    return ClaimedRow(**(defaults | fields))
