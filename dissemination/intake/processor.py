"""The intake processor: the bytes of one message become validated alerts, which inherit the
marks of what they refer to, are planned, and are stored with their delivery rows through
the group commit. The same path serves AMQP and HTTP ingest; settling the message is the
consumer's (`dissemination.intake.consumer`)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from datetime import datetime

from core.alert import Alert, MsgType, Status, Tlp
from core.clock import Clock, utc_now
from dissemination.controls.approvalrules import ApprovalPolicy
from dissemination.failpoints import failpoint
from dissemination.intake.decoding import DecodeLimits, decode_alerts
from dissemination.intake.normalize import HandlingDefaults
from dissemination.ledger.alerts import (
    AlertMessage,
    Ledger,
    Payload,
    PlannedAlert,
    Recorded,
    RecordOutcome,
)
from dissemination.settings import IntakeSettings
from dissemination.store.groupcommit import GroupCommit
from dissemination.store.rows import AlertState

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class IntakeResult:
    """What one message became: alert ids by what recording them did, and the delivery rows
    waiting to be sent, by channel."""

    outcomes: dict[str, RecordOutcome] = field(default_factory=dict)
    pending: dict[str, list[str]] = field(default_factory=dict)


def initial_state(alert: Alert, now: datetime) -> AlertState:
    """Draft is never disseminated; an alert whose every info block has expired is recorded only."""
    if alert.status is Status.DRAFT:
        return AlertState.DRAFT
    expires = alert.expires
    if expires is not None and expires <= now:
        return AlertState.EXPIRED
    return AlertState.RECEIVED


class IntakeProcessor:
    """Decode, validate, plan and store, whatever way the bytes arrived (AMQP or a test)."""

    def __init__(
        self,
        ledger: Ledger,
        settings: IntakeSettings,
        clock: Clock = utc_now,
        approval: ApprovalPolicy | None = None,
    ) -> None:
        self.ledger = ledger
        self.clock = clock
        self.approval = approval
        self.writer: GroupCommit[AlertMessage, list[Recorded]] = GroupCommit(ledger.record_messages)
        self.limits = DecodeLimits(settings.max_body_bytes, settings.max_json_depth)
        self.defaults = HandlingDefaults(
            Tlp.parse(settings.default_tlp), Tlp.parse(settings.public_scope_tlp)
        )

    def parse(self, payload: Payload) -> list[Alert]:
        """The validated alerts in `payload`, or RejectedInput."""
        return decode_alerts(payload.body, payload.content_type, self.limits, self.defaults)

    async def process(self, payload: Payload, submitted_by: str | None = None) -> IntakeResult:
        """Store the payload's alerts and plan their deliveries; `submitted_by` is who
        published it, as far as it is known (see `submitter_of`)."""
        alerts = [await self._with_inherited_marks(alert) for alert in self.parse(payload)]
        now = self.clock()
        await failpoint("before_store")
        planned = tuple(self._planned(alert, now) for alert in alerts)
        message = AlertMessage(payload, planned, now, submitted_by)
        recorded = await self.writer.submit(message)
        await failpoint("after_store")
        result = IntakeResult()
        for alert, outcome in zip(alerts, recorded, strict=True):
            result.outcomes[alert.id] = outcome.outcome
            for channel, ids in outcome.pending.items():
                result.pending.setdefault(channel, []).extend(ids)
        return result

    async def _with_inherited_marks(self, alert: Alert) -> Alert:
        """An Update or Cancel carries at least the marks of the alerts it refers to (those
        stored): the stricter TLP and every caveat, unless its own are stricter."""
        if alert.msg_type not in (MsgType.UPDATE, MsgType.CANCEL) or not alert.references:
            return alert
        handling = alert.handling
        for original in await self.ledger.marks_of([ref.alert_id for ref in alert.references]):
            handling = handling.at_least(original)
        return alert if handling is alert.handling else replace(alert, handling=handling)

    def _planned(self, alert: Alert, now: datetime) -> PlannedAlert:
        state = initial_state(alert, now)
        planner = self.ledger.planner
        if state is not AlertState.RECEIVED or planner is None:
            return PlannedAlert(alert, state)
        hold_rule = self.approval.hold_rule(alert) if self.approval is not None else None
        return PlannedAlert(alert, state, tuple(planner.plan(alert)), hold_rule)
