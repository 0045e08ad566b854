"""The public webhook body, version 1 (`schemas/webhook-v1.json`): what a receiver gets, made
from the stored alert document as the recipient may see it, never the document itself.

Two body types, told apart by `type`; both carry `"version": "1"`:

    alert           {version, type, deliveryId, ack?: {token, url}, alert}
    unacknowledged  {version, type, deliveryId, notAcknowledgedBy, afterSeconds,
                     contentWithheld, alert}  (a supervisor's notice; `alert` is only
                     {id, handling} when the supervisor is not cleared for its marks)

`public_alert` is the one mapping from internal names to public ones (camelCase, no storage
details such as `sent_text` or `tlp_defaulted`). A value the alert does not have is left out,
never sent as null; a field withheld from the recipient (redaction) is absent, and
`alert.redaction.withheld` names it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from channels.base import OutboundMessage

VERSION = "1"
SCHEMA = "webhook-v1"
"""The name of this version's JSON Schema in the `schemas` package."""

_INFO_TEXT = (
    ("headline", "headline"),
    ("description", "description"),
    ("instruction", "instruction"),
    ("sender_name", "senderName"),
    ("effective", "effective"),
    ("onset", "onset"),
    ("expires", "expires"),
    ("web", "web"),
    ("contact", "contact"),
)
"""Optional info values: (internal name, public name), sent only when the alert has them."""


def dumps(value: Any) -> bytes:
    """Compact JSON, as every body is sent."""
    return json.dumps(value, separators=(",", ":")).encode()


def _named(values: Sequence[Mapping[str, Any]] | None) -> list[dict[str, str]]:
    return [
        {"valueName": str(v.get("name", "")), "value": str(v.get("value", ""))}
        for v in values or ()
    ]


def _area(area: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "areaDesc": str(area.get("description") or ""),
        "polygons": [[[p[0], p[1]] for p in ring] for ring in area.get("polygons") or ()],
        "circles": [
            {
                "latitude": c["latitude"],
                "longitude": c["longitude"],
                "radiusKm": c["radius_km"],
            }
            for c in area.get("circles") or ()
        ],
        "geocodes": _named(area.get("geocodes")),
    }


def _info(info: Mapping[str, Any]) -> dict[str, Any]:
    public: dict[str, Any] = {
        "language": str(info.get("language") or "en-US"),
        "categories": list(info.get("categories") or ()),
        "event": str(info.get("event") or ""),
        "urgency": str(info.get("urgency") or "Unknown"),
        "severity": str(info.get("severity") or "Unknown"),
        "certainty": str(info.get("certainty") or "Unknown"),
    }
    for internal, name in _INFO_TEXT:
        value = info.get(internal)
        if value is not None:
            public[name] = value
    public["responseTypes"] = list(info.get("response_types") or ())
    public["eventCodes"] = _named(info.get("event_codes"))
    public["parameters"] = _named(info.get("parameters"))
    public["areas"] = [_area(area) for area in info.get("areas") or ()]
    return public


def _expires(infos: Sequence[Mapping[str, Any]]) -> str | None:
    """The latest expiry over the info blocks; None if any block never expires."""
    values = [info.get("expires") for info in infos]
    if not values or any(not v for v in values):
        return None
    return max((str(v) for v in values), key=_instant)


def _instant(text: str) -> datetime:
    moment = datetime.fromisoformat(text)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def public_handling(document: Mapping[str, Any]) -> dict[str, Any]:
    """The alert's handling marks as `{tlp, caveats}`."""
    handling = document.get("handling") or {}
    return {
        "tlp": str(handling.get("tlp") or "AMBER+STRICT"),
        "caveats": [str(c) for c in handling.get("caveats") or ()],
    }


def public_alert(document: Mapping[str, Any]) -> dict[str, Any]:
    """The `alert` of a v1 body from a stored alert document (`Alert.to_json()`, redacted for
    the recipient where it must be)."""
    infos = document.get("infos") or ()
    alert: dict[str, Any] = {
        "id": str(document.get("id", "")),
        "kind": str(document.get("kind") or "cap"),
        "identifier": str(document.get("identifier", "")),
        "sender": str(document.get("sender", "")),
        "sent": str(document.get("sent_text") or document.get("sent") or ""),
        "status": str(document.get("status", "")),
        "msgType": str(document.get("msg_type", "")),
        "scope": str(document.get("scope", "")),
        "references": [
            {"sender": r["sender"], "identifier": r["identifier"], "sent": r["sent"]}
            for r in document.get("references") or ()
        ],
        "handling": public_handling(document),
    }
    if expires := _expires(infos):
        alert["expires"] = expires
    alert["infos"] = [_info(info) for info in infos]
    if details := document.get("details"):
        alert["details"] = details
    if redaction := document.get("redaction"):
        alert["redaction"] = {
            "reason": str(redaction.get("reason", "")),
            "withheld": [str(path) for path in redaction.get("withheld") or ()],
        }
    return alert


_ALERT_HEAD = b'{"version":"' + VERSION.encode() + b'","type":"alert","deliveryId":'


def alert_head(message: OutboundMessage) -> bytes:
    """An alert body up to its `alert`, unclosed: version, type, delivery id and, when the
    alert must be acknowledged, the ack token and the link (POST the token to /api/v1/acks).
    Bytes, because it is made for every delivery while the alert is made once."""
    head = _ALERT_HEAD + dumps(message.delivery_id)
    rendering = message.rendering
    if rendering.ack_token:
        head += b',"ack":' + dumps({"token": rendering.ack_token, "url": rendering.ack_url})
    return head


def with_alert(head: bytes, alert_json: bytes) -> bytes:
    """The whole body: `head` (from `alert_head`) closed with the alert's JSON."""
    return head + b',"alert":' + alert_json + b"}"


def alert_body(message: OutboundMessage) -> bytes:
    """The body of an alert delivery. (`WebhookChannel.body` makes the same bytes, with the
    alert converted and serialized once per alert and entitlement.)"""
    return with_alert(alert_head(message), dumps(public_alert(message.document)))


def notice_body(message: OutboundMessage) -> bytes:
    """A supervisor's notice that someone has not acknowledged the alert: the alert as the
    supervisor may see it only if cleared for its marks, else only its id and marks."""
    notice = message.notice or {}
    document = message.document
    cleared = bool(notice.get("cleared"))
    alert = (
        public_alert(document)
        if cleared
        else {"id": str(document.get("id", "")), "handling": public_handling(document)}
    )
    body = {
        "version": VERSION,
        "type": "unacknowledged",
        "deliveryId": message.delivery_id,
        "notAcknowledgedBy": str(notice.get("about") or ""),
        "afterSeconds": int(notice.get("afterSeconds") or 0),
        "contentWithheld": not cleared,
        "alert": alert,
    }
    return dumps(body)
