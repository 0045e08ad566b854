"""The clearance check made again immediately before each send (defence in depth): a
stakeholder whose clearance was lowered, or who was deactivated or removed, between planning
and sending is withheld at send time, with the reason, like a row withheld at planning.
Supervisor notices are exempt: they carry only what the supervisor's clearance admits; so are
imminent-danger releases, made outside the rules on purpose (the stakeholder must still be
active)."""

from __future__ import annotations

from typing import Any

from core.alert import Handling, Tlp
from dissemination.controls.redaction import Redactions
from dissemination.controls.specialrelease import justification_text
from dissemination.store.rows import ClaimedRow, RowOrigin
from subscriptions.clearance import withheld_reason
from subscriptions.model import Channel

INACTIVE = "stakeholder_inactive"
RESENT_NOTE = "resent after a worker stopped mid-send: may be a duplicate"


def handling_of(document: dict[str, Any]) -> Handling:
    """The marks of a stored alert document; an unmarked one counts as AMBER+STRICT."""
    marks = document.get("handling") or {}
    return Handling(
        Tlp.parse(str(marks.get("tlp", "AMBER+STRICT"))), tuple(marks.get("caveats") or ())
    )


def send_time_refusal(row: ClaimedRow) -> tuple[str, str] | None:
    """(reason code, detail) if the row may no longer be sent, else None. The row carries its
    stakeholder as loaded at claim time (`row.stakeholder`, None if removed)."""
    if row.origin == RowOrigin.NOTICE:
        return None
    stakeholder = row.stakeholder
    if stakeholder is None or not stakeholder.active:
        return INACTIVE, "the stakeholder was removed or deactivated (checked again at send time)"
    if row.origin == RowOrigin.IMMINENT_DANGER:
        return None  # released outside the rules on purpose, with a recorded justification
    refused = withheld_reason(handling_of(row.document), stakeholder, Channel(row.channel))
    if refused is None:
        return None
    return refused.code.value, f"{refused.detail} (checked again at send time)"


BASIS: dict[str, str] = {
    RowOrigin.MATCH: "matched by subscription",
    RowOrigin.AUDIENCE: "named in the audience of an ad-hoc send",
    RowOrigin.REFERENCED: "earlier recipient of the alert this one updates or cancels",
    RowOrigin.FALLBACK: "next channel of the subscription after a failed one",
    RowOrigin.ESCALATION: "escalation of an unacknowledged alert",
    RowOrigin.NOTICE: "supervisor told of an unacknowledged alert (content only if cleared)",
}


def release_justification(row: ClaimedRow) -> str:
    """Why the row was released: its basis, and the clearance that admitted the marks; and
    that it may be a duplicate, when it was resent after a crash."""
    justification = _basis_and_clearance(row)
    return f"{justification}; {RESENT_NOTE}" if row.resent else justification


def _basis_and_clearance(row: ClaimedRow) -> str:
    if row.origin == RowOrigin.IMMINENT_DANGER:
        return justification_text(row)
    basis = BASIS.get(row.origin) or row.origin.value
    handling = handling_of(row.document)
    marking = " ".join((f"TLP:{handling.tlp.value}", *handling.caveats))
    stakeholder = row.stakeholder
    if stakeholder is None or row.origin == RowOrigin.NOTICE:
        return basis
    clearance = stakeholder.clearance
    held = " ".join((f"TLP:{clearance.max_tlp.value}", *sorted(clearance.caveats)))
    justification = f"{basis}; need to know: clearance {held} admits {marking}"
    redacted = _redactions.for_row(row)
    if redacted is not None:
        justification += f"; personal data withheld: {', '.join(redacted.withheld)}"
    return justification


_redactions = Redactions()
