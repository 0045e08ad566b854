"""Fan-out benchmark: one alert to N targets on one channel, from publish to the last outcome
recorded, against the raw leg of the same channel to the same loopback sink, in one run.

    .venv/bin/python -m bench.fanout [--targets 10000] [--channel webhook|email|sms|mixed|all]
                                     [--store sqlite|postgresql] [--runs 3] [--timeout 1800]
                                     [--ack | --escalate] [--warm] [--profile] [--peer alertmanager]
                                     [--workers N] [--ceiling]

  service  N stakeholders, each with one contact on the channel and a subscription to every
           alert, are created before the service starts (not timed). The real Service runs
           in-process, started as `dissemination run` starts it (its start-up heap frozen out
           of later garbage collections); one CAP alert is published with confirms, and the
           ledger is polled (`poll_interval`) until it holds N rows in a terminal state; the
           time is from the publish to the latest outcome those rows record
           (`last_outcome_at`): planning, tasks on the broker, claims, rendering, signing,
           sending and recording every outcome, without the wait for the next poll.
  raw      (`bench.rawlegs`) the same number of sends with the bare client at the
           concurrency the service is allowed towards one host: aiohttp POSTs of a body of the
           same size (webhook), aiosmtplib's `sendmail` of the service's own mail for the
           alert, written once, on `email.pool_size` connections (email), the twilio SDK's
           `messages.create_async` (sms). Nothing is rendered, signed or recorded.
  mixed    a third of the targets on each channel, one alert; the raw leg runs the three
           raw legs at once. `all` runs each channel alone, then mixed.
  --ack    the subscriptions require acknowledgment: every row also gets its ack token (issued
           at planning, signed into each message).
  --escalate  as --ack, under a policy that resends once, 1 s after the first delivery: the
           service leg ends when all 2N rows are recorded, the raw leg sends 2N.
  --warm   the service first fans an alert out to the same targets, untimed, and the run
           times the second: its statements are prepared, its connections open, as in a
           service that has been running (without it, each run times the first alert after a
           start).
  --workers N  the service leg runs the service as deployed, `dissemination run --workers N`
           in a child process (`bench.fanoutprocesses`): a supervisor and N processes
           competing for the tasks; the alert is published once each consumes. Its CPU is
           that of those processes ("service processes"), without the collector's share.
  --peer alertmanager  the webhook runs also time Prometheus Alertmanager delivering N alerts
           as N webhooks to the same sink (`bench.alertmanager` says how and what it does not
           do that we do); skipped, with how to install it, when it is not installed.
  --ceiling  after the runs, `bench.ledger`'s store steps for as many rows, as many runs, in
           the same store: a send costs at least its row's steps plus the raw leg's send
           (`bench.ceiling`), which bounds the rate on this machine's cores and so the
           service/raw and service/peer ratios, however fast the rest of the service were.

The service leg is `bench.fanoutservice`'s (`bench.fanoutprocesses`' with `--workers`), the
raw legs `bench.rawlegs`'. The sinks (webhook receiver, aiosmtpd, the Twilio fake) run in a
child process (`bench.sinks`). Prints per-run rates, medians and the service/raw (and
service/peer) ratios, the CPU each leg cost per send in the service's processes (with the
garbage collector's share when that is this process), the sinks and PostgreSQL, and the
service's CPU a send over the raw client's, and writes
bench/results/fanout-<channel>-<store>-<mode>[-<N>w][-warm].json. `--profile` runs the
service legs under pyinstrument and writes
bench/results/fanout-<channel>-<store>-<mode>[-warm].html.
Every wait is bounded by the overall timeout.
"""

from __future__ import annotations

import argparse
import os
import sys
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from bench import alertmanager, ledger
from bench.ceiling import Ceiling, describe, ledger_us
from bench.common import (
    RESULTS_DIR,
    CollectorTime,
    Deadline,
    Resources,
    machine_context,
    median,
    run_loop,
    write_results,
)
from bench.fanoutprocesses import processes_leg
from bench.fanoutservice import (
    COLLECTOR,
    SERVICE_PROCESSES,
    THIS_PROCESS,
    cpu_groups,
    service_env,
    service_leg,
    sinks_process,
)
from bench.intake import bench_env, store
from bench.rawlegs import (
    CHANNELS,
    WEBHOOK,
    Leg,
    SinkPorts,
    raw_leg,
)
from dissemination.logs import configure
from dissemination.settings import load_settings
from testbed.cputime import sample, spent


@dataclass(slots=True)
class ChannelReport:
    channel: str
    raw: list[Leg] = field(default_factory=list)
    service: list[Leg] = field(default_factory=list)
    peer: list[Leg] = field(default_factory=list)

    def medians(self) -> tuple[float | None, float | None, float | None]:
        """Over the runs whose service leg finished: a run cut short by the timeout is left
        out of every median, so that the ratios compare the same runs."""
        finished = [not leg.note for leg in self.service]
        raw = median([leg.rate for leg, ok in zip(self.raw, finished, strict=False) if ok])
        service = median([leg.rate for leg in self.service if not leg.note])
        ratio = service / raw if raw and service is not None else None
        return raw, service, ratio

    def peer_medians(self) -> tuple[float | None, float | None]:
        """The peer's median rate and service/peer, None when it did not run."""
        finished = [not leg.note for leg in self.service]
        peer = median(
            [leg.rate for leg, ok in zip(self.peer, finished, strict=False) if ok and not leg.note]
        )
        service = median([leg.rate for leg in self.service if not leg.note])
        return peer, (service / peer if peer and service is not None else None)

    def process_over_raw(self) -> float | None:
        """The median, over the runs that finished, of the service process's CPU a send over
        the raw client's in the same run: how many times the bare client's work the service
        does for a send. The machine's speed moves both, so this moves less between sittings
        than either (the same code measured 232-384 µs a webhook send within one sitting)."""
        ratios = [
            (service_cpu(service) / service.sends) / (raw.cpu[THIS_PROCESS] / raw.sends)
            for service, raw in zip(self.service, self.raw, strict=False)
            if not service.note and service.sends and raw.sends and raw.cpu.get(THIS_PROCESS)
        ]
        return median(ratios)

    @staticmethod
    def cpu_per_send(legs: list[Leg]) -> dict[str, float]:
        """Median CPU µs per send of each group, over the legs that finished."""
        done = [leg for leg in legs if not leg.note and leg.sends and leg.cpu]
        order = {THIS_PROCESS: 0, SERVICE_PROCESSES: 0, COLLECTOR: 1}  # the collector next
        groups = sorted({g for leg in done for g in leg.cpu}, key=lambda g: (order.get(g, 2), g))
        return {
            group: median([leg.cpu.get(group, 0.0) / leg.sends * 1e6 for leg in done]) or 0.0
            for group in groups
        }


def service_cpu(leg: Leg) -> float:
    """The CPU seconds the service's own processes spent in a service leg."""
    return leg.cpu.get(THIS_PROCESS, leg.cpu.get(SERVICE_PROCESSES, 0.0))


async def peer_leg(
    args: argparse.Namespace, report: ChannelReport, sinks: SinkPorts, deadline: Deadline
) -> Leg | None:
    """The peer's leg of a webhook run, when one is asked for and installed."""
    if args.peer is None or report.channel != WEBHOOK or alertmanager.binary() is None:
        return None
    received, seconds, note = await alertmanager.peer_leg(args.targets, sinks.webhook, deadline)
    report.peer.append(Leg(received, seconds, note))
    return report.peer[-1]


async def run(args: argparse.Namespace) -> list[ChannelReport]:
    deadline = Deadline.after(args.timeout)
    channels = (*CHANNELS, "mixed") if args.channel == "all" else (args.channel,)
    if args.peer is not None and alertmanager.binary() is None:
        print(alertmanager.missing_message(), flush=True)
    reports = [ChannelReport(c) for c in channels]
    profiler = None
    if args.profile:
        from pyinstrument import Profiler

        profiler = Profiler(async_mode="disabled")
    resources = Resources()
    try:
        async with sinks_process() as sinks:
            for report in reports:
                for number in range(1, args.runs + 1):
                    with (
                        resources.vhost() as vhost,
                        store(args.store, resources, None) as (url, data_dir),
                    ):
                        env = service_env(
                            bench_env(vhost, url, data_dir, f"bench-{uuid.uuid4().hex[:6]}"), sinks
                        )
                        settings = load_settings(env)
                        sends = args.targets * (2 if args.mode == "escalate" else 1)
                        groups = cpu_groups(sinks)
                        before = sample(groups)
                        raw = await raw_leg(report.channel, settings, sends, sinks)
                        raw.cpu = spent(before, sample(groups))
                        report.raw.append(raw)
                        if args.workers:
                            service = await processes_leg(
                                settings,
                                env,
                                report.channel,
                                args.targets,
                                sinks,
                                deadline,
                                args.mode,
                                args.warm,
                                args.workers,
                            )
                        else:
                            service = await service_leg(
                                settings,
                                report.channel,
                                args.targets,
                                sinks,
                                deadline,
                                profiler,
                                args.mode,
                                args.warm,
                            )
                        report.service.append(service)
                    peer = await peer_leg(args, report, sinks, deadline)
                    print(
                        f"{report.channel} run {number}: service {service.rate:,.0f}/s "
                        f"{service.note}  raw {raw.rate:,.0f}/s"
                        + (f"  {args.peer} {peer.rate:,.0f}/s {peer.note}" if peer else ""),
                        flush=True,
                    )
                    if deadline.expired():
                        break
    finally:
        resources.release_all()
    if profiler is not None:
        name = results_name(args)
        RESULTS_DIR.mkdir(exist_ok=True)
        (RESULTS_DIR / f"{name}.html").write_text(profiler.output_html())
        print(profiler.output_text(unicode=False, color=False, show_all=False)[:6000])
    return reports


def results_name(args: argparse.Namespace) -> str:
    """The name of the run's results: channel, store, mode, and whether the service was warm."""
    workers = f"-{args.workers}w" if args.workers else ""
    return f"fanout-{args.channel}-{args.store}-{args.mode}{workers}" + (
        "-warm" if args.warm else ""
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--targets", type=int, default=10_000)
    parser.add_argument("--channel", choices=[*CHANNELS, "mixed", "all"], default="all")
    parser.add_argument("--store", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=1800.0)
    parser.add_argument("--profile", action="store_true")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--ack", dest="mode", action="store_const", const="ack")
    mode.add_argument("--escalate", dest="mode", action="store_const", const="escalate")
    parser.set_defaults(mode="plain")
    parser.add_argument("--warm", action="store_true")
    parser.add_argument("--peer", choices=["alertmanager"], default=None)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--ceiling", action="store_true")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if not 1 <= args.targets <= 100_000 or not 1 <= args.runs <= 10 or args.timeout <= 0:
        print("need 1 <= --targets <= 100000, 1 <= --runs <= 10, --timeout > 0", file=sys.stderr)
        return 2
    if not 0 <= args.workers <= 16 or (args.workers and args.profile):
        print("need 0 <= --workers <= 16, and no --profile with --workers", file=sys.stderr)
        return 2
    configure("WARNING", "console", "bench")  # the service's log lines, as the CLI sets them
    CollectorTime.install()
    context = machine_context()
    reports = run_loop(run(args))
    print(f"\nfan-out of one alert to {args.targets:,} targets, store {args.store}, medians:")
    print(
        f"{'channel':<8} {'service/s':>10} {'raw/s':>10} {'ratio':>7} {'peer/s':>10} {'s/peer':>7}"
    )
    results: dict[str, Any] = {
        "benchmark": "fanout",
        "targets": args.targets,
        "store": args.store,
        "warm": args.warm,
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "context": context,
        "channels": {},
    }
    for report in reports:
        raw, service, ratio = report.medians()
        peer, peer_ratio = report.peer_medians()
        print(
            f"{report.channel:<8} {service or 0:>10,.0f} {raw or 0:>10,.0f} {(ratio or 0):>7.3f}"
            + (f" {peer:>10,.0f} {(peer_ratio or 0):>7.3f}" if peer else "")
        )
        results["channels"][report.channel] = {
            "service_rates": [round(leg.rate, 1) for leg in report.service],
            "service_notes": [leg.note for leg in report.service],
            "raw_rates": [round(leg.rate, 1) for leg in report.raw],
            "service_median": service,
            "raw_median": raw,
            "ratio": ratio,
            "cpu_us_per_send": {
                "service": report.cpu_per_send(report.service),
                "raw": report.cpu_per_send(report.raw),
            },
        }
        if report.peer:
            results["channels"][report.channel]["peer"] = {
                "name": args.peer,
                "rates": [round(leg.rate, 1) for leg in report.peer],
                "notes": [leg.note for leg in report.peer],
                "median": peer,
                "service_over_peer": peer_ratio,
                "per_notification": "in memory, dedup against its notification log, one POST;"
                " no per-recipient outcome recorded, no signature, no audit",
            }
    print("\nCPU µs per send, medians (this process is the service, or the raw client):")
    for report in reports:
        for kind, legs in (("service", report.service), ("raw", report.raw)):
            cpu = report.cpu_per_send(legs)
            parts = ", ".join(f"{group} {us:,.0f}" for group, us in cpu.items())
            in_all = sum(us for group, us in cpu.items() if group != COLLECTOR)
            print(f"{report.channel:<8} {kind:<8} {parts}  (in all {in_all:,.0f})")
        times = report.process_over_raw()
        if times is not None:
            print(f"{report.channel:<8} service process / raw client, a send: {times:.2f} times")
        results["channels"][report.channel]["process_over_raw_client"] = times
    if args.ceiling:
        results["ceiling"] = print_ceiling(args, reports)
    write_results(results_name(args), results)
    return 0


def print_ceiling(args: argparse.Namespace, reports: list[ChannelReport]) -> dict[str, Any]:
    """Time the ledger's steps (`bench.ledger`) for the same rows and store, then print each
    channel's floor and what it bounds; the figures, for the results."""
    print(f"\nthe ledger's store steps, {args.targets:,} rows, {args.runs} run(s):", flush=True)
    ledger_args = ledger._parser().parse_args(
        ["--targets", str(args.targets), "--store", args.store, "--runs", str(args.runs)]
    )
    steps = ledger.medians(run_loop(ledger.run(ledger_args)))
    parts = ", ".join(
        f"{name} {figures.get('this process', 0.0):,.1f} + {figures.get('PostgreSQL', 0.0):,.1f}"
        for name, figures in steps.items()
    )
    print(f"\nceiling: µs of CPU a row, service process + PostgreSQL, medians: {parts}")
    cores = os.cpu_count() or 1
    figures: dict[str, Any] = {"ledger_us_per_row": steps, "cores": cores, "channels": {}}
    for report in reports:
        raw_cpu = report.cpu_per_send(report.raw)
        raw_us = sum(us for group, us in raw_cpu.items() if group != COLLECTOR)
        ceiling = Ceiling(ledger_us(steps), raw_us, cores)
        raw, _, _ = report.medians()
        peer, _ = report.peer_medians()
        print(describe(report.channel, ceiling, raw, peer))
        figures["channels"][report.channel] = {
            "floor_us": ceiling.floor_us,
            "rate": ceiling.rate,
            "service_over_raw_at_most": ceiling.over(raw),
            "service_over_peer_at_most": ceiling.over(peer),
        }
    return figures


if __name__ == "__main__":
    sys.exit(main())
