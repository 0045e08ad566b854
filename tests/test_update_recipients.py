"""Whom an Update or Cancel reaches beyond its own matches, on SQLite and PostgreSQL: the
recipients the referenced alert reached (rows sent or delivered, or still to go for an
Update), even if their rule is gone, never those held, rejected or withheld; each checked
again as matching would check them now (a Test or Exercise message only to those who opt
into exercises, a deactivated contact withheld, a changed one at its address now). A Cancel
still suppresses what the original owes, but a Test Cancel leaves an Actual alert as it
is."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select

from core.alert import Tlp, alert_id_for
from dissemination.acks.tracking import AckIssuer
from dissemination.controls.approval import decide
from dissemination.controls.approvalrules import ApprovalPolicy
from dissemination.delivery.claims import DeliveryStore, Settlement
from dissemination.intake.pipeline import AlertPipeline
from dissemination.ledger.alerts import Ledger, Payload
from dissemination.ledger.planning import Planner
from dissemination.settings import IntakeSettings
from dissemination.store.audit import Actor
from dissemination.store.database import Database
from dissemination.store.rows import DeliveryState
from dissemination.store.tables import approvals, deliveries
from subscriptions.matcher import Matcher
from subscriptions.model import (
    Channel,
    Clearance,
    Contact,
    Jurisdiction,
    Sector,
    Stakeholder,
    StakeholderKind,
    Subscription,
)
from subscriptions.rules import Rule
from testbed.alerts import cap_json

ALERTS_ONLY: dict[str, Any] = {"msgTypes": ["Alert"]}
"""A rule that selects originals only: whatever an Update or Cancel reaches beyond its own
matches is an earlier recipient."""

Row = tuple[str, str, str | None, str]
"""(address, state, reason, origin) of a delivery row."""


def person(name: str) -> Stakeholder:
    return Stakeholder(
        name,
        name,
        "Org",
        Sector.GOVERNMENT,
        StakeholderKind.INDIVIDUAL,
        Jurisdiction(),
        Clearance(Tlp.RED, frozenset(), False),
    )


def contact(name: str, address: str | None = None, active: bool = True) -> Contact:
    return Contact(
        f"c-{name}", name, Channel.EMAIL, address or f"{name}@example.org", active=active
    )


def directory(*names: str, include_exercises: bool = False) -> Matcher:
    """Each named individual, cleared to RED, with one email contact and a subscription to
    originals only."""
    matcher = Matcher()
    matcher.load(
        [person(name) for name in names],
        [contact(name) for name in names],
        [
            Subscription(
                f"s-{name}",
                name,
                Rule.from_json(ALERTS_ONLY),
                (Channel.EMAIL,),
                include_exercises=include_exercises,
            )
            for name in names
        ],
    )
    return matcher


def pipeline(store: Database, matcher: Matcher, *approval_rules: str) -> AlertPipeline:
    return AlertPipeline(
        Ledger(store, Planner(matcher), AckIssuer(timedelta(hours=24))),
        IntakeSettings(1_048_576, 64, "AMBER+STRICT", "CLEAR"),
        approval=ApprovalPolicy(approval_rules) if approval_rules else None,
    )


def alert_id(document: dict[str, Any]) -> str:
    return alert_id_for(document["sender"], document["identifier"], document["sent"])


def referring(original: dict[str, Any], identifier: str, **fields: Any) -> dict[str, Any]:
    reference = f"{original['sender']},{original['identifier']},{original['sent']}"
    return cap_json(identifier, references=reference, **fields)


async def take_in(intake: AlertPipeline, document: dict[str, Any]) -> str:
    await intake.process(Payload(json.dumps(document).encode(), "application/json"))
    return alert_id(document)


async def rows(store: Database, of: str) -> list[Row]:
    async with store.reading() as conn:
        result = await conn.execute(
            select(
                deliveries.c.address, deliveries.c.state, deliveries.c.reason, deliveries.c.origin
            )
            .where(deliveries.c.alert_id == of)
            .order_by(deliveries.c.address, deliveries.c.id)
        )
        return [(r.address, r.state, r.reason, r.origin) for r in result]


async def send(store: Database, of: str, *addresses: str) -> None:
    """The alert's pending rows to these addresses claimed and sent, as a worker would."""
    async with store.reading() as conn:
        ids = list(
            await conn.scalars(
                select(deliveries.c.id).where(
                    deliveries.c.alert_id == of, deliveries.c.address.in_(addresses)
                )
            )
        )
    delivery = DeliveryStore(store)
    claim = await delivery.claim(ids, datetime.now(UTC))
    assert len(claim.rows) == len(addresses)
    sent = [Settlement(row, DeliveryState.SENT, None, "250 ok") for row in claim.rows]
    await delivery.settle(sent, datetime.now(UTC))


async def approval_state(store: Database, of: str) -> str | None:
    async with store.reading() as conn:
        return await conn.scalar(select(approvals.c.state).where(approvals.c.alert_id == of))


async def test_an_update_reaches_those_the_original_reached_and_no_one_else(
    store: Database,
) -> None:
    matcher = directory("ann", "bob")
    intake = pipeline(store, matcher)
    original = cap_json("REACH-1")
    first = await take_in(intake, original)
    await send(store, first, "ann@example.org")  # bob's row still waits
    matcher.remove_subscription("s-ann")  # the rule is gone: ann had the alert all the same
    update = await take_in(intake, referring(original, "REACH-1-U", msgType="Update"))
    # bob's original is still to go (a retry, quiet hours): what corrects it goes too
    assert await rows(store, update) == [
        ("ann@example.org", "pending", None, "referenced"),
        ("bob@example.org", "pending", None, "referenced"),
    ]
    assert await rows(store, first) == [
        ("ann@example.org", "sent", None, "match"),
        ("bob@example.org", "pending", None, "match"),
    ]
    # a Cancel goes to those who had it; bob's original is stopped, so he hears of neither
    cancel = await take_in(intake, referring(original, "REACH-1-C", msgType="Cancel"))
    assert await rows(store, cancel) == [("ann@example.org", "pending", None, "referenced")]
    assert (await rows(store, first))[1][:2] == ("bob@example.org", "suppressed")


async def test_a_cancel_of_a_held_alert_goes_to_no_one_and_suppresses_the_held_rows(
    store: Database,
) -> None:
    intake = pipeline(store, directory("ann"), "* tlp>=AMBER")
    original = cap_json("HELD-1", handling={"tlp": "AMBER"})
    first = await take_in(intake, original)
    assert await rows(store, first) == [("ann@example.org", "held", None, "match")]
    cancel = referring(original, "HELD-1-C", msgType="Cancel", handling={"tlp": "AMBER"})
    cancelled = await take_in(intake, cancel)
    assert await rows(store, cancelled) == []  # ann never had the original
    assert await rows(store, first) == [
        ("ann@example.org", "suppressed", "cancelled by HELD-1-C", "match")
    ]
    assert await approval_state(store, first) == "withdrawn"


async def test_an_update_of_a_rejected_alert_goes_to_no_one(store: Database) -> None:
    intake = pipeline(store, directory("bob"), "* tlp>=AMBER")
    original = cap_json("REJ-1", handling={"tlp": "AMBER"})
    first = await take_in(intake, original)
    await decide(store, first, Actor(None, "approver"), False, "not vetted", datetime.now(UTC))
    assert await rows(store, first) == [
        ("bob@example.org", "suppressed", "approval_rejected", "match")
    ]
    update = referring(original, "REJ-1-U", msgType="Update", handling={"tlp": "GREEN"})
    assert await rows(store, await take_in(intake, update)) == []


async def test_an_update_never_goes_to_a_contact_deactivated_since(store: Database) -> None:
    matcher = directory("hal", "ida")
    intake = pipeline(store, matcher)
    original = cap_json("DEACT-1")
    first = await take_in(intake, original)
    await send(store, first, "hal@example.org", "ida@example.org")
    matcher.upsert_contact(contact("hal", active=False))
    matcher.upsert_contact(contact("ida", "ida@new.example.org"))  # the same contact, moved
    update = await take_in(intake, referring(original, "DEACT-1-U", msgType="Update"))
    assert await rows(store, update) == [
        ("hal@example.org", "withheld", "no_contact", "referenced"),
        ("ida@new.example.org", "pending", None, "referenced"),
    ]


async def test_a_test_cancel_neither_reaches_nor_stops_an_actual_alert(store: Database) -> None:
    matcher = directory("fay", "gus")  # neither opts into exercises
    intake = pipeline(store, matcher)
    original = cap_json("ACT-1")
    first = await take_in(intake, original)
    await send(store, first, "fay@example.org")
    test_cancel = referring(original, "ACT-1-T", status="Test", msgType="Cancel")
    assert await rows(store, await take_in(intake, test_cancel)) == []
    assert await rows(store, first) == [
        ("fay@example.org", "sent", None, "match"),
        ("gus@example.org", "pending", None, "match"),  # the real alert still goes to gus
    ]
    # one who opts into exercises gets the Test message, as matching would give it
    fay = matcher.subscription("s-fay")
    assert fay is not None
    matcher.upsert_subscription(replace(fay, include_exercises=True))
    exercise = referring(original, "ACT-1-T2", status="Test", msgType="Update")
    assert await rows(store, await take_in(intake, exercise)) == [
        ("fay@example.org", "pending", None, "referenced")
    ]


async def test_a_test_cancel_leaves_a_held_actual_alert_held(store: Database) -> None:
    intake = pipeline(store, directory("ann"), "* tlp>=AMBER")
    original = cap_json("HELD-2", handling={"tlp": "AMBER"})
    first = await take_in(intake, original)
    cancel = referring(
        original, "HELD-2-T", status="Test", msgType="Cancel", handling={"tlp": "AMBER"}
    )
    await take_in(intake, cancel)
    assert await rows(store, first) == [("ann@example.org", "held", None, "match")]
    assert await approval_state(store, first) == "held"


async def test_a_retry_under_way_stops_for_an_actual_cancel_not_for_a_test_one(
    store: Database,
) -> None:
    intake = pipeline(store, directory("ann"))
    delivery = DeliveryStore(store)
    for status, expected in (("Test", "pending"), ("Actual", "suppressed")):
        original = cap_json(f"MID-{status}")
        first = await take_in(intake, original)
        async with store.reading() as conn:
            ids = list(
                await conn.scalars(select(deliveries.c.id).where(deliveries.c.alert_id == first))
            )
        claim = await delivery.claim(ids, datetime.now(UTC))  # mid-send when the Cancel comes
        cancel = referring(original, f"MID-{status}-C", status=status, msgType="Cancel")
        await take_in(intake, cancel)
        retry = datetime.now(UTC) + timedelta(minutes=1)
        await delivery.settle(
            [
                Settlement(row, DeliveryState.PENDING, "HTTP 503", not_before=retry)
                for row in claim.rows
            ],
            datetime.now(UTC),
        )
        assert [state for _, state, _, _ in await rows(store, first)] == [expected], status
