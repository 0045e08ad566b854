"""A directory seeded in bulk, before a service starts: stakeholders made through the
directory store, audited as the admin API does."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from dissemination.directory.bulk import create_many_in
from dissemination.directory.store import CONTACT, STAKEHOLDER, SUBSCRIPTION
from dissemination.store.audit import Actor
from dissemination.store.database import Database
from subscriptions.codec import validate_stakeholder, validate_subscription

ACTOR = Actor(None, "test")
ENROL_SLICE = 5_000


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
    rule: dict[str, Any] | None = None,
    name: str = "bulk",
) -> None:
    """`count` stakeholders (`name`-0, ...), each with one contact on `channel` and a
    subscription to every alert `rule` matches (every alert by default; acknowledged, under
    the escalation policy, if one is given), created in one transaction (with their audit
    entries) before a service starts, `ENROL_SLICE` of each kind per insert."""
    stakeholder = stakeholder_fields("bulk")
    now = datetime.now(UTC)
    subscription = validate_subscription(
        {
            "stakeholderId": "-",
            "rule": rule or {},
            "channels": [channel],
            "ackRequired": ack_required or escalation_id is not None,
            "escalationId": escalation_id,
        }
    )
    async with database.transaction() as conn:
        for start in range(0, count, ENROL_SLICE):
            numbers = range(start, min(count, start + ENROL_SLICE))
            made = await create_many_in(
                conn,
                STAKEHOLDER,
                [stakeholder | {"name": f"{name}-{n}"} for n in numbers],
                ACTOR,
                now,
            )
            ids = [record["id"] for record, _ in made]
            contacts = [
                {
                    "stakeholderId": holder,
                    "channel": channel,
                    "address": address_of(n),
                    "label": "",
                    "active": True,
                }
                for n, holder in zip(numbers, ids, strict=True)
            ]
            await create_many_in(conn, CONTACT, contacts, ACTOR, now)
            await create_many_in(
                conn, SUBSCRIPTION, [subscription | {"stakeholderId": i} for i in ids], ACTOR, now
            )
