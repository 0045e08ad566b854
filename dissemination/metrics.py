"""The service's Prometheus metrics: one registry per service instance (never the process's
default one, so several services in one process count apart), made at start-up and handed to
the parts that count, and the text exposition that `/metrics` serves.

Labels carry only bounded sets (channel, outcome, reason, kind, source, action): never an id,
an address or anything else about a person. A label value from outside such a set is counted
as `other`.

Gauges that need the store or the broker (queue depths, stuck rows, the record's head) are
set by a periodic job (`dissemination.gauges`), so a scrape never waits on either.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from typing import Literal, get_args

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from channels.base import CHANNEL_NAMES
from core.alert import Kind

CONTENT_TYPE = CONTENT_TYPE_LATEST
OTHER = "other"

SOURCES = ("amqp", "http", "cli", "unknown")
"""Where an alert came from: a broker user's own publish, HTTP ingest, the service's own user
without a token (the CLI), or a message that names no broker user."""
RECORD_OUTCOMES = ("stored", "duplicate", "conflict")
DELIVERY_OUTCOMES = (
    "sent",
    "failed",
    "retried",
    "deferred",
    "suppressed",
    "withheld",
    "expired",
    "resent",
)
"""What one delivery attempt became: `retried` a transient failure that will be tried again,
`deferred` a row an open circuit held back (no attempt used), `expired` a row whose alert
expired before it went, `resent` a row stuck in sending and sent again once."""
KINDS = tuple(kind.value for kind in Kind)
ACK_CHANNELS = ("link", "sms", "webhook", "admin")
ESCALATION_ACTIONS = ("resend", "next_channel", "notify")
Stage = Literal["validate", "match", "store", "dispatch", "queued", "claim", "settle"]
STAGES: tuple[Stage, ...] = get_args(Stage)
"""The stages of an alert's way from the inbound queue to a settled delivery, as timed by
`dissemination_stage_seconds` (the send itself is `dissemination_send_seconds`): decoding and
validating a message; the checks, audiences and matching that plan its rows; the intake
transaction (waiting for its group commit included); publishing the delivery tasks; a task
waiting in its queue for a worker; claiming a chunk of rows; settling a wave of outcomes."""

SEND_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
FIRST_DELIVERY_BUCKETS = (
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    120.0,
    300.0,
    600.0,
    1800.0,
    3600.0,
)
STAGE_BUCKETS = (0.0005, 0.001, 0.0025, *SEND_BUCKETS)
"""A send's buckets, and finer ones below: most stages take a few milliseconds."""
_CODE = re.compile(r"[a-z][a-z0-9_]{0,47}")


def bounded(value: str, allowed: Iterable[str]) -> str:
    """`value` if it is one of `allowed`, else `other`."""
    return value if value in allowed else OTHER


def reason_code(value: str) -> str:
    """A rejection reason as a label: the stable lower-case codes pass, anything else (free
    text could quote the input) is `other`."""
    return value if _CODE.fullmatch(value) else OTHER


class _Breakers(Collector):
    """Open circuits per channel, read from the workers' breakers at scrape time (in memory:
    no waiting)."""

    def __init__(self) -> None:
        self.sources: dict[str, Callable[[], int]] = {}

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            "dissemination_breaker_open_hosts",
            "Destination hosts whose circuit is open, per channel (this process)",
            labels=["channel"],
        )
        for channel, open_hosts in sorted(self.sources.items()):
            family.add_metric([channel], open_hosts())
        yield family


class Metrics:
    """Every metric of one service instance, in its own registry."""

    def __init__(self, channels: Iterable[str] = CHANNEL_NAMES) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.channels = tuple(channels)
        r = self.registry
        ProcessCollector(registry=r)
        self.alerts_received = Counter(
            "dissemination_alerts_received",
            "Alerts taken from the inbound queue and recorded, by source, kind and outcome",
            ["source", "kind", "outcome"],
            registry=r,
        )
        self.alerts_rejected = Counter(
            "dissemination_alerts_rejected",
            "Inputs refused (dead-lettered, or 4xx at HTTP ingest), by source and reason",
            ["source", "reason"],
            registry=r,
        )
        self.alerts_held = Counter(
            "dissemination_alerts_held",
            "Alerts held for a second administrator's approval, by kind",
            ["kind"],
            registry=r,
        )
        self.alerts_expired = Counter(
            "dissemination_alerts_expired",
            "Alerts already expired on receipt (recorded, never sent), by kind",
            ["kind"],
            registry=r,
        )
        self.deliveries = Counter(
            "dissemination_deliveries",
            "Delivery outcomes by channel: what each attempt became, and rows withheld "
            "at matching or before a send",
            ["channel", "outcome"],
            registry=r,
        )
        self.send_seconds = Histogram(
            "dissemination_send_seconds",
            "Time one send took on the wire (any outcome), by channel",
            ["channel"],
            buckets=SEND_BUCKETS,
            registry=r,
        )
        self.first_delivery_seconds = Histogram(
            "dissemination_publish_to_first_delivery_seconds",
            "From an alert's receipt to its first delivery sent (on any instance), by the "
            "channel of that delivery",
            ["channel"],
            buckets=FIRST_DELIVERY_BUCKETS,
            registry=r,
        )
        self.stage_seconds = Histogram(
            "dissemination_stage_seconds",
            "Time spent in one stage between the inbound queue and a settled delivery (an "
            "alert's intake stages once per message, the delivery stages once per task, "
            "chunk or wave of rows), by stage",
            ["stage"],
            buckets=STAGE_BUCKETS,
            registry=r,
        )
        self._stages = {stage: self.stage_seconds.labels(stage) for stage in STAGES}
        self.acknowledgments = Counter(
            "dissemination_acknowledgments",
            "Acknowledgments recorded (the first per recipient), by the way they came",
            ["via"],
            registry=r,
        )
        self.escalation_steps = Counter(
            "dissemination_escalation_steps",
            "Escalation steps fired by this instance, by action",
            ["action"],
            registry=r,
        )
        self.inbound_queue = Gauge(
            "dissemination_inbound_queue_messages",
            "Messages waiting on the inbound queue",
            registry=r,
        )
        self.dead_letter_queue = Gauge(
            "dissemination_dead_letter_queue_messages",
            "Messages on the dead-letter queue",
            registry=r,
        )
        self.delivery_queue = Gauge(
            "dissemination_delivery_queue_messages",
            "Delivery tasks waiting on a channel's queue",
            ["channel"],
            registry=r,
        )
        self.pending_rows = Gauge(
            "dissemination_pending_rows",
            "Delivery rows pending in the ledger (due or waiting for a retry), by channel",
            ["channel"],
            registry=r,
        )
        self.stuck_rows = Gauge(
            "dissemination_stuck_rows",
            "Delivery rows in sending for longer than broker.stuck_after_seconds, by channel",
            ["channel"],
            registry=r,
        )
        self.record_entries = Gauge(
            "dissemination_record_entries",
            "Entries in the dissemination record (its head's sequence number)",
            registry=r,
        )
        self.record_verified_seq = Gauge(
            "dissemination_record_verified_seq",
            "Sequence number of the head at the last successful verification of the record",
            registry=r,
        )
        self.record_verified_at = Gauge(
            "dissemination_record_last_verified_timestamp_seconds",
            "Unix time of the last successful verification of the record (0: none yet)",
            registry=r,
        )
        self.record_verification_failures = Counter(
            "dissemination_record_verification_failures",
            "Verifications of the record that found it broken",
            registry=r,
        )
        self.gauges_refreshed_at = Gauge(
            "dissemination_gauges_refreshed_timestamp_seconds",
            "Unix time the queue, row and record gauges were last refreshed",
            registry=r,
        )
        self._breakers = _Breakers()
        r.register(self._breakers)
        self._start_at_zero()

    def _start_at_zero(self) -> None:
        """Every bounded series exists from the start, so rates and ratios see their zero."""
        for channel in self.channels:
            for outcome in DELIVERY_OUTCOMES:
                self.deliveries.labels(channel, outcome)
            self.send_seconds.labels(channel)
            self.first_delivery_seconds.labels(channel)
        for ack_channel in ACK_CHANNELS:
            self.acknowledgments.labels(ack_channel)
        for action in ESCALATION_ACTIONS:
            self.escalation_steps.labels(action)

    # What the parts count.

    def alert_received(self, source: str, kind: str, outcome: str) -> None:
        self.alerts_received.labels(
            bounded(source, SOURCES), bounded(kind, KINDS), bounded(outcome, RECORD_OUTCOMES)
        ).inc()

    def alert_rejected(self, source: str, reason: str) -> None:
        self.alerts_rejected.labels(bounded(source, SOURCES), reason_code(reason)).inc()

    def alert_held(self, kind: str) -> None:
        self.alerts_held.labels(bounded(kind, KINDS)).inc()

    def alert_expired(self, kind: str) -> None:
        self.alerts_expired.labels(bounded(kind, KINDS)).inc()

    def delivered(self, channel: str, outcome: str, count: int = 1) -> None:
        if count:
            self.deliveries.labels(
                bounded(channel, CHANNEL_NAMES), bounded(outcome, DELIVERY_OUTCOMES)
            ).inc(count)

    def sent_in(self, channel: str, seconds: float) -> None:
        self.send_seconds.labels(bounded(channel, CHANNEL_NAMES)).observe(seconds)

    def first_delivery(self, channel: str, seconds: float) -> None:
        self.first_delivery_seconds.labels(bounded(channel, CHANNEL_NAMES)).observe(
            max(0.0, seconds)
        )

    def in_stage(self, stage: Stage, seconds: float) -> None:
        """One pass through `stage` took `seconds`."""
        self._stages[stage].observe(max(0.0, seconds))

    def acknowledged(self, channel: str) -> None:
        self.acknowledgments.labels(bounded(channel, ACK_CHANNELS)).inc()

    def escalation_step(self, action: str) -> None:
        self.escalation_steps.labels(bounded(action, ESCALATION_ACTIONS)).inc()

    def watch_breakers(self, channel: str, open_hosts: Callable[[], int]) -> None:
        """Report `open_hosts()` as the channel's open circuits at every scrape."""
        self._breakers.sources[bounded(channel, CHANNEL_NAMES)] = open_hosts

    def record_verified(self, seq: int, at: datetime) -> None:
        """A verification of the record found it intact up to entry `seq`: the scheduled
        verifier (or anything else that verifies in this process) calls this."""
        self.record_verified_seq.set(seq)
        self.record_verified_at.set(at.timestamp())

    def record_verification_failed(self) -> None:
        """A verification found the record broken."""
        self.record_verification_failures.inc()

    def exposition(self) -> bytes:
        """The registry in Prometheus' text format."""
        return generate_latest(self.registry)
