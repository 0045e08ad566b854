"""How a send's result becomes its row's settlement (sent, retried after the schedule's
delay, suppressed, failed with a fall-back), and how settlements are logged and counted."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime, timedelta

import structlog

from channels.base import Outcome, SendResult
from core.masking import mask_text
from dissemination.delivery.claims import Settlement
from dissemination.retrying import RetrySchedule
from dissemination.store.rows import ClaimedRow, DeliveryState

log = structlog.stdlib.get_logger(__name__)


def settlement(
    row: ClaimedRow, result: SendResult, now: datetime, schedule: RetrySchedule
) -> Settlement:
    """How `row` ends after `result`, a transient failure retried on `schedule`; should that
    itself fail (a bug, or a provider's value no check foresaw), the row fails with the
    reason rather than the task."""
    try:
        return _settlement_of(row, result, now, schedule)
    except Exception as error:
        log.exception("outcome_not_recorded", outcome=result.outcome.value)
        reason = (
            f"internal error recording the outcome ({result.outcome.value}: "
            f"{result.detail}): {type(error).__name__}"
        )
        return Settlement(row, DeliveryState.FAILED, reason, fall_back=True)


def _settlement_of(
    row: ClaimedRow, result: SendResult, now: datetime, schedule: RetrySchedule
) -> Settlement:
    if result.outcome is Outcome.SENT:
        return Settlement(
            row,
            DeliveryState.SENT,
            result.detail,
            result.provider_id,
            content_sha256=result.content_sha256,
        )
    if result.outcome is Outcome.TRANSIENT and not schedule.gives_up_after(row.attempts):
        delay = schedule.delay(row.attempts, result.retry_after_seconds)
        return Settlement(
            row,
            DeliveryState.PENDING,
            result.detail,
            not_before=now + timedelta(seconds=delay),
        )
    if result.opted_out:
        return Settlement(row, DeliveryState.SUPPRESSED, result.detail, fall_back=True)
    reason = result.detail
    if result.outcome is Outcome.TRANSIENT:
        reason = f"gave up after {row.attempts} attempts: {reason}"
    return Settlement(
        row,
        DeliveryState.FAILED,
        reason,
        fall_back=True,
        disable_contact=result.disable_address,
    )


def log_settled(settlements: Sequence[Settlement]) -> None:
    """One line per recorded outcome, with its reason (the row's own address masked out: a
    provider may quote it): a failure or a retry at WARNING, a send at DEBUG (the task's line
    counts them), a deferral behind an open circuit, a withholding or a suppression at INFO."""
    debug = log.isEnabledFor(logging.DEBUG)  # once per wave: sends are the many
    for s in settlements:
        if s.state is DeliveryState.SENT and not debug:
            continue
        row = s.row
        fields = {"alert_id": row.alert_id, "delivery_id": row.id, "channel": row.channel}
        reason = mask_text(s.reason, row.address) if s.reason else s.reason
        if s.state is DeliveryState.FAILED:
            log.warning("send_failed", **fields, attempts=row.attempts, reason=reason)
        elif s.state is DeliveryState.PENDING and s.uncount_attempt:
            log.info("send_deferred", **fields, until=_iso(s.not_before), reason=reason)
        elif s.state is DeliveryState.PENDING:
            log.warning(
                "send_retry", **fields, attempts=row.attempts, at=_iso(s.not_before), reason=reason
            )
        elif s.state is DeliveryState.SENT:
            log.debug("send_sent", **fields, provider_id=s.provider_id)
        else:  # withheld at send time, or suppressed (opted out)
            log.info(f"send_{s.state.value}", **fields, reason=reason)


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


def outcome_label(settlement: Settlement) -> str:
    """What an attempt became, as the deliveries metric counts it."""
    if settlement.state is DeliveryState.PENDING:
        return "deferred" if settlement.uncount_attempt else "retried"
    return settlement.state.value
