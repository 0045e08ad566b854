"""Delivery planning: which ledger rows an alert gets. The matcher's targets become `pending`
rows and its withheld targets `withheld` rows (with the reason).

An Update or Cancel also reaches everyone the alert it refers to reached: the recipients of
its rows that were sent or delivered (read by `PlanRows.with_prior_recipients`), from the
ledger, even if rules changed since. Each is checked again as matching would check them now:
the message's status must be one they take (`status_allowed`: Actual always; Test, Exercise
or System only through a subscription of theirs that still opts into exercises, or an ad-hoc
send's audience), else they get no row; the stakeholder and the contact the alert reached must
still be active, and their clearance must admit the new message's marks, else the row is
withheld with the reason.

An ad-hoc alert (an analyst's send) is planned for its named audience instead of the standing
subscriptions (`subscriptions.audience`); its rows have origin `audience`."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

from core.alert import Alert, MsgType
from dissemination.store.rows import DeliveryState, PlannedRow, RowOrigin
from subscriptions.audience import Audience
from subscriptions.clearance import withheld_reason
from subscriptions.matcher import (
    NO_CONTACT,
    STAKEHOLDER_INACTIVE,
    Matcher,
    MatchResult,
    status_allowed,
)
from subscriptions.model import Channel
from subscriptions.quiethours import overrides_quiet_hours, quiet_until


def rows_from_match(result: MatchResult, origin: RowOrigin = RowOrigin.MATCH) -> list[PlannedRow]:
    rows = [
        PlannedRow(
            stakeholder_id=t.stakeholder_id,
            subscription_id=t.subscription_id,
            contact_id=t.contact_id,
            channel=t.channel.value,
            address=t.address,
            state=DeliveryState.PENDING,
            fallback_channels=tuple(c.value for c in t.fallback_channels),
            ack_required=t.ack_required,
            subscriptions=t.matched_subscription_ids,
            origin=origin,
        )
        for t in result.targets
    ]
    rows += [
        PlannedRow(
            stakeholder_id=w.stakeholder_id,
            subscription_id=w.subscription_id,
            contact_id=w.contact_id,
            channel=w.channel.value if w.channel else "",
            address=w.address or "",
            state=DeliveryState.WITHHELD,
            reason=w.reason,
            detail=w.detail,
            subscriptions=(w.subscription_id,),
            origin=origin,
        )
        for w in result.withheld
    ]
    return rows


class Planner:
    """Plans delivery rows for alerts with the process's shared matcher."""

    def __init__(self, matcher: Matcher) -> None:
        self.matcher = matcher

    def plan(self, alert: Alert, audiences: Sequence[Audience] | None = None) -> list[PlannedRow]:
        """Rows for the alert's current matches, or with `audiences` (an ad-hoc alert) for
        exactly their members (pure; no I/O)."""
        if audiences is None:
            return rows_from_match(self.matcher.match(alert))
        return rows_from_match(self.matcher.match_audience(alert, audiences), RowOrigin.AUDIENCE)

    @staticmethod
    def follows_references(alert: Alert) -> bool:
        return alert.msg_type in (MsgType.UPDATE, MsgType.CANCEL) and bool(alert.references)

    def add_prior_recipients(
        self, alert: Alert, planned: list[PlannedRow], prior: Iterable[Mapping[Any, Any]]
    ) -> list[PlannedRow]:
        """`planned` plus a row for each earlier recipient of a referenced alert (`prior`: its
        rows that reached someone) that is not already planned: none if this message's status
        is not one they take, withheld if the stakeholder or the contact is no longer active or
        the clearance no longer admits this message's marks."""
        rows = list(planned)
        seen = {row.key() for row in rows}
        for earlier in prior:
            row = self._prior_row(alert, earlier)
            if row is None or row.key() in seen:
                continue
            seen.add(row.key())
            rows.append(row)
        return rows

    def hold_for_quiet_hours(
        self, alert: Alert, rows: list[PlannedRow], now: datetime
    ) -> list[PlannedRow]:
        """Pending rows of stakeholders inside their quiet hours wait until the window ends,
        unless the alert is severe or urgent enough to override it."""
        if overrides_quiet_hours(alert):
            return rows
        held = []
        for row in rows:
            stakeholder = self.matcher.stakeholder(row.stakeholder_id)
            until = None
            if row.state is DeliveryState.PENDING and stakeholder is not None:
                until = quiet_until(stakeholder.quiet_hours, stakeholder.timezone, now)
            held.append(replace(row, not_before=until, reason="quiet_hours") if until else row)
        return held

    def _prior_row(self, alert: Alert, earlier: Mapping[str, Any]) -> PlannedRow | None:
        """The row of one earlier recipient, or None if this message's status is not one they
        take. It goes to the contact the earlier row reached, at that contact's address now."""
        if not self._takes_status(alert, earlier):
            return None
        stakeholder_id = earlier["stakeholder_id"]
        stakeholder = self.matcher.stakeholder(stakeholder_id)
        contact = self.matcher.contact(earlier["contact_id"]) if earlier["contact_id"] else None
        address = earlier["address"]
        reason = detail = None
        if stakeholder is None or not stakeholder.active:
            reason, detail = STAKEHOLDER_INACTIVE, "the stakeholder was removed or deactivated"
        elif (
            contact is None
            or not contact.active
            or contact.stakeholder_id != stakeholder_id
            or contact.channel != Channel(earlier["channel"])
        ):
            reason, detail = NO_CONTACT, "the contact the alert reached was removed or deactivated"
        else:
            address = contact.address
            refused = withheld_reason(alert.handling, stakeholder, contact.channel)
            if refused is not None:
                reason, detail = refused.code.value, refused.detail
        return PlannedRow(
            stakeholder_id=stakeholder_id,
            subscription_id=earlier["subscription_id"],
            contact_id=earlier["contact_id"],
            channel=earlier["channel"],
            address=address,
            state=DeliveryState.WITHHELD if reason else DeliveryState.PENDING,
            reason=reason,
            detail=detail,
            fallback_channels=tuple(earlier["fallback_channels"] or ()),
            ack_required=bool(earlier["ack_required"]),
            subscriptions=tuple(earlier["subscriptions"] or ()),
            origin=RowOrigin.REFERENCED,
        )

    def _takes_status(self, alert: Alert, earlier: Mapping[str, Any]) -> bool:
        """Whether an earlier recipient takes a message of this status, by the rule matching
        applies (`status_allowed`): Actual always; otherwise an ad-hoc send's audience (which
        takes exercises), or a subscription of theirs that is enabled and opts in now."""
        if status_allowed(alert.status, include_exercises=False):
            return True
        if earlier["origin"] == RowOrigin.AUDIENCE.value:
            return status_allowed(alert.status, include_exercises=True)
        names = {earlier["subscription_id"], *(earlier["subscriptions"] or ())} - {None}
        opted = any(self._opts_into_exercises(name, earlier["stakeholder_id"]) for name in names)
        return status_allowed(alert.status, opted)

    def _opts_into_exercises(self, subscription_id: str, stakeholder_id: str) -> bool:
        subscription = self.matcher.subscription(subscription_id)
        return (
            subscription is not None
            and subscription.enabled
            and subscription.include_exercises
            and subscription.stakeholder_id == stakeholder_id
        )
