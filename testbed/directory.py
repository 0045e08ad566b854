"""A directory seeded in bulk, before a service starts: stakeholders made through the
directory store, audited as the admin API does."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from dissemination.directory.store import CONTACT, STAKEHOLDER, SUBSCRIPTION, Directory
from dissemination.store.audit import Actor
from dissemination.store.database import Database
from subscriptions.codec import validate_stakeholder, validate_subscription

ACTOR = Actor(None, "test")


def stakeholder_fields(name: str, max_tlp: str = "AMBER") -> dict[str, Any]:
    """An individual at a partner government agency, cleared to `max_tlp`, as the admin API
    stores one (validated, its defaults filled in)."""
    return validate_stakeholder(
        {
            "name": name,
            "organization": "Partner",
            "sector": "government",
            "kind": "individual",
            "clearance": {"maxTlp": max_tlp},
        }
    )


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
    stakeholder = stakeholder_fields("bulk")
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
