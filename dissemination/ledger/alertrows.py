"""The row of the `alerts` table an alert is stored as, and what storing it takes."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from core.alert import Alert
from dissemination.store.rows import AlertState

if TYPE_CHECKING:
    from dissemination.ledger.alerts import Payload


@dataclass(frozen=True, slots=True)
class ToStore:
    """An alert to store, the payload it came in, the state it is stored in, and when its
    message was received."""

    alert: Alert
    payload: Payload
    state: AlertState
    received_at: datetime


def alert_row_values(entry: ToStore, document: dict[str, Any], content_hash: str) -> dict[str, Any]:
    """The values of `entry`'s row, given its JSON document and that document's hash."""
    alert = entry.alert
    return {
        "id": alert.id,
        "sender": alert.sender,
        "identifier": alert.identifier,
        "sent": alert.sent_text,
        "sent_at": alert.sent,
        "kind": alert.kind.value,
        "status": alert.status.value,
        "msg_type": alert.msg_type.value,
        "scope": alert.scope,
        "tlp": alert.handling.tlp.value,
        "caveats": list(alert.handling.caveats),
        "handling_conflict": list(alert.handling.conflict) or None,
        "state": entry.state.value,
        "content_hash": content_hash,
        "expires_at": alert.expires,
        "headline": alert.headline,
        "source_format": alert.source_format,
        "document": document,
        "payload_sha256": entry.payload.sha256,
        "received_at": entry.received_at,
    }
