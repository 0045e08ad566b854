"""Stakeholders for end-to-end tests: created through the directory (audited, as the admin API
does) and applied to the running service's matcher at once, so a test need not wait for the
directory follower."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from dissemination.api.directory import ADMIN
from dissemination.directory.store import CONTACT, STAKEHOLDER, SUBSCRIPTION, Directory, EntitySpec
from dissemination.directory.sync import apply_change
from dissemination.service import Service
from dissemination.store.audit import Actor
from dissemination.store.database import Database
from subscriptions.codec import validate_stakeholder, validate_subscription

ACTOR = Actor(None, "test")


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


async def enrol_many(
    database: Database,
    count: int,
    channel: str,
    address_of: Callable[[int], str],
    *,
    ack_required: bool = False,
    escalation_id: str | None = None,
) -> None:
    """`count` stakeholders, each with one contact on `channel` and a subscription to every
    alert (acknowledged, under the escalation policy, if one is given), created in one
    transaction (with their audit entries) before a service starts."""
    stakeholder = validate_stakeholder(
        {
            "name": "bulk",
            "organization": "Partner",
            "sector": "government",
            "kind": "individual",
            "clearance": {"maxTlp": "AMBER"},
        }
    )
    directory = Directory(database)
    now = datetime.now(UTC)
    async with database.transaction() as conn:
        for n in range(count):
            record, _ = await directory.create_in(
                conn, STAKEHOLDER, stakeholder | {"name": f"bulk-{n}"}, ACTOR, now
            )
            contact = {
                "stakeholderId": record["id"],
                "channel": channel,
                "address": address_of(n),
                "label": "",
                "active": True,
            }
            await directory.create_in(conn, CONTACT, contact, ACTOR, now)
            subscription = {
                "stakeholderId": record["id"],
                "rule": {},
                "channels": [channel],
                "ackRequired": ack_required or escalation_id is not None,
                "escalationId": escalation_id,
            }
            await directory.create_in(
                conn, SUBSCRIPTION, validate_subscription(subscription), ACTOR, now
            )
