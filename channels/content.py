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

STATUS_NOTICES = {
    "Exercise": "EXERCISE: this message is part of an exercise, not a real alert.",
    "Test": "TEST: this message is a technical test; disregard it.",
    "System": "SYSTEM: this is a system message, not an alert.",
    "Draft": "DRAFT: this message is a draft, not an alert.",
}
"""What every message of an alert that is not Actual says first, so no recipient mistakes it."""


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
    particulars: tuple[tuple[str, str], ...] = ()
    withheld: tuple[str, ...] = ()
    content_withheld: bool = False
    """A supervisor's notice not cleared for the alert's marks: nothing of the alert but its
    id and marks (`notice_content`)."""

    @property
    def marking(self) -> str:
        return " ".join((f"TLP:{self.tlp}", *self.caveats))

    @property
    def status_label(self) -> str:
        """EXERCISE, TEST, SYSTEM or DRAFT for a message that is not an actual alert."""
        return self.status.upper() if self.status in STATUS_NOTICES else ""

    @property
    def status_notice(self) -> str:
        """The sentence that opens every message of an alert that is not Actual."""
        return STATUS_NOTICES.get(self.status, "")

    @property
    def withheld_note(self) -> str:
        """What a recipient without PII entitlement is told of the personal data removed."""
        if not self.withheld:
            return ""
        names = sorted({_label(path.rsplit(".", 1)[-1]).lower() for path in self.withheld})
        return (
            f"Personal data withheld ({', '.join(names)}): your entitlement does not include "
            "PII. Ask the issuing agency if you have a need to know."
        )

    @property
    def restricted(self) -> bool:
        """True when only marking, headline and link may go over SMS: a restricted marking,
        or a notice whose alert content is withheld."""
        return self.tlp in RESTRICTED_TLPS or self.content_withheld

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
            particulars=particulars(document.get("details") or {}),
            withheld=tuple((document.get("redaction") or {}).get("withheld") or ()),
        )


PARTICULARS = (
    "armedAndDangerous",
    "subjects",
    "vehicles",
    "property",
    "lastSeen",
    "location",
    "observedAt",
    "caseNumber",
    "issuingAgency",
    "reportingAgency",
    "contactInstructions",
)
"""The structured details of a local alert shown besides its description, in this order."""

_ITEM_LABELS = {"subjects": "Subject", "vehicles": "Vehicle", "property": "Property"}
_LABELS = {
    "armedAndDangerous": "Armed and dangerous",
    "dateOfBirth": "Date of birth",
    "identificationNumbers": "ID numbers",
    "plateState": "Plate state",
    "vin": "VIN",
    "lastSeen": "Last seen",
    "observedAt": "Observed",
    "ori": "ORI",
}


def _label(key: str) -> str:
    """A field name as words: "serialNumber" -> "Serial number"."""
    if key in _LABELS:
        return _LABELS[key]
    words = "".join(f" {c.lower()}" if c.isupper() else c for c in key).strip()
    return words[:1].upper() + words[1:]


def _describe(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, dict):
        return "; ".join(f"{_label(k)}: {_describe(v)}" for k, v in value.items())
    if isinstance(value, list):
        if all(isinstance(v, dict) and set(v) == {"type", "number"} for v in value):
            return ", ".join(f"{v['type']} {v['number']}" for v in value)
        return ", ".join(_describe(v) for v in value)
    return str(value)


def particulars(details: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    """(label, text) lines for the structured details of a local alert (subjects, vehicles,
    last seen, ...), each list item on its own line; nothing for other kinds."""
    lines: list[tuple[str, str]] = []
    for key in PARTICULARS:
        value = details.get(key)
        if value is None or value is False or value == {}:
            continue
        if key in _ITEM_LABELS and isinstance(value, list):
            for number, item in enumerate(value, 1):
                text = _describe(item)
                lines.append((f"{_ITEM_LABELS[key]} {number}", text or "(details withheld)"))
        else:
            lines.append((_label(key), _describe(value)))
    return tuple(lines)


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


WITHHELD = "Withheld"
"""What an uncleared supervisor's notice shows for the alert's severity, urgency and
certainty (the mail templates print those lines for every message)."""


def notice_content(content: AlertContent, notice: dict[str, Any]) -> AlertContent:
    """What a supervisor is told when someone has not acknowledged the alert: the alert itself
    when the supervisor is cleared for its marks (`notice["cleared"]`), otherwise only that
    the alert with this id and these marks is unacknowledged, by whom and for how long since
    delivery; nothing of its content, sender, time or status."""
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
    return AlertContent(
        alert_id=content.alert_id,
        kind="",
        sender="",
        sent="",
        status="",
        msg_type="",
        tlp=content.tlp,
        caveats=content.caveats,
        event="Unacknowledged alert",
        severity=WITHHELD,
        urgency=WITHHELD,
        certainty=WITHHELD,
        headline=f"{about} has not acknowledged alert {content.alert_id} {after} after delivery",
        description=(
            f"{about} has not acknowledged the alert {content.alert_id}, marked "
            f"{content.marking}, {after} after it was delivered. Its content is withheld: "
            "your clearance does not admit its marks."
        ),
        instruction="",
        sender_name="",
        areas=(),
        web="",
        content_withheld=True,
    )
