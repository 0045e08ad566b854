"""Stakeholders for end-to-end tests: created through the directory (audited, as the admin API
does) and applied to the running service's matcher at once, so a test need not wait for the
directory follower."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from dissemination.api.directory import ADMIN
from dissemination.directory.store import CONTACT, STAKEHOLDER, SUBSCRIPTION, Directory, EntitySpec
from dissemination.directory.sync import apply_change
from dissemination.service import Service
from subscriptions.codec import validate_stakeholder, validate_subscription
from testbed.directory import ACTOR


@dataclass
class Enrolled:
    """A stakeholder with its contacts (by channel) and webhook secrets."""

    id: str
    contacts: dict[str, str] = field(default_factory=dict)
    secrets: dict[str, str] = field(default_factory=dict)


async def create(
    service: Service, spec: EntitySpec, fields: dict[str, Any]
) -> tuple[str, str | None]:
    assert service.database is not None
    assert service.http is not None
    record, secret = await Directory(service.database).create(
        spec, fields, ACTOR, datetime.now(UTC)
    )
    apply_change(service.http.app[ADMIN].matcher, spec, record, record["id"])
    return str(record["id"]), secret


async def enrol(
    service: Service,
    name: str,
    addresses: dict[str, str],
    channels: list[str] | None = None,
    *,
    max_tlp: str = "AMBER",
    quiet_hours: dict[str, str] | None = None,
    timezone: str = "UTC",
    rule: dict[str, Any] | None = None,
    ack_required: bool = False,
    escalation_id: str | None = None,
    kind: str = "individual",
    clearance: dict[str, Any] | None = None,
) -> Enrolled:
    """A named individual with one contact per channel in `addresses`, subscribed to `rule`
    (everything by default) on `channels` in that order (default: the address order)."""
    stakeholder: dict[str, Any] = {
        "name": name,
        "organization": "Partner",
        "sector": "government",
        "kind": kind,
        "clearance": clearance or {"maxTlp": max_tlp},
        "timezone": timezone,
    }
    if quiet_hours is not None:
        stakeholder["quietHours"] = quiet_hours
    sid, _ = await create(service, STAKEHOLDER, validate_stakeholder(stakeholder))
    enrolled = Enrolled(sid)
    for channel, address in addresses.items():
        contact = {"stakeholderId": sid, "channel": channel, "address": address}
        contact_id, secret = await create(service, CONTACT, contact | {"label": "", "active": True})
        enrolled.contacts[channel] = contact_id
        if secret is not None:
            enrolled.secrets[channel] = secret
    subscription = {
        "stakeholderId": sid,
        "rule": rule or {},
        "channels": channels or list(addresses),
        "ackRequired": ack_required,
        "escalationId": escalation_id,
    }
    await create(service, SUBSCRIPTION, validate_subscription(subscription))
    return enrolled
