"""Prometheus metrics end to end: an alert fanned out through the real broker to loopback
webhook receivers is counted in GET /metrics (received, deliveries by outcome, send latency,
publish to first delivery, queue and row gauges, the record); rejections by reason; a
delivery-only process on a metrics port of its own; no id, address or secret in the output;
and every metric the Grafana dashboard and the alerting rules use is one the service
exports."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from typing import Any

import aiohttp
import pytest
import yaml
from aio_pika.abc import AbstractChannel
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from core.errors import RejectedInput
from dissemination.api.tokens import Role, TokenStore
from dissemination.ledger.alerts import Payload
from dissemination.metrics import Metrics
from dissemination.service import Service
from dissemination.settings import Settings, load_settings
from testbed.alerts import cap_json
from testbed.ports import free_port
from tests.brokerutil import open_connection, publish, wait_until
from tests.deliveryrig import (  # noqa: F401 (fixtures)
    Sinks,
    StartService,
    custom_service_fixture,
    delivery_env,
    publish_alert,
    settled,
    sinks_fixture,
)
from tests.people import enrol

pytestmark = pytest.mark.slow

RECEIVERS = ("ok-a", "ok-b", "ok-c", "flaky")
"""Webhook receivers: three answer 200, one 503 once and then 200 (one retry)."""
UNCLEARED = "ok-uncleared"
"""A receiver whose stakeholder is cleared for TLP:CLEAR only: the GREEN alert is withheld."""


def samples(text: str) -> list[Sample]:
    return [s for family in text_string_to_metric_families(text) for s in family.samples]


def value(text: str, name: str, **labels: str) -> float:
    """The sum of the samples called `name` whose labels include `labels`."""
    found = [
        s.value
        for s in samples(text)
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    ]
    assert found, f"no sample {name}{labels}"
    return sum(found)


async def scrape(url: str) -> str:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain; version=")
        return await response.text()


def base_url(service: Service) -> str:
    host, port = service.http.addresses[0][:2]
    return f"http://{host}:{port}"


@dataclass
class FanOut:
    service: Service
    settings: Settings
    channel: AbstractChannel
    alert_id: str
    addresses: list[str]
    secrets: list[str]
    stakeholder_ids: list[str]


@pytest.fixture(name="fanned_out")
async def fanned_out_fixture(custom_service: StartService, sinks: Sinks) -> FanOut:
    """One alert delivered to four webhook receivers through the real broker."""
    service, settings, channel = await custom_service()
    addresses, secrets, ids = [], [], []
    for name in RECEIVERS:
        address = sinks.hooks.base + name
        enrolled = await enrol(service, f"Person {name}", {"webhook": address})
        addresses.append(address)
        secrets.append(enrolled.secrets["webhook"])
        ids.append(enrolled.id)
    uncleared = await enrol(
        service, "Uncleared", {"webhook": sinks.hooks.base + UNCLEARED}, max_tlp="CLEAR"
    )
    addresses.append(sinks.hooks.base + UNCLEARED)
    ids.append(uncleared.id)
    alert_id = await publish_alert(channel, settings, "METRICS-1")
    rows = await settled(service, alert_id, len(RECEIVERS) + 1)
    assert sorted(row["state"] for row in rows) == ["sent"] * len(RECEIVERS) + ["withheld"]
    return FanOut(service, settings, channel, alert_id, addresses, secrets, ids)


async def test_a_fan_out_is_counted(fanned_out: FanOut) -> None:
    service = fanned_out.service
    assert service.gauges is not None
    await service.gauges.refresh()
    text = await scrape(base_url(service) + "/metrics")
    n = len(RECEIVERS)

    received = "dissemination_alerts_received_total"
    assert value(text, received, source="cli", kind="cap", outcome="stored") == 1
    assert value(text, received) == 1
    deliveries = "dissemination_deliveries_total"
    assert value(text, deliveries, channel="webhook", outcome="sent") == n
    assert value(text, deliveries, channel="webhook", outcome="retried") == 1
    assert value(text, deliveries, channel="webhook", outcome="failed") == 0
    assert value(text, deliveries, channel="webhook", outcome="withheld") == 1
    assert value(text, deliveries, channel="email", outcome="sent") == 0
    assert value(text, "dissemination_send_seconds_count", channel="webhook") == n + 1
    assert value(text, "dissemination_send_seconds_sum", channel="webhook") > 0
    first = "dissemination_publish_to_first_delivery_seconds"
    assert value(text, first + "_count") == 1  # one alert, whichever row went first
    assert value(text, first + "_count", channel="webhook") == 1
    assert value(text, first + "_sum") >= 0
    assert value(text, "dissemination_breaker_open_hosts", channel="webhook") == 0
    stage = "dissemination_stage_seconds"
    for name in ("validate", "match", "store", "dispatch"):  # the one message's intake
        assert value(text, stage + "_count", stage=name) == 1
    # one task published for the four rows due now (the retry comes back through a retry
    # queue, unstamped); its chunk claimed, then the retry's; the settles, in waves
    assert value(text, stage + "_count", stage="queued") == 1
    assert value(text, stage + "_count", stage="claim") == 2
    assert value(text, stage + "_count", stage="settle") >= 2
    assert value(text, stage + "_sum") > 0
    # the gauges the periodic job refreshed
    assert value(text, "dissemination_pending_rows", channel="webhook") == 0
    assert value(text, "dissemination_stuck_rows", channel="webhook") == 0
    assert value(text, "dissemination_delivery_queue_messages", channel="webhook") == 0
    assert value(text, "dissemination_inbound_queue_messages") == 0
    assert value(text, "dissemination_dead_letter_queue_messages") == 0
    assert value(text, "dissemination_record_entries") == n + 1  # releases and the withholding
    assert value(text, "dissemination_gauges_refreshed_timestamp_seconds") > 0


async def test_the_output_names_no_one(fanned_out: FanOut) -> None:
    """Labels are bounded sets: no alert id, identifier, sender, address, stakeholder id or
    webhook secret appears in the exposition."""
    text = await scrape(base_url(fanned_out.service) + "/metrics")
    document = cap_json("METRICS-1")
    forbidden = [
        fanned_out.alert_id,
        "METRICS-1",
        document["sender"],
        "127.0.0.1",
        *fanned_out.addresses,
        *RECEIVERS,
        UNCLEARED,
        *fanned_out.secrets,
        *fanned_out.stakeholder_ids,
    ]
    for needle in forbidden:
        assert needle not in text
    labels = {k: v for s in samples(text) for k, v in s.labels.items()}
    assert set(labels) <= {
        "source",
        "kind",
        "outcome",
        "reason",
        "channel",
        "action",
        "via",
        "stage",
        "le",
    }


async def test_rejections_are_counted_by_reason(fanned_out: FanOut) -> None:
    service, settings = fanned_out.service, fanned_out.settings
    bodies = [b"{not json", json.dumps({"kind": "sar"}).encode(), b"{not json"]
    reasons = []
    for body in bodies:
        with pytest.raises(RejectedInput) as rejected:
            service.consumer.processor.parse(Payload(body, "application/json"))
        reasons.append(rejected.value.reason)
        await publish(fanned_out.channel, settings, body)
    assert len(set(reasons)) == 2
    url = base_url(service) + "/metrics"
    name = "dissemination_alerts_rejected_total"

    async def counted() -> bool:
        text = await scrape(url)
        return any(s.name == name and s.value == 2 for s in samples(text))

    await wait_until(counted, timeout=15, what="two rejections of one reason")
    text = await scrape(url)
    assert value(text, name, source="cli", reason=reasons[0]) == 2
    assert value(text, name, source="cli", reason=reasons[1]) == 1
    assert value(text, name) == 3

    # HTTP ingest refuses before publishing: counted once, with source http
    _info, secret = await TokenStore(service.database).create(
        "metrics-test", Role.PUBLISHER, datetime.now(UTC), ["anyone"]
    )
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            base_url(service) + "/api/v1/alerts",
            data=b"{not json",
            headers={"Authorization": f"Bearer {secret}", "Content-Type": "application/json"},
        ) as response,
    ):
        assert response.status == 400
    text = await scrape(url)
    assert value(text, name, source="http", reason=reasons[0]) == 1
    assert secret not in text


async def test_acknowledgments_are_counted_once(custom_service: StartService, sinks: Sinks) -> None:
    service, settings, channel = await custom_service()
    await enrol(service, "Ops desk", {"webhook": sinks.hooks.base + "ok"}, ack_required=True)
    alert_id = await publish_alert(channel, settings, "METRICS-ACK")
    await settled(service, alert_id, 1)
    body = json.loads(sinks.hooks.requests[-1][1])
    token = body["ack"]["token"]
    async with aiohttp.ClientSession() as session:
        for expected in (201, 200):  # the second is the same acknowledgment again
            async with session.post(
                base_url(service) + "/api/v1/acks", json={"token": token}
            ) as response:
                assert response.status == expected
    text = await scrape(base_url(service) + "/metrics")
    assert value(text, "dissemination_acknowledgments_total", via="webhook") == 1
    assert value(text, "dissemination_acknowledgments_total") == 1
    assert token not in text


@pytest.fixture(name="split")
async def split_fixture(
    service_env: dict[str, str], sinks: Sinks
) -> AsyncIterator[tuple[Service, Service, AbstractChannel, Settings]]:
    """A full service that delivers no webhooks, and a `--only webhook` process beside it
    with a metrics port of its own."""
    env = delivery_env(service_env, sinks)
    front_settings = load_settings(env | {"DISSEMINATION_DELIVERY_CHANNELS": "email,sms"})
    worker_settings = load_settings(env | {"DISSEMINATION_METRICS_PORT": str(free_port())})
    front = Service(front_settings)
    worker = Service(worker_settings, only=("webhook",))
    await front.start()
    try:
        await worker.start()
        try:
            connection = await open_connection(front_settings)
            yield front, worker, await connection.channel(publisher_confirms=True), worker_settings
            await connection.close()
        finally:
            await worker.stop()
    finally:
        await front.stop()


async def test_a_delivery_only_process_has_its_own_metrics_port(
    split: tuple[Service, Service, AbstractChannel, Settings],
    sinks: Sinks,
) -> None:
    front, worker, channel, settings = split
    for name in ("ok-a", "ok-b"):
        await enrol(front, f"Person {name}", {"webhook": sinks.hooks.base + name})
    alert_id = await publish_alert(channel, settings, "METRICS-ONLY")
    await settled(front, alert_id, 2)
    assert worker.gauges is not None
    await worker.gauges.refresh()

    own = await scrape(f"http://127.0.0.1:{settings.metrics.port}/metrics")
    assert value(own, "dissemination_deliveries_total", channel="webhook", outcome="sent") == 2
    assert value(own, "dissemination_send_seconds_count", channel="webhook") == 2
    assert value(own, "dissemination_stuck_rows", channel="webhook") == 0
    assert "dissemination_alerts_received_total" not in {s.name for s in samples(own)}
    assert not any(s.labels.get("channel") == "email" for s in samples(own))

    full = await scrape(base_url(front) + "/metrics")
    assert value(full, "dissemination_alerts_received_total", outcome="stored") == 1
    assert not any(s.labels.get("channel") == "webhook" for s in samples(full))


async def test_the_metrics_port_closes_with_the_service(
    service_env: dict[str, str],
) -> None:
    port = free_port()
    settings = load_settings(
        service_env
        | {"DISSEMINATION_METRICS_PORT": str(port), "DISSEMINATION_DELIVERY_CHANNELS": "webhook"}
    )
    worker = Service(settings, only=("webhook",))
    await worker.start()
    try:
        assert "dissemination_deliveries_total" in await scrape(f"http://127.0.0.1:{port}/metrics")
    finally:
        await worker.stop()
    with pytest.raises(aiohttp.ClientConnectionError):
        await scrape(f"http://127.0.0.1:{port}/metrics")


async def test_a_service_stopped_while_reading_its_gauges_stops_promptly(
    settings: Settings,
) -> None:
    """The first refresh runs as the service starts; stopping then cancels it mid-call. Its
    AMQP calls are on a channel of its own, so the consumers' channels still answer."""
    for _ in range(3):
        service = Service(settings)
        await service.start()
        await asyncio.wait_for(service.stop(), timeout=20)


def test_two_instances_count_apart() -> None:
    one, two = Metrics(), Metrics()
    one.delivered("webhook", "sent", 3)
    assert "dissemination_deliveries_total" in one.exposition().decode()
    assert value(one.exposition().decode(), "dissemination_deliveries_total", outcome="sent") == 3
    assert value(two.exposition().decode(), "dissemination_deliveries_total", outcome="sent") == 0


def test_label_values_outside_their_sets_are_other() -> None:
    metrics = Metrics()
    metrics.alert_rejected("amqp", "Bad input from alice@example.org")
    metrics.delivered("pigeon", "sent")
    metrics.acknowledged("fax")
    text = metrics.exposition().decode()
    assert "alice" not in text
    assert value(text, "dissemination_alerts_rejected_total", reason="other") == 1
    assert value(text, "dissemination_deliveries_total", channel="other") == 1
    assert value(text, "dissemination_acknowledgments_total", via="other") == 1


def test_record_verification_is_reported() -> None:
    metrics = Metrics()
    at = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
    metrics.record_verified(41, at)
    metrics.record_verification_failed()
    text = metrics.exposition().decode()
    assert value(text, "dissemination_record_verified_seq") == 41
    assert value(text, "dissemination_record_last_verified_timestamp_seconds") == at.timestamp()
    assert value(text, "dissemination_record_verification_failures_total") == 1


# The dashboard and the alerting rules.

PROMQL_WORDS = {
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "and",
    "or",
    "unless",
    "offset",
    "inf",
    "nan",
}
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^}]*\}")
_RANGE = re.compile(r"\[[^\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENTIFIER = re.compile(r"(?<![\w:.])([a-zA-Z_:][a-zA-Z0-9_:]*)(?![\w:])(?!\s*\()")
SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("_sum", "_count", "_created"),
    "gauge": ("",),
    "info": ("_info",),
}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects: what is left after removing strings,
    label matchers, range selectors and grouping clauses, that is not a function (followed
    by a parenthesis), a keyword or a number."""
    bare = _STRING.sub(" ", expr)
    bare = _MATCHERS.sub(" ", bare)
    bare = _RANGE.sub(" ", bare)
    bare = _GROUPING.sub(" ", bare)
    return {name for name in _IDENTIFIER.findall(bare) if name.lower() not in PROMQL_WORDS}


def exposed_names(metrics: Metrics) -> set[str]:
    """Every sample name the registry exposes, as prometheus-client suffixes them."""
    names = set()
    for family in metrics.registry.collect():
        names |= {family.name + suffix for suffix in SUFFIXES.get(family.type, ("",))}
        names |= {sample.name for sample in family.samples}
    return names


def dashboard_expressions() -> list[str]:
    text = resources.files("config").joinpath("grafana-dashboard.json").read_text("utf-8")
    dashboard = json.loads(text)
    return [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]


def rules() -> list[dict[str, Any]]:
    text = resources.files("config").joinpath("prometheus-rules.yml").read_text("utf-8")
    document = yaml.safe_load(text)
    return [rule for group in document["groups"] for rule in group["rules"]]


def test_the_name_extraction_is_careful() -> None:
    expr = (
        'histogram_quantile(0.99, sum by (channel, le) (rate(a_seconds_bucket{outcome=~"x|y",'
        ' channel!="sum"}[5m]))) / ignoring(le) b_total offset 1h > 2 * 86400 and on(instance)'
        " time() - c_timestamp_seconds"
    )
    assert metric_names(expr) == {"a_seconds_bucket", "b_total", "c_timestamp_seconds"}


async def test_the_dashboard_and_rules_use_only_exported_metrics(fanned_out: FanOut) -> None:
    exposed = exposed_names(fanned_out.service.metrics)
    expressions = dashboard_expressions() + [str(rule["expr"]) for rule in rules()]
    used = set().union(*(metric_names(expr) for expr in expressions))
    assert used, "no metric names found"
    assert used <= exposed, f"not exported: {sorted(used - exposed)}"
    # the panels the operations brief asks for are there
    for needed in (
        "dissemination_alerts_received_total",
        "dissemination_alerts_rejected_total",
        "dissemination_deliveries_total",
        "dissemination_send_seconds_bucket",
        "dissemination_publish_to_first_delivery_seconds_bucket",
        "dissemination_inbound_queue_messages",
        "dissemination_breaker_open_hosts",
        "dissemination_stuck_rows",
        "dissemination_acknowledgments_total",
        "dissemination_record_entries",
    ):
        assert needed in used


def test_every_rule_has_a_severity_and_a_summary() -> None:
    found = rules()
    assert len(found) >= 6
    for rule in found:
        assert rule["alert"]
        assert rule["labels"]["severity"] in {"info", "warning", "critical"}, rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]


def test_promtool_accepts_the_rules() -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed (Debian package `prometheus`): rules not checked")
    path = resources.files("config").joinpath("prometheus-rules.yml")
    result = subprocess.run(
        [promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
