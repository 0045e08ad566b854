"""The path of an alert, top to bottom. Each step lives in its room; this module only
composes them, in this order:

    decode      intake.decoding, capxml, nws   bytes -> documents, safely (no entities, no
                                               duplicate keys, bounded size and depth)
    validate    core.validation                each document against its JSON Schema
    normalize   intake.normalize               documents -> Alert (marks, defaults)
    authority   controls.authority             the publisher may publish as the sender, and an
                                               Update or Cancel comes from the original's
    inherit     ledger.alerts                  an Update or Cancel takes the stricter marks of
                                               the stored alerts it refers to (as stored now:
                                               see recheck)
    audience    ledger.sends                   an ad-hoc alert's named audience (or that of
                                               the ad-hoc alerts an Update or Cancel refers to)
    plan        ledger.planning                matched rows and withheld rows (with reasons);
                controls.approvalrules         whether the alert waits for approval
  in one transaction per group commit (store.groupcommit):
    recheck     ledger.alerts,                 an Update or Cancel whose references resolve,
                controls.authority             after the alerts before it in the transaction,
                                               to others than when it was planned (its original
                                               came in with it) goes through authority, inherit,
                                               audience and plan again here; if it may not, its
                                               message alone is refused
    dedupe      ledger.alerts                  the same alert again changes nothing; the same
                                               key with other content is quarantined
    link        ledger.alerts                  references resolved to stored alerts
    prior       ledger.alerts, planning        earlier recipients of what it refers to
    quiet hours ledger.planning                pending rows wait for the window to end
    hold        controls.approval              rows held for a second administrator
    cancel      ledger.alerts                  what a cancelled alert still owed is suppressed,
                                               by any Cancel but a Draft, sent or not (one
                                               that has expired already too)
    record      ledger.alerts, store.rows      rows written, ack tokens issued, escalations
                acks, controls.record          planned, withholdings recorded
  after the commit (intake.consumer):
    dispatch    broker.dispatch                delivery tasks for the pending rows, confirmed
    ack         intake.consumer                only now is the inbound message acked
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime

import structlog
from sqlalchemy.ext.asyncio import AsyncConnection

from core.alert import Alert, MsgType, Status
from core.clock import Clock, utc_now
from core.errors import RejectedInput
from dissemination.controls import approval
from dissemination.controls.approvalrules import ApprovalPolicy
from dissemination.controls.authority import (
    SERVICE,
    Submitter,
    check_submission,
    foreign_senders_possible,
)
from dissemination.failpoints import failpoint
from dissemination.intake.decoding import decode_alerts, intake_rules
from dissemination.ledger.alertrows import ToStore
from dissemination.ledger.alerts import (
    AlertMessage,
    Ledger,
    Payload,
    PlannedAgainst,
    PlannedAlert,
    Recorded,
    RecordOutcome,
    Referenced,
    referenced_alerts,
    resolve_references,
)
from dissemination.ledger.sends import Sends, referenced_audiences
from dissemination.metrics import Metrics
from dissemination.settings import IntakeSettings
from dissemination.store.groupcommit import GroupCommit
from dissemination.store.rows import AlertState, DeliveryState, PlannedRow, held
from subscriptions.audience import Audience


@dataclass(frozen=True, slots=True)
class IntakeResult:
    """What one message became: alert ids by what recording them did, and the delivery rows
    waiting to be sent, by channel: those of urgent alerts (`Alert.urgent`) apart, to go
    ahead of others queued."""

    outcomes: dict[str, RecordOutcome] = field(default_factory=dict)
    pending: dict[str, list[str]] = field(default_factory=dict)
    urgent: dict[str, list[str]] = field(default_factory=dict)

    def waiting(self, channel: str) -> list[str]:
        """Every row waiting to be sent on `channel`, urgent or not."""
        return self.urgent.get(channel, []) + self.pending.get(channel, [])


def initial_state(alert: Alert, now: datetime) -> AlertState:
    """Draft is never disseminated; an alert whose every info block has expired is recorded only."""
    if alert.status is Status.DRAFT:
        return AlertState.DRAFT
    expires = alert.expires
    if expires is not None and expires <= now:
        return AlertState.EXPIRED
    return AlertState.RECEIVED


def inherited(alert: Alert, referenced: Sequence[Referenced]) -> Alert:
    """An Update or Cancel carries at least the marks of the stored alerts it refers to
    (`referenced`): the stricter TLP and every caveat, unless its own are stricter."""
    if not foreign_senders_possible(alert):
        return alert
    handling = alert.handling
    for original in referenced:
        handling = handling.at_least(original.handling)
    return alert if handling is alert.handling else replace(alert, handling=handling)


def _against(
    alert: Alert,
    referenced: Sequence[Referenced],
    submitter: Submitter,
    send_id: str | None,
    audiences: tuple[Audience, ...] | None,
) -> PlannedAgainst | None:
    """What an Update or Cancel with references (`alert` as submitted) is checked and
    planned against before its transaction, for the transaction to check again."""
    if not foreign_senders_possible(alert):
        return None
    resolved = frozenset(original.alert_id for original in referenced)
    return PlannedAgainst(
        resolved, alert, submitter, send_id, audiences if send_id is not None else None
    )


Written = list[Recorded] | RejectedInput
"""What recording one message in a group commit came to: what recording each of its alerts
did, or why the transaction refused it (`AlertPipeline.record_messages`)."""


class AlertPipeline:
    """The steps above, composed: `process` runs one message's alerts through them, whatever
    way the bytes arrived (AMQP or a test); `record_messages` is the group commit's writer."""

    def __init__(
        self,
        ledger: Ledger,
        settings: IntakeSettings,
        clock: Clock = utc_now,
        approval: ApprovalPolicy | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.ledger = ledger
        self.sends = Sends(ledger.database)
        self.clock = clock
        self.approval = approval
        self.metrics = metrics or Metrics()
        self.writer: GroupCommit[AlertMessage, Written] = GroupCommit(self.record_messages)
        # Urgent alerts' messages commit in transactions of their own, beside the others', so
        # one never waits for a large fan-out's planning to commit (PostgreSQL; SQLite has one
        # writer at a time whatever the service does, so there they share the one queue).
        self.urgent_writer = (
            GroupCommit(self.record_messages)
            if ledger.database.dialect == "postgresql"
            else self.writer
        )
        self.limits, self.defaults = intake_rules(settings)

    def parse(self, payload: Payload) -> list[Alert]:
        """The validated alerts in `payload`, or RejectedInput."""
        return decode_alerts(payload.body, payload.content_type, self.limits, self.defaults)

    async def process(
        self,
        payload: Payload,
        submitter: Submitter = SERVICE,
        send_id: str | None = None,
        source: str = "amqp",
    ) -> IntakeResult:
        """Store the payload's alerts and plan their deliveries; `submitter` is who published
        it, as far as the broker vouches (see `submitter_of`); `send_id` names the ad-hoc send
        it was released by, whose audience it is planned for; `source` is the way it came (a
        metrics label)."""
        started = time.perf_counter()
        alerts = self.parse(payload)  # decode, validate, normalize
        parsed = time.perf_counter()
        self.metrics.in_stage("validate", parsed - started)
        # The message's task (the consumer's, one per message) names its alerts from here on.
        structlog.contextvars.bind_contextvars(alert_id=",".join(alert.id for alert in alerts))
        # authority: the sender is the publisher's, and so is the original (as stored now;
        # the transaction checks again if the references resolve to others there: recheck)
        referenced = [await self._referenced(alert) for alert in alerts]
        for alert, stored in zip(alerts, referenced, strict=True):
            check_submission(alert, submitter, [original.sender for original in stored])
        submitted = alerts
        alerts = [  # inherit
            inherited(alert, stored) for alert, stored in zip(alerts, referenced, strict=True)
        ]
        audiences = [await self.sends.audiences_for(alert, send_id) for alert in alerts]
        now = self.clock()
        await failpoint("before_store")
        planned = tuple(  # plan, approval rule
            self._planned(
                alert, now, audience, _against(as_sent, stored, submitter, send_id, audience)
            )
            for alert, audience, as_sent, stored in zip(
                alerts, audiences, submitted, referenced, strict=True
            )
        )
        message = AlertMessage(payload, planned, now, submitter.principal)
        matched = time.perf_counter()
        self.metrics.in_stage("match", matched - parsed)
        writer = self.urgent_writer if any(alert.urgent for alert in alerts) else self.writer
        recorded = await writer.submit(message)  # the transaction: see record_messages
        self.metrics.in_stage("store", time.perf_counter() - matched)
        if isinstance(recorded, RejectedInput):  # recheck: it may not, after all
            raise recorded
        await failpoint("after_store")
        result = IntakeResult()
        for each, outcome in zip(planned, recorded, strict=True):
            final = outcome.replanned or each
            self._count(source, final, outcome.outcome)
            alert = final.alert
            result.outcomes[alert.id] = outcome.outcome
            waiting = result.urgent if alert.urgent else result.pending
            for channel, ids in outcome.pending.items():
                waiting.setdefault(channel, []).extend(ids)
        return result

    def _count(self, source: str, planned: PlannedAlert, outcome: RecordOutcome) -> None:
        kind = planned.alert.kind.value
        self.metrics.alert_received(source, kind, outcome.value)
        if outcome is not RecordOutcome.STORED:
            return
        if planned.hold_rule is not None:
            self.metrics.alert_held(kind)
        if planned.state is AlertState.EXPIRED:
            self.metrics.alert_expired(kind)
        for row in planned.rows:  # withheld at matching: the clearance does not admit it
            if row.state is DeliveryState.WITHHELD:
                self.metrics.delivered(row.channel, "withheld")

    async def _referenced(self, alert: Alert) -> list[Referenced]:
        """The stored alerts an Update or Cancel refers to, as the ledger has them now."""
        if not foreign_senders_possible(alert):
            return []
        return await self.ledger.referenced(alert.references)

    def _planned(
        self,
        alert: Alert,
        now: datetime,
        audiences: Sequence[Audience] | None = None,
        against: PlannedAgainst | None = None,
    ) -> PlannedAlert:
        state = initial_state(alert, now)
        planner = self.ledger.planner
        if state is not AlertState.RECEIVED or planner is None:
            return PlannedAlert(alert, state, against=against)
        hold_rule = self.approval.hold_rule(alert) if self.approval is not None else None
        rows = tuple(planner.plan(alert, audiences))
        return PlannedAlert(alert, state, rows, hold_rule, against)

    async def record_messages(self, messages: Sequence[AlertMessage]) -> list[Written]:
        """Record the alerts of several messages, and their delivery rows, in one transaction
        (one commit for all). The alerts go in order; those without references are stored
        together (`Ledger.store_many`) up to the next alert that has some, which may refer
        to them, so every alert meets the ledger it would meet one by one.

        A message with an Update or Cancel that the transaction refuses (`_rechecked`) comes
        to RejectedInput and none of its alerts is stored; the others are recorded as if it
        had never come. Refused after another of its alerts was stored in the transaction,
        it fails the whole batch, which the group commit then writes again message by
        message (where it alone fails)."""
        recorded: list[list[Recorded]] = [[] for _ in messages]
        refused: dict[int, RejectedInput] = {}
        run: list[tuple[int, PlannedAlert]] = []
        async with self.ledger.database.transaction() as conn:
            for index, message in enumerate(messages):
                for planned in message.alerts:
                    if not planned.alert.references:
                        run.append((index, planned))
                        continue
                    await self._record_run(conn, run, messages, recorded)
                    run = []
                    try:
                        checked, resolved = await self._rechecked(conn, planned, message)
                    except RejectedInput as rejected:
                        if recorded[index]:  # what is stored of it cannot be taken back alone
                            raise
                        refused[index] = rejected
                        break
                    outcome = await self._record(conn, checked, message, resolved)
                    if checked is not planned:
                        outcome = replace(outcome, replanned=checked)
                    recorded[index].append(outcome)
            await self._record_run(conn, run, messages, recorded)
            await failpoint("before_commit")
        return [refused.get(index, each) for index, each in enumerate(recorded)]

    async def _rechecked(
        self, conn: AsyncConnection, planned: PlannedAlert, message: AlertMessage
    ) -> tuple[PlannedAlert, list[list[str]]]:
        """An alert with references, in the transaction that stores it, and what each of its
        references resolves to there: after the alerts before it in this transaction too.
        An Update or Cancel whose references resolve to other stored alerts than when it was
        checked and planned (`PlannedAgainst`: its original came in with it, or was stored
        since) is checked, takes their marks and is planned again, here: RejectedInput if
        its submitter may not update or cancel them."""
        resolved = await resolve_references(conn, planned.alert.references)
        against = planned.against
        found = frozenset(alert_id for ids in resolved for alert_id in ids)
        if against is None or found == against.resolved:
            return planned, resolved
        stored = await referenced_alerts(conn, found)
        check_submission(against.submitted, against.submitter, [each.sender for each in stored])
        alert = inherited(against.submitted, stored)
        audiences = against.send_audiences
        if against.send_id is None:  # that of the ad-hoc alerts it refers to, if any
            audiences = await referenced_audiences(conn, found)
        again = replace(against, resolved=found)
        return self._planned(alert, message.received_at, audiences, again), resolved

    async def _record_run(
        self,
        conn: AsyncConnection,
        run: Sequence[tuple[int, PlannedAlert]],
        messages: Sequence[AlertMessage],
        recorded: list[list[Recorded]],
    ) -> None:
        """Store a run of alerts without references at once, then take each through the
        steps after storing, in order."""
        if not run:
            return
        entries = [
            ToStore(
                planned.alert,
                messages[index].payload,
                self._stored_state(planned),
                messages[index].received_at,
            )
            for index, planned in run
        ]
        outcomes = await self.ledger.store_many(conn, entries)
        for (index, planned), outcome in zip(run, outcomes, strict=True):
            recorded[index].append(await self._after_store(conn, planned, messages[index], outcome))

    def _stored_state(self, planned: PlannedAlert) -> AlertState:
        planning = planned.state is AlertState.RECEIVED and self.ledger.planner is not None
        return AlertState.PLANNED if planning else planned.state

    async def _record(
        self,
        conn: AsyncConnection,
        planned: PlannedAlert,
        message: AlertMessage,
        resolved: Sequence[Sequence[str]] | None = None,
    ) -> Recorded:
        """One alert's steps inside the transaction, in order; `resolved`: what its
        references resolve to (`_rechecked`)."""
        state = self._stored_state(planned)
        outcome = await self.ledger.store(  # dedupe
            conn, planned.alert, message.payload, state, message.received_at
        )
        return await self._after_store(conn, planned, message, outcome, resolved)

    async def _after_store(
        self,
        conn: AsyncConnection,
        planned: PlannedAlert,
        message: AlertMessage,
        outcome: RecordOutcome,
        resolved: Sequence[Sequence[str]] | None = None,
    ) -> Recorded:
        """The steps after storing (or not) one alert, in order."""
        ledger, alert, now = self.ledger, planned.alert, message.received_at
        planner = ledger.planner
        planning = planned.state is AlertState.RECEIVED and planner is not None
        if outcome is RecordOutcome.DUPLICATE:  # a crash may have come before its tasks went
            return Recorded(outcome, await ledger.plans.pending_of(conn, alert.id))
        if outcome is RecordOutcome.CONFLICT:
            return Recorded(outcome)
        known = await ledger.link_references(conn, alert, resolved)  # link references
        rows: list[PlannedRow] | None = None
        if planning and planner is not None:
            rows = await ledger.plans.with_prior_recipients(conn, alert, list(planned.rows), known)
            rows = planner.hold_for_quiet_hours(alert, rows, now)  # quiet hours
            if planned.hold_rule is not None:  # hold for approval
                rows = [held(row) for row in rows]
                await approval.hold(conn, alert.id, planned.hold_rule, message.submitted_by, now)
        # cancel what the originals still owe: whether or not the Cancel itself is sent (one
        # that has expired already is not), unless it is a Draft
        if alert.msg_type is MsgType.CANCEL and known and planned.state is not AlertState.DRAFT:
            await ledger.plans.stop_pending(conn, alert, known, now)
        if rows is None:
            return Recorded(outcome)
        return Recorded(outcome, await ledger.plans.write_rows(conn, alert, rows, now))  # record
