"""Latency benchmark: alerts published at a steady rate, each to a few webhooks; the time from
publish to the first delivery of each alert on the wire, p50 and p99, against the raw leg.

    .venv/bin/python -m bench.latency [--rate 50] [--seconds 20] [--targets 10]
                                      [--store sqlite|postgresql] [--runs 3] [--timeout 900]
                                      [--profile] [--stages] [--backlog N] [--ordinary]

  service  `--targets` stakeholders, each with a webhook contact and a subscription to every
           alert, are created before the service starts (not timed). The service runs as
           `dissemination run` in a child process, as in production. CAP alerts are published
           with confirms at `--rate` per second for `--seconds`, each on its own schedule (a slow
           confirm never delays the next); an alert's latency is from just before its publish
           to the first of its webhooks arriving at the sink.
  raw      the physical limit of the same leg: the same publishes to a queue of our own, a bare
           aio-pika consumer in this process that POSTs each message to the same webhooks with
           aiohttp, timed the same way. Nothing is validated, stored, planned or signed.

`--backlog N` enrols N more webhooks that only an ordinary alert (urgency Expected, severity
Moderate, category Safety) matches, and publishes one such alert to them just before the timed
ones: those then meet a service busy with a fan-out of N queued ahead of them (the raw leg has
none). The timed alerts are an imminent threat (urgency Immediate, severity Severe), which the
service sends ahead of other work; with `--ordinary` they are ordinary alerts too, as every
alert was before urgent ones went first, to compare.

`--profile` samples the service process with py-spy (when installed) while it publishes, and
writes its collapsed stacks to bench/results/latency-<store>.stacks and the functions with the
most samples, on their own and with what they call, to the screen. `--stages` has the
service's processes serve their metrics and prints, after the runs, how long the alerts of
every run spent in each stage inside the service (`dissemination_stage_seconds`, the webhook
send and receipt to first delivery), p50/p90/p99 as read from the histograms' buckets; the
first seconds' warm-up is in them.

The webhook sink runs in a child process (`bench.sinks`) and stamps each alert's first arrival
on the system-wide monotonic clock, which this process shares. Prints p50/p99 per run, their
medians over the runs and the service/raw ratios, for every alert and again for those
published after the first 2 s (the service's warm-up after a start is in the first), and writes
bench/results/latency-<store>.json. Every wait is bounded by the overall timeout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aio_pika
import aiohttp

from bench.common import (
    RESULTS_DIR,
    Deadline,
    Resources,
    machine_context,
    median,
    run_loop,
    write_results,
)
from bench.fanoutservice import publish_alert, sinks_process
from bench.intake import bench_env, store
from bench.pyspy import print_profile, start_sampling
from bench.rawlegs import SinkPorts
from bench.serviceprocess import start_service
from bench.stages import Buckets, added, scrape, table
from channels.base import ChannelName
from dissemination.broker.topology import broker_url, declare_intake
from dissemination.settings import Settings, load_settings
from dissemination.store.database import Database
from dissemination.supervisor import cores
from testbed.alerts import cap_json
from testbed.directory import enrol_many
from testbed.ports import free_ports

TIMED_RULE = {"categories": ["Met"]}
"""The timed alerts' category (the sample alert's), which the backlog's is not."""
BACKLOG_RULE = {"categories": ["Safety"]}
WARM_AFTER_SECONDS = 2.0
"""Alerts published this long after the first are also reported on their own: the first
seconds after a start carry the service's warm-up (new store connections, first statements)."""


@dataclass(slots=True)
class Leg:
    """One timed leg: the latency of each alert that arrived, of those among them published
    after the warm-up (`WARM_AFTER_SECONDS`), and how many never arrived."""

    latencies: list[float]
    missing: int
    warm: list[float] = field(default_factory=list)
    stages: dict[str, Buckets] = field(default_factory=dict)

    def percentile(self, fraction: float, warm: bool = False) -> float | None:
        return percentile(self.warm if warm else self.latencies, fraction)


def percentile(latencies: list[float], fraction: float) -> float | None:
    if len(latencies) < 2:
        return latencies[0] if latencies else None
    return statistics.quantiles(latencies, n=1000, method="inclusive")[round(fraction * 1000) - 1]


@dataclass(slots=True)
class Report:
    """Every run of both legs."""

    raw: list[Leg] = field(default_factory=list)
    service: list[Leg] = field(default_factory=list)


def webhook_url(sinks: SinkPorts) -> Callable[[int], str]:
    return lambda n: f"http://127.0.0.1:{sinks.webhook}/latency/{n}"


async def first_arrivals(sinks: SinkPorts, session: aiohttp.ClientSession) -> dict[str, float]:
    async with session.get(f"http://127.0.0.1:{sinks.webhook}/latency-report") as response:
        report: dict[str, float] = await response.json()
        return report


async def publish_steadily(
    publish: Callable[[str], Awaitable[None]], series: str, rate: float, count: int
) -> dict[str, float]:
    """Publish `count` alerts at `rate` per second, each at its own slot of the schedule;
    returns each identifier's publish time on the monotonic clock."""
    published: dict[str, float] = {}
    started = time.monotonic()
    pending: set[asyncio.Task[None]] = set()
    for index in range(count):
        delay = started + index / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        identifier = f"LAT-{series}-{index}"
        published[identifier] = time.monotonic()
        task: asyncio.Task[None] = asyncio.ensure_future(publish(identifier))
        pending.add(task)
        task.add_done_callback(pending.discard)
    await asyncio.gather(*pending)
    return published


async def measure(
    sinks: SinkPorts,
    publish: Callable[[str], Awaitable[None]],
    args: argparse.Namespace,
    deadline: Deadline,
) -> Leg:
    series = uuid.uuid4().hex[:8]
    count = int(args.rate * args.seconds)
    published = await publish_steadily(publish, series, args.rate, count)
    async with aiohttp.ClientSession() as session:
        arrived = await first_arrivals(sinks, session)
        while not published.keys() <= arrived.keys() and not deadline.expired():
            await asyncio.sleep(0.2)
            arrived = await first_arrivals(sinks, session)
    latencies = sorted(arrived[i] - t for i, t in published.items() if i in arrived)
    first = min(published.values(), default=0.0)
    warm = sorted(
        arrived[i] - t
        for i, t in published.items()
        if i in arrived and t - first >= WARM_AFTER_SECONDS
    )
    return Leg(latencies, len(published) - len(latencies), warm)


async def raw_leg(
    settings: Settings, sinks: SinkPorts, args: argparse.Namespace, deadline: Deadline
) -> Leg:
    """Publish with confirms, consume with a bare aio-pika consumer, POST to each webhook."""
    urls = [webhook_url(sinks)(n) for n in range(args.targets)]
    connection = await aio_pika.connect(broker_url(settings.broker), timeout=10)
    async with (
        connection,
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64)) as session,
    ):
        consuming = await connection.channel()
        await consuming.set_qos(prefetch_count=settings.broker.prefetch)
        queue = await consuming.declare_queue(exclusive=True)

        async def deliver(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            async def post(url: str) -> None:
                async with session.post(url, data=message.body) as response:
                    await response.read()

            await asyncio.gather(*(post(url) for url in urls))
            await message.ack()

        await queue.consume(deliver)
        publishing = await connection.channel(publisher_confirms=True)

        async def publish(identifier: str) -> None:
            body = json.dumps(cap_json(identifier, handling={"tlp": "GREEN"})).encode()
            await publishing.default_exchange.publish(
                aio_pika.Message(body, content_type="application/json"), routing_key=queue.name
            )

        return await measure(sinks, publish, args, deadline)


async def service_leg(
    env: dict[str, str],
    settings: Settings,
    sinks: SinkPorts,
    args: argparse.Namespace,
    deadline: Deadline,
) -> Leg:
    database = Database.from_settings(settings.store, settings.data_path)
    try:
        await database.migrate()
        webhook = ChannelName.WEBHOOK.value
        await enrol_many(database, args.targets, webhook, webhook_url(sinks), rule=TIMED_RULE)
        if args.backlog:
            backlog_url = f"http://127.0.0.1:{sinks.webhook}/backlog/{{}}".format
            await enrol_many(
                database, args.backlog, webhook, backlog_url, rule=BACKLOG_RULE, name="backlog"
            )
    finally:
        await database.close()
    processes = cores()  # `dissemination run`'s default
    metrics_port = free_ports(processes) if args.stages else 0
    env = env | {"DISSEMINATION_METRICS_PORT": str(metrics_port)}
    process, _port = await start_service(env, settings.data_path / "service.log")
    profiler = (
        await start_sampling(process.pid, args.seconds, stacks_path(args)) if args.profile else None
    )
    try:
        connection = await aio_pika.connect(broker_url(settings.broker), timeout=10)
        async with connection:
            topology = await declare_intake(
                await connection.channel(publisher_confirms=True), settings.broker
            )

            timed = {"info": [ordinary_info()]} if args.ordinary else {}

            async def publish(identifier: str) -> None:
                await publish_alert(
                    topology.exchange, settings, identifier, "bench.latency", **timed
                )

            if args.backlog:
                backlog = ordinary_info(category=["Safety"], event="Road closures")
                await publish_alert(
                    topology.exchange, settings, None, "bench.latency", info=[backlog]
                )
            leg = await measure(sinks, publish, args, deadline)
        if metrics_port:
            leg.stages = await scrape(range(metrics_port, metrics_port + processes))
        return leg
    finally:
        if profiler is not None:
            await asyncio.wait_for(profiler.wait(), 60)
            print_profile(stacks_path(args))
        if process.returncode is None:
            process.terminate()
        await asyncio.wait_for(process.wait(), 60)


def ordinary_info(**fields: Any) -> dict[str, Any]:
    """The sample alert's info block, but not an imminent threat: urgency Expected, severity
    Moderate (and `fields`)."""
    info: dict[str, Any] = cap_json()["info"][0]
    return info | {"urgency": "Expected", "severity": "Moderate"} | fields


def stacks_path(args: argparse.Namespace) -> Path:
    return RESULTS_DIR / f"latency-{args.store}.stacks"


async def run(args: argparse.Namespace) -> Report:
    deadline = Deadline.after(args.timeout)
    report = Report()
    resources = Resources()
    try:
        async with sinks_process() as sinks:
            for number in range(1, args.runs + 1):
                with (
                    resources.vhost() as vhost,
                    store(args.store, resources, None) as (url, data_dir),
                ):
                    env = bench_env(vhost, url, data_dir, f"bench-{uuid.uuid4().hex[:6]}") | {
                        "DISSEMINATION_WEBHOOK_ALLOWED_NETWORKS": "127.0.0.1/32",
                        "DISSEMINATION_SERVICE_LOG_LEVEL": "WARNING",
                    }
                    settings = load_settings(env)
                    raw = await raw_leg(settings, sinks, args, deadline)
                    service = await service_leg(env, settings, sinks, args, deadline)
                report.raw.append(raw)
                report.service.append(service)
                print(f"run {number}: service {summary(service)}   raw {summary(raw)}", flush=True)
                if deadline.expired():
                    break
    finally:
        resources.release_all()
    return report


def milliseconds(seconds: float | None) -> str:
    return "n/a" if seconds is None else f"{seconds * 1000:.1f} ms"


def summary(leg: Leg) -> str:
    missing = f", {leg.missing} never arrived" if leg.missing else ""
    p50, p99 = leg.percentile(0.5), leg.percentile(0.99)
    warm50, warm99 = leg.percentile(0.5, warm=True), leg.percentile(0.99, warm=True)
    return (
        f"p50 {milliseconds(p50)}, p99 {milliseconds(p99)}"
        f" (after {WARM_AFTER_SECONDS:g} s: {milliseconds(warm50)}, {milliseconds(warm99)})"
        f"{missing}"
    )


def _medians(legs: list[Leg], fraction: float, warm: bool = False) -> float | None:
    return median([p for leg in legs if (p := leg.percentile(fraction, warm)) is not None])


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--rate", type=float, default=50.0, help="alerts published per second")
    parser.add_argument("--seconds", type=float, default=20.0, help="how long to publish")
    parser.add_argument("--targets", type=int, default=10, help="webhooks per alert")
    parser.add_argument("--store", choices=["sqlite", "postgresql"], default="postgresql")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=900.0)
    parser.add_argument("--profile", action="store_true", help="sample the service with py-spy")
    parser.add_argument("--stages", action="store_true", help="time each stage in the service")
    parser.add_argument(
        "--backlog", type=int, default=0, help="an ordinary fan-out to this many webhooks first"
    )
    parser.add_argument(
        "--ordinary", action="store_true", help="the timed alerts are not urgent either"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if not (0 < args.rate <= 1000 and 0 < args.seconds <= 600 and 1 <= args.targets <= 1000):
        print("need 0 < --rate <= 1000, 0 < --seconds <= 600, 1 <= --targets <= 1000")
        return 2
    if not 1 <= args.runs <= 10 or args.timeout <= 0 or not 0 <= args.backlog <= 100_000:
        print("need 1 <= --runs <= 10, --timeout > 0 and 0 <= --backlog <= 100000")
        return 2
    context = machine_context()
    report = run_loop(run(args))
    rows: dict[str, Any] = {}
    print(f"\npublish -> first webhook, {args.rate:g}/s for {args.seconds:g} s, medians:")
    for warm in (False, True):
        if warm:
            print(f"  alerts published after the first {WARM_AFTER_SECONDS:g} s:")
        for name, fraction in (("p50", 0.5), ("p99", 0.99)):
            service = _medians(report.service, fraction, warm)
            raw = _medians(report.raw, fraction, warm)
            ratio = f"{service / raw:.1f}x raw" if service and raw else "n/a"
            print(f"  {name}: service {milliseconds(service)}  raw {milliseconds(raw)}  ({ratio})")
            rows[f"{name}_after_warm_up" if warm else name] = {
                "service_seconds": service,
                "raw_seconds": raw,
            }
    stages = added(leg.stages for leg in report.service)
    if args.stages:
        print("\nin the service, every run's alerts (from its processes' histograms):")
        print("\n".join(table(stages)))
    results = {
        "benchmark": "latency",
        "rate": args.rate,
        "seconds": args.seconds,
        "targets": args.targets,
        "store": args.store,
        "backlog": args.backlog,
        "ordinary": args.ordinary,
        "medians": rows,
        "runs": [
            {"service": summary(s), "raw": summary(r)}
            for s, r in zip(report.service, report.raw, strict=True)
        ],
        "missing": sum(leg.missing for leg in report.service),
        "stages": {
            row: {str(bound): count for bound, count in sorted(buckets.items())}
            for row, buckets in stages.items()
        },
        "machine": context,
    }
    write_results(f"latency-{args.store}", results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
