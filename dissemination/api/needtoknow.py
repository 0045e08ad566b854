"""Need-to-know: what a caller may read of an alert through the API, decided here for every
read endpoint.

A staff account reads an alert only if its clearance admits the alert's marks, by the rule
that decides whether a stakeholder may receive it (`subscriptions.clearance`, checks 1-3: a
named person reading through the API has no recipient form or channel to check). A shared
token has no account and so no clearance: it reads everything, as before.

Above its clearance an account learns that the alert exists with its marks and counts, never
its content or recipients:

- an alert in a list, or asked for by id, is the one `marks_and_counts` view, whose
  `withheld` field names what was left out and why;
- a resource that is nothing but the alert's content or recipients (its deliveries and their
  CSV, its dissemination record, its progress stream, a dry run's plan, a send) answers
  403 `above_clearance`;
- a listing of such things (the record over a time range, approvals, releases, sends, the
  audit log, the stream of every alert) leaves out or redacts what is above the clearance
  and says how much in its own `withheld` field.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from core.alert import Handling
from dissemination.api.errors import ApiError
from dissemination.api.principal import Principal
from dissemination.ledger.progress import ProgressStore, handling_of
from subscriptions.clearance import WithheldCode, WithheldReason, entitlement_reason
from subscriptions.model import Clearance

ABOVE_CLEARANCE = "above_clearance"
WITHHELD_FIELDS = ("sender", "identifier", "sent", "headline", "expiresAt", "content", "recipients")
"""What the marks-and-counts view leaves out of an alert: its CAP keys, headline and expiry,
its content (the report's detail) and its recipients (deliveries, who has not acknowledged)."""
UNKNOWN_MARKS = WithheldReason(
    WithheldCode.TLP_ABOVE_CLEARANCE, "the alert's marks are not known yet (not released)"
)
VIEW_FIELDS = ("id", "kind", "status", "msgType", "handling", "state", "receivedAt")


def withheld(reason: WithheldReason, fields: Iterable[str] = WITHHELD_FIELDS) -> dict[str, Any]:
    """The `withheld` field: what was left out, and the handling check's reason."""
    return {"fields": list(fields), "reason": reason.code.value, "detail": reason.detail}


def marks_and_counts(
    summary: Mapping[str, Any], counts: Mapping[str, int], reason: WithheldReason
) -> dict[str, Any]:
    """The one view of an alert above the reader's clearance: that it exists, its marks and
    its counts by state."""
    view = {name: summary[name] for name in VIEW_FIELDS}
    return view | {"counts": dict(counts), "withheld": withheld(reason)}


def above_clearance(what: str, reason: WithheldReason) -> ApiError:
    return ApiError(403, ABOVE_CLEARANCE, f"{what} is above your clearance ({reason.detail})")


@dataclass(frozen=True, slots=True)
class NeedToKnow:
    """The reader's bound: its clearance, or None for a shared token (unbounded)."""

    clearance: Clearance | None

    @classmethod
    def of(cls, principal: Principal) -> NeedToKnow:
        return cls(principal.clearance)

    @property
    def bounded(self) -> bool:
        return self.clearance is not None

    def refusal(self, handling: Handling) -> WithheldReason | None:
        """Why the reader may not read an alert so marked, or None if it may."""
        if self.clearance is None:
            return None
        return entitlement_reason(handling, self.clearance)

    def refusal_of(self, marks: Mapping[str, Any]) -> WithheldReason | None:
        """The same, for marks as the API shows them ({"tlp", "caveats"})."""
        if self.clearance is None:
            return None
        return self.refusal(handling_of(marks["tlp"], marks.get("caveats")))

    async def refusals(
        self, store: ProgressStore, alert_ids: Iterable[str]
    ) -> dict[str, WithheldReason]:
        """Of these alerts, those the reader may not read, with why (an id naming no alert
        is no alert to withhold)."""
        if self.clearance is None:
            return {}
        found = await store.handlings(alert_ids)
        refused = {alert_id: self.refusal(handling) for alert_id, handling in found.items()}
        return {alert_id: reason for alert_id, reason in refused.items() if reason is not None}

    async def require(self, store: ProgressStore, alert_id: str, what: str) -> None:
        """ApiError 403 `above_clearance` unless the reader may read the alert; an id naming
        no alert passes (what is asked of it answers 404)."""
        reason = (await self.refusals(store, [alert_id])).get(alert_id)
        if reason is not None:
            raise above_clearance(what, reason)

    async def readable(self, store: ProgressStore, alert_ids: list[str]) -> list[str]:
        """Those of the alerts the reader may read, in order; for a bounded reader an id whose
        marks cannot be found is left out too (fail closed)."""
        if self.clearance is None:
            return alert_ids
        found = await store.handlings(alert_ids)
        return [
            alert_id
            for alert_id in alert_ids
            if alert_id in found and self.refusal(found[alert_id]) is None
        ]


def listing_withheld(count: int) -> dict[str, Any] | None:
    """A listing's `withheld` field: how many of its items were left out or redacted."""
    return {"items": count, "reason": ABOVE_CLEARANCE} if count else None


ALERT_ENTITIES = ("alert", "ack")  # audit entities whose entity id is an alert's id
AUDIT_CONTENT = ("before", "after", "reason")


def audited_alert(entry: Mapping[str, Any]) -> str | None:
    """The alert an audit entry is about, if any: an alert or acknowledgment entry's entity,
    or the `alertId` its before or after names (a send, a dry run)."""
    if entry["entity"] in ALERT_ENTITIES and entry["entityId"]:
        return str(entry["entityId"])
    for side in (entry["after"], entry["before"]):
        if isinstance(side, Mapping) and isinstance(side.get("alertId"), str):
            return str(side["alertId"])
    return None


def _audited_marks(entry: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """Marks an entry carries itself (a dry run's: its alert is never stored)."""
    for side in (entry["after"], entry["before"]):
        if isinstance(side, Mapping) and isinstance(side.get("handling"), Mapping):
            marks: Mapping[str, Any] = side["handling"]
            if isinstance(marks.get("tlp"), str):
                return marks
    return None


async def redact_audit(
    reader: NeedToKnow, store: ProgressStore, entries: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Entries about an alert the reader may not read lose their before, after and reason,
    and say so in `withheld`. An entry about an alert whose marks cannot be found (a send
    not yet released) is withheld from a bounded reader (fail closed)."""
    if not reader.bounded:
        return entries
    about = {entry["id"]: audited_alert(entry) for entry in entries}
    found = await store.handlings(a for a in about.values() if a is not None)
    shown = []
    for entry in entries:
        alert_id = about[entry["id"]]
        if alert_id is not None:
            carried = _audited_marks(entry)
            if carried is not None:
                reason = reader.refusal_of(carried)
            elif alert_id in found:
                reason = reader.refusal(found[alert_id])
            else:
                reason = UNKNOWN_MARKS
            if reason is not None:
                entry = entry | dict.fromkeys(AUDIT_CONTENT)
                entry["withheld"] = withheld(reason, AUDIT_CONTENT)
        shown.append(entry)
    return shown
