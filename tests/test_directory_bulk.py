"""Directory entities created many at once, on SQLite and PostgreSQL: stored and audited as
one at a time would store and audit them, webhook contacts given their own secrets, and a
batch that would put a stakeholder over the most subscriptions allowed refused whole."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import func, select

from core.errors import RejectedInput
from dissemination.directory.bulk import create_many_in
from dissemination.directory.store import CONTACT, STAKEHOLDER, SUBSCRIPTION, Directory
from dissemination.store.audit import Actor
from dissemination.store.database import Database
from dissemination.store.tables import audit_log, contacts, subscriptions
from subscriptions.codec import validate_subscription
from testbed.directory import stakeholder_fields

NOW = datetime(2026, 11, 24, 15, 0, tzinfo=UTC)
ACTOR = Actor(None, "seeder")


def subscription_of(stakeholder_id: str) -> dict[str, Any]:
    return validate_subscription({"stakeholderId": stakeholder_id, "rule": {}, "channels": ["sms"]})


async def test_many_are_stored_and_audited_as_one_at_a_time_would_be(store: Database) -> None:
    directory = Directory(store)
    async with store.transaction() as conn:
        made = await create_many_in(
            conn, STAKEHOLDER, [stakeholder_fields(f"p-{n}") for n in range(40)], ACTOR, NOW
        )
        hooks = await create_many_in(
            conn,
            CONTACT,
            [
                {
                    "stakeholderId": record["id"],
                    "channel": "webhook",
                    "address": f"https://h{n}.example/in",
                    "label": "",
                    "active": True,
                }
                for n, (record, _) in enumerate(made)
            ],
            ACTOR,
            NOW,
        )
        texts = await create_many_in(
            conn,
            CONTACT,
            [
                {
                    "stakeholderId": made[0][0]["id"],
                    "channel": "sms",
                    "address": "+15550100",
                    "label": "desk",
                    "active": True,
                }
            ],
            ACTOR,
            NOW,
        )
    one, _ = await directory.create(STAKEHOLDER, stakeholder_fields("single"), ACTOR, NOW)
    assert [record["name"] for record, _ in made] == [f"p-{n}" for n in range(40)]
    for record, secret in made:
        assert secret is None
        assert await directory.get(STAKEHOLDER, record["id"]) == record
        assert record.keys() == one.keys()
    secrets = [secret for _, secret in hooks]
    assert all(secrets)
    assert len(set(secrets)) == 40
    assert texts[0][1] is None
    async with store.reading() as conn:
        stored = dict((await conn.execute(select(contacts.c.address, contacts.c.secret))).all())
        entries = (
            await conn.execute(
                select(audit_log.c.entity, audit_log.c.entity_id, audit_log.c.after).order_by(
                    audit_log.c.id
                )
            )
        ).all()
    assert [stored[f"https://h{n}.example/in"] for n in range(40)] == secrets
    assert stored["+15550100"] is None
    created = [record for record, _ in made] + [record for record, _ in hooks + texts] + [one]
    assert [(e.entity, e.entity_id) for e in entries] == [
        ("stakeholder", r["id"]) for r in created[:40]
    ] + [("contact", r["id"]) for r in created[40:81]] + [("stakeholder", one["id"])]
    assert [e.after for e in entries] == created
    assert all("secret" not in e.after for e in entries)


async def test_a_batch_over_the_most_subscriptions_is_refused_whole(store: Database) -> None:
    async with store.transaction() as conn:
        (holder, _), (other, _) = await create_many_in(
            conn, STAKEHOLDER, [stakeholder_fields("a"), stakeholder_fields("b")], ACTOR, NOW
        )
        await create_many_in(conn, SUBSCRIPTION, [subscription_of(holder["id"])], ACTOR, NOW, 3)
    with pytest.raises(RejectedInput) as refused:
        async with store.transaction() as conn:
            await create_many_in(
                conn,
                SUBSCRIPTION,
                [subscription_of(other["id"]), *[subscription_of(holder["id"])] * 3],
                ACTOR,
                NOW,
                3,
            )
    assert refused.value.reason == "too_many_subscriptions"
    detail = refused.value.errors[0]
    assert detail.path == "$.stakeholderId"
    assert "has 1 subscriptions and 3 more is over the most" in detail.message
    async with store.reading() as conn:
        assert await conn.scalar(select(func.count()).select_from(subscriptions)) == 1
    async with store.transaction() as conn:
        await create_many_in(conn, SUBSCRIPTION, [subscription_of(holder["id"])] * 2, ACTOR, NOW, 3)
    async with store.reading() as conn:
        assert await conn.scalar(select(func.count()).select_from(subscriptions)) == 3
