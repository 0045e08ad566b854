"""The directory's JSON representations: validating what administrators send (schema, then
the checks a schema cannot make: time zones, phone numbers, email syntax, webhook
destinations) and turning stored records into the model the matcher uses.

A record is the API representation of an entity: its validated fields plus `id`,
`createdAt` and `updatedAt`.
"""

from __future__ import annotations

import zoneinfo
from collections.abc import Mapping, Sequence
from datetime import time
from typing import Any

import email_validator
import phonenumbers

from channels.destinations import IPNetwork, check_webhook_url
from channels.errors import DestinationRejected
from core.alert import NamedValue, Tlp
from core.errors import ErrorDetail, RejectedInput
from core.validation import validate
from subscriptions.model import (
    Channel,
    Clearance,
    Contact,
    DistributionList,
    Jurisdiction,
    MemberKind,
    QuietHours,
    Sector,
    Stakeholder,
    StakeholderKind,
    Subscription,
)
from subscriptions.rules import Rule

DEFAULT_PHONE_REGION = "US"
STAKEHOLDER_DEFAULTS: dict[str, Any] = {
    "kind": "individual",
    "jurisdiction": {},
    "timezone": "UTC",
    "quietHours": None,
    "active": True,
}
CONTACT_DEFAULTS: dict[str, Any] = {"label": "", "active": True}
SUBSCRIPTION_DEFAULTS: dict[str, Any] = {
    "ackRequired": False,
    "escalationId": None,
    "enabled": True,
    "includeExercises": False,
}


def _invalid(path: str, message: str) -> RejectedInput:
    return RejectedInput("invalid_field", [ErrorDetail(path, message)])


def validate_escalation(document: Mapping[str, Any]) -> dict[str, Any]:
    """The policy fields with step defaults applied, or RejectedInput with JSON paths."""
    validate("escalation", document)
    steps = []
    previous = 0
    for index, step in enumerate(document["steps"]):
        if step["afterSeconds"] < previous:
            raise _invalid(f"$.steps[{index}].afterSeconds", "steps must be in order of time")
        previous = step["afterSeconds"]
        if step["action"] == "notify":
            step = {"channels": ["email"]} | dict(step)
        steps.append(dict(step))
    return {"name": document["name"], "steps": steps}


def validate_stakeholder(document: Mapping[str, Any]) -> dict[str, Any]:
    """The stakeholder fields with defaults applied, or RejectedInput with JSON paths."""
    validate("stakeholder", document)
    fields = STAKEHOLDER_DEFAULTS | dict(document)
    fields["clearance"] = {"caveats": [], "lawEnforcement": False} | fields["clearance"]
    try:
        zoneinfo.ZoneInfo(fields["timezone"])
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise _invalid("$.timezone", f"unknown time zone {fields['timezone']!r}") from None
    return fields


def _phone_e164(number: str) -> str:
    try:
        parsed = phonenumbers.parse(number, DEFAULT_PHONE_REGION)
    except phonenumbers.NumberParseException as error:
        raise _invalid("$.address", f"not a phone number: {error}") from None
    if not phonenumbers.is_valid_number(parsed):
        raise _invalid("$.address", "not a valid phone number")
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def _email(address: str) -> str:
    try:
        valid = email_validator.validate_email(address, check_deliverability=False)
    except email_validator.EmailNotValidError as error:
        raise _invalid("$.address", f"not a valid email address: {error}") from None
    return str(valid.normalized)


async def validate_contact(
    document: Mapping[str, Any], allowed_networks: Sequence[IPNetwork]
) -> dict[str, Any]:
    """The contact fields with the address normalized (E.164, normalized email) and webhook
    destinations checked."""
    validate("contact", document)
    fields = CONTACT_DEFAULTS | dict(document)
    channel = Channel(fields["channel"])
    if channel is Channel.EMAIL:
        fields["address"] = _email(fields["address"])
    elif channel is Channel.SMS:
        fields["address"] = _phone_e164(fields["address"])
    else:
        try:
            await check_webhook_url(fields["address"], allowed_networks)
        except DestinationRejected as rejected:
            raise RejectedInput(
                "forbidden_destination"
                if rejected.code == "forbidden_destination"
                else "invalid_field",
                [ErrorDetail("$.address", str(rejected))],
            ) from None
    return fields


def validate_subscription(document: Mapping[str, Any]) -> dict[str, Any]:
    """The subscription fields with defaults applied; the rule is parsed to prove it valid."""
    validate("subscription", document)
    fields = SUBSCRIPTION_DEFAULTS | dict(document)
    try:
        Rule.from_json(fields["rule"])
    except RejectedInput as rejected:  # the rule's paths are relative to the rule
        details = [ErrorDetail("$.rule" + d.path[1:], d.message) for d in rejected.errors]
        raise RejectedInput(rejected.reason, details) from None
    return fields


def _quiet_hours(value: Mapping[str, str] | None) -> QuietHours | None:
    if not value:
        return None
    return QuietHours(time.fromisoformat(value["start"]), time.fromisoformat(value["end"]))


NO_CAVEATS: frozenset[str] = frozenset()  # shared: most stakeholders hold no caveat


def stakeholder_model(record: Mapping[str, Any]) -> Stakeholder:
    jurisdiction = record["jurisdiction"]
    clearance = record["clearance"]
    return Stakeholder(
        id=record["id"],
        name=record["name"],
        organization=record["organization"],
        sector=Sector(record["sector"]),
        kind=StakeholderKind(record["kind"]),
        jurisdiction=Jurisdiction(
            geocodes=tuple(
                NamedValue(g["valueName"], g["value"]) for g in jurisdiction.get("geocodes", ())
            ),
            polygons=tuple(
                tuple((p[0], p[1]) for p in ring) for ring in jurisdiction.get("polygons", ())
            ),
        ),
        clearance=Clearance(
            max_tlp=Tlp.parse(clearance["maxTlp"]),
            caveats=frozenset(clearance.get("caveats", ())) or NO_CAVEATS,
            law_enforcement=bool(clearance.get("lawEnforcement", False)),
        ),
        timezone=record["timezone"],
        quiet_hours=_quiet_hours(record.get("quietHours")),
        active=bool(record["active"]),
    )


def contact_model(record: Mapping[str, Any]) -> Contact:
    return Contact(
        id=record["id"],
        stakeholder_id=record["stakeholderId"],
        channel=Channel(record["channel"]),
        address=record["address"],
        label=record.get("label", ""),
        active=bool(record["active"]),
    )


def subscription_model(record: Mapping[str, Any]) -> Subscription:
    return Subscription(
        id=record["id"],
        stakeholder_id=record["stakeholderId"],
        rule=Rule.from_json(record["rule"]),
        channels=tuple(Channel(c) for c in record["channels"]),
        ack_required=bool(record["ackRequired"]),
        escalation_id=record.get("escalationId"),
        enabled=bool(record["enabled"]),
        include_exercises=bool(record["includeExercises"]),
    )


def distribution_list_model(record: Mapping[str, Any]) -> DistributionList:
    """A list record (`members`: `{"kind", "id"}` objects) as the matcher's model."""
    members = record["members"]
    return DistributionList(
        id=record["id"],
        name=record["name"],
        stakeholder_ids=frozenset(m["id"] for m in members if m["kind"] == MemberKind.STAKEHOLDER),
        list_ids=frozenset(m["id"] for m in members if m["kind"] == MemberKind.LIST),
    )
