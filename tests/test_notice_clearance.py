"""A supervisor's notice of an unacknowledged alert, as it is sent: the supervisor is checked
again immediately before the send (removed or deactivated: withheld), and whether the notice
carries the alert is decided against the supervisor as they are then, not as when the notice
was planned. A notice that may not carry the alert shows, on every channel, only its marks,
that it is unacknowledged, by whom and for how long since delivery, and the alert's id; and
the dissemination record says which of the two was sent."""

from __future__ import annotations

import json
from dataclasses import replace
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from typing import Any

import pytest

from channels.email import mail_bytes
from channels.sms import SmsChannel
from channels.webhook import WebhookChannel
from core.alert import Tlp
from dissemination.controls.sendcheck import INACTIVE, release_justification, send_time_refusal
from dissemination.delivery.messages import MessageBuilder
from dissemination.store.rows import ClaimedRow, RowOrigin
from subscriptions.model import Clearance, Jurisdiction, Sector, Stakeholder, StakeholderKind
from tests.claimedrows import claimed_row
from tests.emailrig import document

SECRET = "Informant reports suspect at 12 Elm St"
SENDER_NAME = "Anytown PD Narcotics Unit"
ADDRESSES = {
    "email": "lead@example.org",
    "sms": "+12025550123",
    "webhook": "https://hooks.example.org/lead",
}
CLEARED = Clearance(Tlp.AMBER, frozenset({"LES"}), law_enforcement=True)
LOWERED = {
    "tlp_lowered": Clearance(Tlp.GREEN, frozenset({"LES"}), law_enforcement=True),
    "caveat_dropped": Clearance(Tlp.AMBER, frozenset(), law_enforcement=True),
}
LEAKS = (
    SECRET,
    SENDER_NAME,
    "alerts@fusion.example.gov",  # the sender
    "Flash",  # event and headline
    "Severe",
    "Immediate",
    "Observed",
    "2026-11-24",  # sent
    "Example County",
    "higher ground",  # instruction
    "example.gov/alerts",  # the alert's own link
    "EXERCISE",
)
"""What an uncleared supervisor's notice must not show of the alert below."""


def alert(tlp: str = "AMBER", **top: Any) -> dict[str, Any]:
    """An LES alert at `tlp` whose description and sender name are sensitive."""
    doc = document(description=SECRET, sender_name=SENDER_NAME)
    return doc | {"handling": {"tlp": tlp, "caveats": ["LES"]}} | top


def supervisor(clearance: Clearance = CLEARED, **changes: Any) -> Stakeholder:
    holder = Stakeholder(
        "sup-1",
        "Shift lead",
        "Fusion center",
        Sector.LAW_ENFORCEMENT,
        StakeholderKind.INDIVIDUAL,
        Jurisdiction(),
        clearance,
    )
    return replace(holder, **changes)


def notice_row(
    holder: Stakeholder | None,
    *,
    cleared_when_planned: bool,
    channel: str = "email",
    doc: dict[str, Any] | None = None,
) -> ClaimedRow:
    """A claimed notice row to `holder` (as loaded at claim time), with the `cleared` the
    escalation engine stored when it planned the row."""
    doc = doc or alert()
    detail = {
        "notice": "unacknowledged",
        "about": "Desk 4",
        "afterSeconds": 600,
        "cleared": cleared_when_planned,
    }
    return claimed_row(
        id="row-n1",
        alert_id=doc["id"],
        stakeholder_id="sup-1",
        channel=channel,
        address=ADDRESSES[channel],
        origin=RowOrigin.NOTICE,
        detail=json.dumps(detail),
        document=doc,
        stakeholder=holder,
        secret="whsec_" + "A" * 44,
    )


def mail_of(row: ClaimedRow) -> EmailMessage:
    raw = mail_bytes(MessageBuilder().build(row), "alerts@example.org", "example.org")
    mail = BytesParser(policy=policy.default).parsebytes(raw)
    assert isinstance(mail, EmailMessage)
    return mail


def shown(row: ClaimedRow) -> str:
    """Everything the recipient of `row` is shown: a mail's subject and both bodies, the SMS
    text, or the webhook body."""
    message = MessageBuilder().build(row)
    if row.channel == "webhook":
        return WebhookChannel(()).body(message).decode()
    if row.channel == "sms":
        return SmsChannel.compose(message)
    mail = mail_of(row)
    bodies = [part.get_content() for part in mail.iter_parts()]
    return "\n".join([str(mail["Subject"]), *bodies])


@pytest.mark.parametrize("holder", ["deactivated", "removed"])
def test_a_notice_to_a_supervisor_deactivated_or_removed_since_planning_is_withheld(
    holder: str,
) -> None:
    now = supervisor(active=False) if holder == "deactivated" else None
    refusal = send_time_refusal(notice_row(now, cleared_when_planned=True))
    assert refusal is not None
    code, detail = refusal
    assert code == INACTIVE
    assert "send time" in detail


@pytest.mark.parametrize("channel", ["email", "sms", "webhook"])
@pytest.mark.parametrize("lowered", sorted(LOWERED))
def test_a_notice_planned_cleared_carries_only_the_marks_once_the_clearance_is_lowered(
    channel: str, lowered: str
) -> None:
    row = notice_row(supervisor(LOWERED[lowered]), cleared_when_planned=True, channel=channel)
    assert send_time_refusal(row) is None  # still told, but not shown the alert
    message = MessageBuilder().build(row)
    assert message.notice is not None
    assert message.notice["cleared"] is False
    assert message.document == {"id": row.alert_id, "handling": row.document["handling"]}
    text = shown(row)
    for leaked in (SECRET, SENDER_NAME, "Flash"):
        assert leaked not in text, leaked
    assert "TLP:AMBER" in text or '"tlp":"AMBER"' in text
    if channel == "webhook":
        body = json.loads(text)
        assert body["contentWithheld"] is True
        assert body["alert"] == {
            "id": row.alert_id,
            "handling": {"tlp": "AMBER", "caveats": ["LES"]},
        }


def test_a_notice_carries_the_alert_when_the_supervisor_is_cleared_at_send_time() -> None:
    """The decision is the send's either way: a supervisor cleared since planning is shown
    the alert (as their PII entitlement allows)."""
    row = notice_row(supervisor(), cleared_when_planned=False, channel="webhook")
    message = MessageBuilder().build(row)
    assert message.notice is not None
    assert message.notice["cleared"] is True
    body = json.loads(shown(row))
    assert body["contentWithheld"] is False
    assert SECRET in json.dumps(body["alert"])


@pytest.mark.parametrize("channel", ["email", "sms"])
@pytest.mark.parametrize("tlp", ["AMBER", "GREEN"])
def test_an_uncleared_notice_shows_only_the_marks_who_since_when_and_the_alert_id(
    channel: str, tlp: str
) -> None:
    """At AMBER the SMS of an alert is restricted anyway; at GREEN it would carry severity,
    event, areas and instruction, so both are checked. The alert is an exercise: even that
    is not told."""
    doc = alert(tlp, status="Exercise")
    row = notice_row(
        supervisor(Clearance(Tlp.GREEN)), cleared_when_planned=False, channel=channel, doc=doc
    )
    text = shown(row)
    for leaked in LEAKS:
        assert leaked not in text, leaked
    for told in (f"TLP:{tlp} LES", "Desk 4", "10 minutes", doc["id"]):
        assert told in text, told


def test_an_uncleared_notices_subject_shows_no_severity_or_headline() -> None:
    row = notice_row(supervisor(Clearance(Tlp.GREEN)), cleared_when_planned=True)
    subject = str(mail_of(row)["Subject"])
    assert subject.startswith("[TLP:AMBER LES] ")
    assert "Unacknowledged alert" in subject
    assert "Severe" not in subject
    assert "Flash" not in subject


def test_the_record_says_whether_a_notice_carried_the_alert() -> None:
    uncleared = notice_row(supervisor(Clearance(Tlp.GREEN)), cleared_when_planned=True)
    withheld = release_justification(uncleared)
    assert "alert content withheld" in withheld
    assert "TLP:AMBER is above the clearance TLP:GREEN" in withheld
    cleared = release_justification(notice_row(supervisor(), cleared_when_planned=False))
    assert "need to know: clearance TLP:AMBER LES admits TLP:AMBER LES" in cleared
    assert "withheld" not in cleared
