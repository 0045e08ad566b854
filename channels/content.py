"""What a recipient is shown of an alert, read from the stored normalized document
(`Alert.to_json`): one flat, typed view that every channel's templates render from.

The marking always travels with the content: `marking` is the TLP label ("TLP:AMBER+STRICT")
followed by any caveats ("LES", "PII"), ready to print in a subject line or an SMS.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

RESTRICTED_TLPS = frozenset({"AMBER", "AMBER+STRICT", "RED"})
"""At these markings short, unencrypted channels (SMS) carry only marking, headline and link."""


@dataclass(frozen=True, slots=True)
class AlertContent:
    """The parts of an alert that messages are made of."""

    alert_id: str
    kind: str
    sender: str
    sent: str
    status: str
    msg_type: str
    tlp: str
    caveats: tuple[str, ...]
    event: str
    severity: str
    urgency: str
    certainty: str
    headline: str
    description: str
    instruction: str
    sender_name: str
    areas: tuple[str, ...]
    web: str

    @property
    def marking(self) -> str:
        return " ".join((f"TLP:{self.tlp}", *self.caveats))

    @property
    def restricted(self) -> bool:
        """True when only marking, headline and link may go over SMS."""
        return self.tlp in RESTRICTED_TLPS

    @classmethod
    def from_document(cls, document: dict[str, Any]) -> AlertContent:
        infos = document.get("infos") or [{}]
        info = infos[0]
        handling = document.get("handling") or {}
        event = str(info.get("event") or document.get("kind") or "Alert")
        return cls(
            alert_id=str(document.get("id", "")),
            kind=str(document.get("kind", "")),
            sender=str(document.get("sender", "")),
            sent=str(document.get("sent_text") or document.get("sent") or ""),
            status=str(document.get("status", "")),
            msg_type=str(document.get("msg_type", "")),
            tlp=str(handling.get("tlp", "AMBER+STRICT")),
            caveats=tuple(str(c) for c in handling.get("caveats") or ()),
            event=event,
            severity=str(info.get("severity") or "Unknown"),
            urgency=str(info.get("urgency") or "Unknown"),
            certainty=str(info.get("certainty") or "Unknown"),
            headline=str(info.get("headline") or event),
            description=str(info.get("description") or ""),
            instruction=str(info.get("instruction") or ""),
            sender_name=str(info.get("sender_name") or document.get("sender") or ""),
            areas=tuple(
                str(area.get("description", "")) for i in infos for area in i.get("areas") or ()
            ),
            web=str(info.get("web") or ""),
        )


@dataclass(frozen=True, slots=True)
class Rendering:
    """Per-delivery values that templates need besides the alert: the ledger row id (stable
    across retries), and how the recipient acknowledges (link, SMS reply code, token for
    webhook receivers) or reads the alert."""

    delivery_id: str
    ack_url: str | None = None
    ack_code: str | None = None
    portal_url: str | None = None
    ack_token: str | None = None


def _duration(seconds: int) -> str:
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size and seconds % size == 0:
            count = seconds // size
            return f"{count} {unit}{'s' if count != 1 else ''}"
    return f"{seconds} seconds"


def notice_content(content: AlertContent, notice: dict[str, Any]) -> AlertContent:
    """What a supervisor is told when someone has not acknowledged the alert: the alert itself
    when the supervisor is cleared for its marks, otherwise only that an alert with those
    marks is unacknowledged."""
    about = str(notice.get("about") or "A stakeholder")
    after = _duration(int(notice.get("afterSeconds") or 0))
    if notice.get("cleared"):
        return replace(
            content,
            headline=f"Not acknowledged: {content.headline}",
            description=(
                f"{about} has not acknowledged this alert {after} after it was delivered."
                + (f"\n\n{content.description}" if content.description else "")
            ),
        )
    return replace(
        content,
        event="Unacknowledged alert",
        headline=f"Not acknowledged: an alert marked {content.marking}",
        description=(
            f"{about} has not acknowledged an alert marked {content.marking} {after} after it "
            "was delivered. Its content is withheld: your clearance does not admit its marks."
        ),
        instruction="",
        areas=(),
        web="",
    )
