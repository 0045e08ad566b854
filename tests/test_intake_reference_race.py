"""An Update or Cancel taken in together with the alert it refers to (the intake runs many
messages at once and commits them in one transaction, the group commit) meets the ledger its
transaction sees, on SQLite and PostgreSQL: it inherits the original's marks and is planned
with them, and one from another sender is refused there (dead-letter reason
`not_original_sender`) without costing the other messages of its batch anything."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import pytest
from sqlalchemy import select

from core.alert import Alert, Tlp, alert_id_for
from core.errors import RejectedInput
from dissemination.acks.tracking import AckIssuer
from dissemination.controls.approvalrules import ApprovalPolicy
from dissemination.controls.authority import Submitter
from dissemination.intake.pipeline import AlertPipeline, IntakeResult
from dissemination.ledger.alerts import AlertMessage, Ledger, Payload, RecordOutcome
from dissemination.ledger.planning import Planner
from dissemination.settings import IntakeSettings
from dissemination.store.database import Database
from dissemination.store.tables import deliveries
from subscriptions.audience import Audience
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
from tests.samples import FIXTURES_DIR

if TYPE_CHECKING:
    from dissemination.intake.pipeline import Written

NWS = "nws@example.gov"
MALLORY = "mallory@example.gov"
AS_NWS = Submitter("amqp:nws", frozenset({NWS}))
AS_MALLORY = Submitter("amqp:mallory", frozenset({MALLORY}))
FUTURE = "2099-01-01T00:00:00-05:00"


def matcher_for(name: str, max_tlp: str) -> Matcher:
    """One person, cleared to `max_tlp`, subscribed to every alert by email."""
    matcher = Matcher()
    person = Stakeholder(
        name,
        name,
        "Partner",
        Sector.GOVERNMENT,
        StakeholderKind.INDIVIDUAL,
        Jurisdiction(),
        Clearance(Tlp(max_tlp), frozenset(), False),
    )
    contact = Contact(f"c-{name}", name, Channel.EMAIL, f"{name}@example.org")
    subscription = Subscription(f"s-{name}", name, Rule.from_json({}), (Channel.EMAIL,))
    matcher.load([person], [contact], [subscription])
    return matcher


def pipeline_for(
    store: Database, matcher: Matcher, approval: ApprovalPolicy | None = None
) -> AlertPipeline:
    return AlertPipeline(
        Ledger(store, Planner(matcher), AckIssuer(timedelta(hours=24))),
        IntakeSettings(1_048_576, 64, "AMBER", "CLEAR"),
        approval=approval,
    )


def payload(document: dict[str, Any]) -> Payload:
    return Payload(json.dumps(document).encode(), "application/json")


def id_of(document: dict[str, Any]) -> str:
    return alert_id_for(document["sender"], document["identifier"], document["sent"])


def reference_to(document: dict[str, Any]) -> str:
    return f"{document['sender']},{document['identifier']},{document['sent']}"


async def rows_of(store: Database, alert_id: str) -> list[tuple[str, str, str | None]]:
    async with store.reading() as conn:
        result = await conn.execute(
            select(deliveries.c.address, deliveries.c.state, deliveries.c.reason)
            .where(deliveries.c.alert_id == alert_id)
            .order_by(deliveries.c.address)
        )
        return [(address, state, reason) for address, state, reason in result]


def counting_batches(pipeline: AlertPipeline) -> list[int]:
    """The size of each batch the pipeline's group commits write, as they write them."""
    sizes: list[int] = []

    async def write(messages: Sequence[AlertMessage]) -> list[Written]:
        sizes.append(len(messages))
        return await pipeline.record_messages(messages)

    pipeline.writer.write_batch = write
    pipeline.urgent_writer.write_batch = write
    return sizes


class HeldBeforeTheCommit:
    """Messages taken in together, into one group commit in a given order: each message's
    intake waits after its last read before the group commit (the audiences of its last
    alert, whose id `order` names), having read the ledger before any of them is stored,
    until every message is there; then they all go on, in that order."""

    def __init__(
        self, pipeline: AlertPipeline, monkeypatch: pytest.MonkeyPatch, order: Sequence[str]
    ) -> None:
        self.order = list(order)
        self.gates = {alert_id: asyncio.Event() for alert_id in order}
        self.waiting: set[str] = set()
        self.all_waiting = asyncio.Event()
        audiences_for = pipeline.sends.audiences_for

        async def gated(alert: Alert, send_id: str | None) -> tuple[Audience, ...] | None:
            audiences = await audiences_for(alert, send_id)
            if alert.id in self.gates:
                self.waiting.add(alert.id)
                if self.waiting == set(self.order):
                    self.all_waiting.set()
                await self.gates[alert.id].wait()
            return audiences

        monkeypatch.setattr(pipeline.sends, "audiences_for", gated)

    async def take_in(
        self, *intakes: Callable[[], Awaitable[IntakeResult]]
    ) -> list[IntakeResult | BaseException]:
        """The intakes' results (or what they raised), in their order."""
        taken_in = asyncio.gather(*(intake() for intake in intakes), return_exceptions=True)
        results, _ = await asyncio.gather(taken_in, self._release())
        return list(results)

    async def _release(self) -> None:
        await self.all_waiting.wait()
        for alert_id in self.order:  # woken in this order, so submitted in it
            self.gates[alert_id].set()


async def test_an_update_taken_in_with_its_original_inherits_its_marks(
    store: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    pipeline = pipeline_for(store, matcher_for("gina", "GREEN"))
    batches = counting_batches(pipeline)
    original = cap_json("RACE-ORIG", handling={"tlp": "RED", "caveats": ["LES"]})
    update = cap_json(
        "RACE-UPD", msgType="Update", references=reference_to(original), handling={"tlp": "GREEN"}
    )
    held = HeldBeforeTheCommit(pipeline, monkeypatch, [id_of(original), id_of(update)])
    first, second = await held.take_in(
        lambda: pipeline.process(payload(original)), lambda: pipeline.process(payload(update))
    )
    assert batches == [2]  # one group commit, the original first
    assert isinstance(first, IntakeResult)
    assert isinstance(second, IntakeResult)
    assert second.outcomes == {id_of(update): RecordOutcome.STORED}
    assert second.waiting("email") == []  # nothing goes to the GREEN-cleared person
    stored = await pipeline.ledger.alert_row(id_of(update))
    assert stored is not None
    assert (stored["tlp"], stored["caveats"]) == ("RED", ["LES"])
    assert stored["document"]["handling"]["tlp"] == "RED"
    withheld = ("gina@example.org", "withheld", "tlp_above_clearance")
    assert await rows_of(store, id_of(original)) == [withheld]
    assert await rows_of(store, id_of(update)) == [withheld]


@pytest.mark.parametrize("expired", [False, True], ids=["current", "expired"])
async def test_a_cancel_of_another_senders_alert_taken_in_with_it_is_refused(
    store: Database, monkeypatch: pytest.MonkeyPatch, expired: bool
) -> None:
    pipeline = pipeline_for(store, matcher_for("gina", "RED"))
    batches = counting_batches(pipeline)
    victim = cap_json("VICTIM", sender=NWS, handling={"tlp": "GREEN"})
    neighbour = cap_json("NEIGHBOUR", sender=NWS, handling={"tlp": "GREEN"})
    cancel = cap_json(
        "EVIL-CANCEL",
        sender=MALLORY,
        msgType="Cancel",
        references=reference_to(victim),
        handling={"tlp": "GREEN"},
    )
    if expired:  # a Cancel stops what its original owes even once expired: checked as well
        cancel["info"] = [dict(cancel["info"][0], expires="2020-01-01T00:00:00-00:00")]
    order = [id_of(victim), id_of(cancel), id_of(neighbour)]
    held = HeldBeforeTheCommit(pipeline, monkeypatch, order)
    results = await held.take_in(
        lambda: pipeline.process(payload(victim), AS_NWS),
        lambda: pipeline.process(payload(cancel), AS_MALLORY),
        lambda: pipeline.process(payload(neighbour), AS_NWS),
    )
    refused = results[1]
    assert isinstance(refused, RejectedInput), results
    assert refused.reason == "not_original_sender"
    assert batches == [3]  # refused in the group commit, which the others still share
    assert await pipeline.ledger.alert_row(id_of(cancel)) is None
    for document, result in ((victim, results[0]), (neighbour, results[2])):
        assert isinstance(result, IntakeResult)
        assert result.outcomes == {id_of(document): RecordOutcome.STORED}
        assert len(result.waiting("email")) == 1
        assert await rows_of(store, id_of(document)) == [("gina@example.org", "pending", None)]


def nws_features(*properties: dict[str, Any]) -> dict[str, Any]:
    """An NWS FeatureCollection (several alerts in one message) of our fixture's feature with
    these properties changed, expiring in 2099, urgent as `cap_json`'s alerts are (on
    PostgreSQL urgent alerts commit apart from others: here they all go together)."""
    fixture = json.loads((FIXTURES_DIR / "nws" / "two_features.json").read_text())
    feature = fixture["features"][1]
    urgent = {"expires": FUTURE, "urgency": "Immediate", "severity": "Severe"}
    changed = [
        dict(feature, properties=feature["properties"] | urgent | each) for each in properties
    ]
    return {"type": "FeatureCollection", "features": changed}


async def test_a_message_refused_after_another_of_its_alerts_was_stored_fails_alone(
    store: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    pipeline = pipeline_for(store, matcher_for("gina", "RED"))
    batches = counting_batches(pipeline)
    victim = cap_json("M-VICTIM", sender=NWS, handling={"tlp": "GREEN"})
    neighbour = cap_json("M-NEIGHBOUR", sender=NWS, handling={"tlp": "GREEN"})
    own: dict[str, Any] = {
        "id": "M-OWN",
        "sender": MALLORY,
        "messageType": "Alert",
        "references": [],
    }
    reference = {"identifier": "M-VICTIM", "sender": NWS, "sent": victim["sent"]}
    cancel = own | {"id": "M-CANCEL", "messageType": "Cancel", "references": [reference]}
    features = nws_features(own, cancel)  # her own alert, then a Cancel of the victim's
    sent = features["features"][0]["properties"]["sent"]
    mallorys = [alert_id_for(MALLORY, each["id"], sent) for each in (own, cancel)]
    order = [id_of(victim), mallorys[1], id_of(neighbour)]
    held = HeldBeforeTheCommit(pipeline, monkeypatch, order)
    results = await held.take_in(
        lambda: pipeline.process(payload(victim), AS_NWS),
        lambda: pipeline.process(payload(features), AS_MALLORY),
        lambda: pipeline.process(payload(neighbour), AS_NWS),
    )
    refused = results[1]
    assert isinstance(refused, RejectedInput), results
    assert refused.reason == "not_original_sender"
    # the batch failed, as her own alert was stored in it already; written again one by one
    assert batches == [3, 1, 1, 1]
    for alert_id in mallorys:  # none of her message stays
        assert await pipeline.ledger.alert_row(alert_id) is None
    for document, result in ((victim, results[0]), (neighbour, results[2])):
        assert isinstance(result, IntakeResult)
        assert result.outcomes == {id_of(document): RecordOutcome.STORED}
        assert await rows_of(store, id_of(document)) == [("gina@example.org", "pending", None)]
