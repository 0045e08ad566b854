"""PII redaction: a recipient without PII entitlement gets every alert without the fields the
schemas mark x-pii, on every channel, with a note that personal data was withheld; an
entitled recipient gets them all.

Golden files under tests/fixtures/golden/ hold the exact email (text and HTML), SMS and
webhook alert each entitlement level gets; UPDATE_GOLDEN=1 rewrites them after a deliberate
change, to be read line by line before committing.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest

from channels.content import AlertContent, Rendering
from channels.email import EmailChannel, SmtpConfig
from channels.sms import SmsChannel
from channels.webhook import WebhookChannel
from core.alert import Tlp, alert_id_for
from dissemination.controls import record
from dissemination.controls.redaction import Redactions, pii_entitled, redact
from dissemination.delivery.messages import MessageBuilder
from dissemination.intake.normalize import HandlingDefaults, alert_from_local
from subscriptions.model import Clearance, Jurisdiction, Sector, Stakeholder, StakeholderKind
from testbed.webhooks import assert_contract
from tests.alerts import fixture_document
from tests.brokerutil import publish
from tests.claimedrows import claimed_row
from tests.deliveryrig import (  # noqa: F401 - fixtures
    Sinks,
    StartService,
    custom_service_fixture,
    settled,
    sinks_fixture,
)
from tests.people import enrol
from tests.samples import FIXTURES_DIR

GOLDEN_DIR = FIXTURES_DIR / "golden"
DEFAULTS = HandlingDefaults(Tlp.AMBER_STRICT, Tlp.CLEAR)
BOLO_PII = {  # every x-pii value of bolo_full.json, written out
    "Richard P. Roe",
    "Rick Roe",
    "1992-11-04",
    "VA00000093",
    "000000AB9",
    "22 Sample Court, Anytown, VA 22000",
    "(703) 555-0173",
    "TRK 0093",
    "1FTEX1EP5JKF00093",
    "EXA0093",
}
BOLO_WITHHELD = (
    "details.subjects[0].name",
    "details.subjects[0].aliases",
    "details.subjects[0].dateOfBirth",
    "details.subjects[0].identificationNumbers",
    "details.subjects[0].address",
    "details.subjects[0].phone",
    "details.vehicles[0].plate",
    "details.vehicles[0].vin",
    "details.property[0].serialNumber",
)
ENTITLEMENTS = {
    "pii": Clearance(Tlp.RED, frozenset({"PII"})),
    "no-pii": Clearance(Tlp.RED, frozenset({"LES"}), law_enforcement=True),
}


def stakeholder(clearance: Clearance) -> Stakeholder:
    return Stakeholder(
        id="s1",
        name="Duty officer",
        organization="County Sheriff",
        sector=Sector.LAW_ENFORCEMENT,
        kind=StakeholderKind.INDIVIDUAL,
        jurisdiction=Jurisdiction(),
        clearance=clearance,
    )


def bolo(tlp: str) -> dict[str, Any]:
    """bolo_full.json marked `tlp` without caveats, normalized as the service stores it."""
    document = fixture_document("bolo_full.json")
    document["handling"] = {"tlp": tlp}
    return alert_from_local(document, DEFAULTS).to_json()


def strings(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        for item in value.values():
            yield from strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from strings(item)
    elif isinstance(value, str):
        yield value


def test_redact_removes_exactly_the_x_pii_fields() -> None:
    document = bolo("GREEN")
    before = json.dumps(document, sort_keys=True)
    redacted = redact(document)
    assert redacted.withheld == BOLO_WITHHELD
    assert redacted.document["redaction"] == {
        "reason": "pii_not_entitled",
        "withheld": list(BOLO_WITHHELD),
    }
    assert json.dumps(document, sort_keys=True) == before  # the stored document is untouched
    assert not BOLO_PII & set(strings(redacted.document))
    subject = redacted.document["details"]["subjects"][0]
    assert subject["height"] == "6 ft 1 in"
    assert subject["sex"] == "M"
    assert redacted.document["details"]["vehicles"][0]["make"] == "Ford"
    assert redacted.document["details"]["property"][1] == document["details"]["property"][1]
    unchanged = {k: v for k, v in redacted.document.items() if k not in {"details", "redaction"}}
    assert unchanged == {k: v for k, v in document.items() if k != "details"}


@pytest.mark.parametrize(
    "name", ["sar_update.json", "situational_awareness_full.json", "advisory_full.json"]
)
def test_documents_without_personal_fields_pass_unchanged(name: str) -> None:
    document = alert_from_local(fixture_document(name), DEFAULTS).to_json()
    assert redact(document).withheld == ()
    assert redact(document).document == document


def test_a_sar_location_address_is_withheld() -> None:
    document = alert_from_local(fixture_document("sar_full.json"), DEFAULTS).to_json()
    withheld = redact(document).withheld
    assert "details.location.address" in withheld
    assert "details.subjects[0].name" in withheld


def test_pii_entitlement_is_the_pii_caveat_in_any_case() -> None:
    assert pii_entitled(Clearance(Tlp.GREEN, frozenset({"pii"})))
    assert not pii_entitled(Clearance(Tlp.RED, frozenset({"LES"}), law_enforcement=True))


def test_redactions_are_made_once_per_alert_and_entitlement() -> None:
    document = bolo("GREEN")
    redactions = Redactions()
    row = {"alert_id": document["id"], "document": document}
    cleared = claimed_row(**row, stakeholder=stakeholder(clearance=ENTITLEMENTS["pii"]))
    uncleared = claimed_row(**row, stakeholder=stakeholder(clearance=ENTITLEMENTS["no-pii"]))
    assert redactions.for_row(cleared) is None
    first = redactions.for_row(uncleared)
    assert first is not None
    assert redactions.for_row(uncleared) is first
    changed = json.loads(json.dumps(document))  # an equal document, another object
    assert redactions.for_row(replace(uncleared, document=changed)) is not first


RELAY = SmtpConfig(
    "smtp.example.org",
    25,
    "none",
    None,
    None,
    "alerts@example.org",
    message_id_domain="example.org",
)
"""For composing only: nothing is sent to it."""


def renderings(tlp: str, entitlement: str) -> dict[str, str]:
    """The email text and HTML, SMS and webhook alert a recipient of `entitlement` gets."""
    document = bolo(tlp)
    person = stakeholder(clearance=ENTITLEMENTS[entitlement])
    row = claimed_row(
        id="row-1",
        alert_id=document["id"],
        document=document,
        stakeholder=person,
        address="https://hooks.example.org/in",
    )
    message = MessageBuilder().build(row)
    body = WebhookChannel(()).body(message)
    assert_contract(body)
    rendering = Rendering(delivery_id="row-1", portal_url="https://alerts.example.org/a/1")
    to_person = replace(message, address="duty@example.org", rendering=rendering)
    mail = EmailChannel(RELAY).compose(to_person)
    text, html = (part.get_content() for part in mail.iter_parts())
    return {
        "email.txt": text,
        "email.html": html,
        "sms.txt": SmsChannel.compose(to_person) + "\n",
        "webhook.json": json.dumps(json.loads(body)["alert"], indent=2, sort_keys=True) + "\n",
    }


CASES = [(tlp, entitlement) for tlp in ("GREEN", "AMBER") for entitlement in ENTITLEMENTS]


@pytest.mark.parametrize(("tlp", "entitlement"), CASES)
def test_golden_renderings_per_entitlement(tlp: str, entitlement: str) -> None:
    for part, rendered in renderings(tlp, entitlement).items():
        path = GOLDEN_DIR / f"bolo-{tlp.lower()}-{entitlement}.{part}"
        if os.environ.get("UPDATE_GOLDEN"):
            path.parent.mkdir(exist_ok=True)
            path.write_text(rendered, encoding="utf-8")
        assert rendered == path.read_text(encoding="utf-8"), f"{path.name} differs"


@pytest.mark.parametrize(("tlp", "entitlement"), CASES)
def test_no_personal_value_reaches_a_recipient_without_pii(tlp: str, entitlement: str) -> None:
    rendered = renderings(tlp, entitlement)
    for part, text in rendered.items():
        leaked = {value for value in BOLO_PII if value in text}
        if entitlement == "pii":
            assert "withheld" not in text.lower() or part == "webhook.json"
        else:
            assert leaked == set(), f"{part} carries {sorted(leaked)}"
            assert "Personal data withheld" in text or part == "webhook.json"
    if entitlement == "pii":  # the email carries every particular, the webhook every field
        assert {v for v in BOLO_PII if v in rendered["email.txt"]} >= BOLO_PII
        assert set(strings(json.loads(rendered["webhook.json"]))) >= BOLO_PII
    else:
        assert json.loads(rendered["webhook.json"])["redaction"]["withheld"] == list(BOLO_WITHHELD)


def test_every_particular_is_rendered_for_an_entitled_recipient() -> None:
    content = AlertContent.from_document(bolo("GREEN"))
    labels = [label for label, _ in content.particulars]
    assert labels == [
        "Armed and dangerous",
        "Subject 1",
        "Vehicle 1",
        "Property 1",
        "Property 2",
        "Last seen",
        "Case number",
        "Issuing agency",
        "Contact instructions",
    ]
    subject = dict(content.particulars)["Subject 1"]
    assert "Name: Richard P. Roe" in subject
    assert "ID numbers: SID VA00000093, FBI 000000AB9" in (subject)


@pytest.mark.slow
async def test_the_service_sends_each_recipient_what_its_entitlement_admits(
    custom_service: StartService, sinks: Sinks
) -> None:
    """A BOLO at TLP:GREEN with personal fields, through the real broker, store and sinks:
    the recipients entitled to PII get every field, the others none, and the dissemination
    record names what was withheld from whom. (Approval is off here: tests/test_approval.py
    covers holding such alerts.)"""
    service, settings, channel = await custom_service(approval_rules="")
    assert service.database is not None
    pii = {"maxTlp": "AMBER", "caveats": ["PII"]}
    await enrol(service, "Entitled hook", {"webhook": sinks.hooks.base + "pii"}, clearance=pii)
    await enrol(service, "Other hook", {"webhook": sinks.hooks.base + "plain"})
    await enrol(service, "Entitled mail", {"email": "pii@example.org"}, clearance=pii)
    await enrol(service, "Other mail", {"email": "plain@example.org"})
    await enrol(service, "Other phone", {"sms": "+12025550142"})
    document = fixture_document("bolo_full.json")
    document |= {"handling": {"tlp": "GREEN"}, "expires": "2099-01-01T00:00:00-05:00"}
    await publish(channel, settings, json.dumps(document).encode())
    alert_id = alert_id_for(document["sender"], document["identifier"], document["sent"])
    rows = await settled(service, alert_id, 5)
    address_of = {row["id"]: row["address"] for row in rows}

    received: dict[str, str] = {}
    for _, body in sinks.hooks.requests:
        url = address_of[json.loads(body)["deliveryId"]]
        received["webhook-" + url.rsplit("/", 1)[-1]] = body.decode()
    for message in sinks.smtp.messages:
        parts = message.parsed().iter_parts()
        text = "".join(part.get_content() for part in parts)
        received["email-" + message.rcpt_tos[0].split("@")[0]] = text
    received["sms-plain"] = sinks.twilio.messages[0]["body"]
    expected = {"webhook-pii", "webhook-plain", "email-pii", "email-plain", "sms-plain"}
    assert set(received) == expected
    for name, text in received.items():
        leaked = sorted(value for value in BOLO_PII if value in text)
        if name.endswith("-pii"):
            assert "Richard P. Roe" in text, name
        else:
            assert leaked == [], f"{name} carries {leaked}"
            assert "withheld" in text, name

    entries = await record.export(service.database, alert_id=alert_id)
    assert len(entries) == 5
    for entry in entries:
        assert entry["outcome"] == "released"
        redacted = "personal data withheld: details.subjects[0].name" in entry["justification"]
        assert redacted is ("pii" not in entry["address"]), entry["channel"]
    hashes = {e["content_sha256"] for e in entries if e["channel"] == "webhook"}
    bodies = {hashlib.sha256(body).hexdigest() for _, body in sinks.hooks.requests}
    assert hashes == bodies
