"""What the webhook tests share: a stored alert document as the delivery worker hands it to
the channel, and a signature check written from the Standard Webhooks specification."""

from __future__ import annotations

import base64
import hashlib
import hmac

from core.alert import Tlp
from dissemination.intake.normalize import HandlingDefaults, alert_from_cap
from testbed.alerts import cap_json

ALERT = alert_from_cap(
    cap_json("HOOK-1", handling={"tlp": "GREEN"}),
    "cap-json",
    HandlingDefaults(Tlp.AMBER_STRICT, Tlp.CLEAR),
).to_json()
"""A stored alert document, as the delivery worker hands it to the channel."""


def independent_signature(secret: str, headers: dict[str, str], body: bytes) -> str:
    """Standard Webhooks verification written from the specification, not from our code."""
    key = base64.b64decode(secret[len("whsec_") :])
    content = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, content, hashlib.sha256).digest()).decode()
