"""What the email tests share: the sender, recipient and domain, an alert document and a
delivery of it, and SMTP settings pointed at a sink."""

from __future__ import annotations

import dataclasses
from typing import Any

from channels.base import OutboundMessage
from channels.content import Rendering
from channels.email import SmtpConfig
from testbed.smtp import SmtpSink

FROM = "alerts@fusion.example.gov"

TO = "analyst@example.org"

DOMAIN = "dissemination.local"


UNUSED_RELAY = SmtpConfig(
    host="127.0.0.1",
    port=9,
    security="none",
    username=None,
    password=None,
    from_address=FROM,
    timeout_seconds=5,
    message_id_domain=DOMAIN,
)
"""For composing only: nothing is sent to it."""


def document(**info: Any) -> dict[str, Any]:
    """A stored alert document with the keys AlertContent.from_document reads."""
    first: dict[str, Any] = {
        "event": "Flash Flood Warning",
        "severity": "Severe",
        "urgency": "Immediate",
        "certainty": "Observed",
        "headline": "Flash flooding along Example Creek",
        "description": "Heavy rain is causing flash flooding.\nStay away from the creek.",
        "instruction": "Move to higher ground now.",
        "sender_name": "Example Fusion Center",
        "areas": [{"description": "Example County"}, {"description": "Sample Township"}],
        "web": "https://example.gov/alerts/1",
    }
    first.update(info)
    return {
        "id": "urn:example:alert:1",
        "kind": "cap",
        "sender": "alerts@fusion.example.gov",
        "sent_text": "2026-11-24T10:00:00-05:00",
        "status": "Actual",
        "msg_type": "Alert",
        "handling": {"tlp": "AMBER", "caveats": ["LES"]},
        "infos": [first],
    }


def message(
    to: str = TO, delivery_id: str = "row-1", rendering: Rendering | None = None, **info: Any
) -> OutboundMessage:
    """One delivery of the alert `document(**info)` to `to`."""
    alert = document(**info)
    return OutboundMessage(
        delivery_id=delivery_id,
        address=to,
        document=alert,
        document_key=(alert["id"], False),
        rendering=rendering or Rendering(delivery_id),
    )


def config(sink: SmtpSink, **overrides: Any) -> SmtpConfig:
    """SMTP settings for the sink, with `overrides`."""
    return dataclasses.replace(UNUSED_RELAY, host=sink.host, port=sink.port, **overrides)
