"""The clearance check made again immediately before each send (defence in depth): a
stakeholder whose clearance was lowered, or who was deactivated or removed, between planning
and sending is withheld at send time, with the reason, like a row withheld at planning.
A supervisor's notice still goes to a supervisor not cleared for the alert's marks, but then
without the alert's content: whether it may carry it is decided here at send time
(`notice_withheld`), against the supervisor as they are now, not as when it was planned.
Imminent-danger releases are made outside the rules on purpose. Either way the stakeholder
must still be active."""

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
    stakeholder as loaded at claim time (`row.stakeholder`, None if removed). A notice to an
    active supervisor is never refused: what it may carry is `notice_withheld`'s."""
    stakeholder = row.stakeholder
    if stakeholder is None or not stakeholder.active:
        return INACTIVE, "the stakeholder was removed or deactivated (checked again at send time)"
    if row.origin == RowOrigin.NOTICE:
        return None  # sent marks-only when the supervisor is not cleared (`notice_withheld`)
    if row.origin == RowOrigin.IMMINENT_DANGER:
        return None  # released outside the rules on purpose, with a recorded justification
    refused = withheld_reason(handling_of(row.document), stakeholder, Channel(row.channel))
    if refused is None:
        return None
    return refused.code.value, f"{refused.detail} (checked again at send time)"


def notice_withheld(row: ClaimedRow) -> str | None:
    """Why a supervisor's notice (`RowOrigin.NOTICE`) may not carry the alert's content, or
    None if it may: the alert's marks checked against the supervisor as loaded at claim time
    (`row.stakeholder`) on the row's channel, never the `cleared` stored with the row when the
    notice was planned. A removed or deactivated supervisor is told nothing of the content."""
    stakeholder = row.stakeholder
    if stakeholder is None or not stakeholder.active:
        return "the stakeholder was removed or deactivated"
    refused = withheld_reason(handling_of(row.document), stakeholder, Channel(row.channel))
    return None if refused is None else refused.detail


BASIS: dict[str, str] = {
    RowOrigin.MATCH: "matched by subscription",
    RowOrigin.AUDIENCE: "named in the audience of an ad-hoc send",
    RowOrigin.REFERENCED: "earlier recipient of the alert this one updates or cancels",
    RowOrigin.FALLBACK: "next channel of the subscription after a failed one",
    RowOrigin.ESCALATION: "escalation of an unacknowledged alert",
    RowOrigin.NOTICE: "supervisor told of an unacknowledged alert (content only if cleared)",
}


def release_justification(row: ClaimedRow) -> str:
    """Why the row was released: its basis, and the clearance that admitted the marks (for a
    notice to a supervisor not cleared for them, why the alert's content was left out); and
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
    if stakeholder is None:
        return basis
    if row.origin == RowOrigin.NOTICE and (withheld := notice_withheld(row)) is not None:
        return f"{basis}; alert content withheld: {withheld} (checked at send time)"
    clearance = stakeholder.clearance
    held = " ".join((f"TLP:{clearance.max_tlp.value}", *sorted(clearance.caveats)))
    justification = f"{basis}; need to know: clearance {held} admits {marking}"
    redacted = _redactions.for_row(row)
    if redacted is not None:
        justification += f"; personal data withheld: {', '.join(redacted.withheld)}"
    return justification


_redactions = Redactions()
