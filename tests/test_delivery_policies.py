"""The pure policies behind delivery: the retry schedule (backoff, jitter, Retry-After,
tiers), the per-host circuit breaker, and quiet hours."""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import UTC, datetime, time, timedelta

import pytest

from channels.webhook import WebhookChannel
from channels.webhookbody import alert_body
from dissemination.acks.tokens import AckSigner
from dissemination.delivery.breaker import CircuitBreakers
from dissemination.delivery.messages import AckLinks, MessageBuilder
from dissemination.retrying import Backoff, RetrySchedule, backoff_delay
from subscriptions.model import QuietHours
from subscriptions.quiethours import quiet_until
from testbed.webhooks import assert_contract
from tests.claimedrows import claimed_row
from tests.webhookrig import ALERT

T0 = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


def high(low: float, top: float) -> float:
    return top


def low(low: float, top: float) -> float:
    return low


def test_backoff_doubles_per_attempt_up_to_the_cap_with_jitter_in_the_upper_half() -> None:
    schedule = RetrySchedule(30, 3600, 10)
    assert [schedule.delay(n, uniform=high) for n in range(1, 10)] == [
        30,
        60,
        120,
        240,
        480,
        960,
        1920,
        3600,
        3600,
    ]
    assert schedule.delay(3, uniform=low) == 60
    delays = {schedule.delay(3) for _ in range(50)}
    assert all(60 <= d <= 120 for d in delays)
    assert len(delays) > 1  # jitter spreads retries of a fan-out


def test_a_run_of_failures_however_long_stays_at_the_cap() -> None:
    # a long store outage counts every held try: the doubling overflowed a float past ~1,025
    assert backoff_delay(100_000, 0.5, 30.0, uniform=high) == 30.0
    backoff = Backoff(0.5, 30.0)
    for _ in range(5_000):
        delay = backoff.next_delay()
    assert 15.0 <= delay <= 30.0


def test_the_jitter_leaves_the_random_modules_generator_alone() -> None:
    # Property-based tests seed and watch that generator: a service running beside them
    # (the conformance test's) must not move it.
    state = random.getstate()
    for attempt in range(1, 20):
        RetrySchedule(30, 3600, 10).delay(attempt)
    assert random.getstate() == state


def test_retry_after_is_honoured_when_longer_than_the_backoff() -> None:
    schedule = RetrySchedule(30, 3600, 10)
    assert schedule.delay(1, retry_after=300, uniform=high) == 300
    assert schedule.delay(4, retry_after=5, uniform=high) == 240
    assert schedule.delay(1, retry_after=7200, uniform=high) == 3600  # no longer than the cap


def test_tiers_grow_by_four_and_end_at_the_cap() -> None:
    schedule = RetrySchedule(30, 3600, 5)
    assert schedule.tiers() == (30, 120, 480, 1920, 3600)
    assert schedule.tier_for(0) == 30
    assert schedule.tier_for(31) == 120
    assert schedule.tier_for(3600) == 3600
    assert schedule.tier_for(86400) == 3600  # comes back early and is delayed again
    assert schedule.gives_up_after(5)
    assert not schedule.gives_up_after(4)


def test_circuit_opens_after_consecutive_failures_and_lets_one_trial_through() -> None:
    breakers = CircuitBreakers(failures=3, cooldown_seconds=30)
    for _ in range(2):
        assert breakers.allow("a", T0)
        breakers.record("a", failed=True, now=T0)
    breakers.record("a", failed=True, now=T0)
    assert not breakers.allow("a", T0 + timedelta(seconds=29))
    assert breakers.allow("b", T0)  # other hosts are unaffected
    assert breakers.retry_at("a", T0) == T0 + timedelta(seconds=30)
    later = T0 + timedelta(seconds=30)
    assert breakers.allow("a", later)  # the one trial
    assert not breakers.allow("a", later)  # no second trial while it is in flight
    breakers.record("a", failed=True, now=later)
    assert not breakers.allow("a", later + timedelta(seconds=29))
    assert breakers.allow("a", later + timedelta(seconds=30))
    breakers.record("a", failed=False, now=later + timedelta(seconds=30))
    assert not breakers.is_open("a")
    assert breakers.allow("a", later + timedelta(seconds=30))


def test_a_success_resets_the_failure_count() -> None:
    breakers = CircuitBreakers(failures=2, cooldown_seconds=30)
    breakers.record("a", failed=True, now=T0)
    breakers.record("a", failed=False, now=T0)
    breakers.record("a", failed=True, now=T0)
    assert breakers.allow("a", T0)


@pytest.mark.parametrize(
    ("start", "end", "now_utc", "expected_utc"),
    [
        # New York is UTC-5 on 2026-11-24: 22:00-06:00 local is 03:00-11:00 UTC.
        (time(22), time(6), datetime(2026, 11, 24, 4, 0), datetime(2026, 11, 24, 11, 0)),
        (time(22), time(6), datetime(2026, 11, 25, 3, 30), datetime(2026, 11, 25, 11, 0)),
        (time(22), time(6), datetime(2026, 11, 24, 12, 0), None),
        (time(22), time(6), datetime(2026, 11, 24, 11, 0), None),  # the end is outside
        (time(12), time(14), datetime(2026, 11, 24, 17, 30), datetime(2026, 11, 24, 19, 0)),
        (time(12), time(12), datetime(2026, 11, 24, 17, 0), None),
    ],
)
def test_quiet_hours_in_the_stakeholders_time_zone(
    start: time, end: time, now_utc: datetime, expected_utc: datetime | None
) -> None:
    until = quiet_until(QuietHours(start, end), "America/New_York", now_utc.replace(tzinfo=UTC))
    assert until == (expected_utc.replace(tzinfo=UTC) if expected_utc else None)


def test_no_quiet_hours_or_an_unknown_zone() -> None:
    assert quiet_until(None, "UTC", T0) is None
    assert quiet_until(QuietHours(time(11), time(13)), "Nowhere/Atlantis", T0) == T0.replace(
        hour=13
    )


@pytest.mark.parametrize("owes_ack", [False, True])
def test_the_cached_webhook_body_is_exactly_the_plain_serialization(owes_ack: bool) -> None:
    builder = MessageBuilder(AckLinks(AckSigner(("k" * 32,)), "https://alerts.example.org"))
    channel = WebhookChannel(())
    info = ALERT["infos"][0] | {"headline": 'quote " and \\u2028 and ü', "instruction": None}
    document = ALERT | {"infos": [info]}
    for row_id in ("row-1", 'row-"2"'):
        row = claimed_row(id=row_id, alert_id=document["id"], document=document)
        if owes_ack:
            row = replace(row, ack_token_id="ab" * 16, ack_code="0042", ack_expires_at=T0)
        message = builder.build(row)
        assert channel.body(message) == alert_body(message)
        body = assert_contract(channel.body(message))
        assert body["alert"]["infos"][0]["headline"] == 'quote " and \\u2028 and ü'
        assert body["deliveryId"] == row_id
        assert ("ack" in body) is owes_ack
        if owes_ack:
            assert body["ack"]["url"] == "https://alerts.example.org/ack/" + body["ack"]["token"]
