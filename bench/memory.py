"""Memory benchmark: the resident memory of the service, run as `dissemination run` in a child
process as in production, holding N subscriptions and fanning one alert out to N webhooks.

    .venv/bin/python -m bench.memory [--targets 100000] [--store postgresql|sqlite]
                                     [--timeout 1800]

  empty    the service started on an empty directory, once ready: the baseline.
  holding  N stakeholders, each with a webhook contact on the loopback sink and a subscription
           to every alert, are created before the service starts (not measured); the service
           is measured once ready, which it is only after its matcher has loaded them all.
  fan-out  one CAP alert published to it; measured when the ledger holds N rows in a terminal
           state (every target sent and recorded), or `--timeout` seconds after the publish.

Creating the N stakeholders is bounded by their count, not by the timeout: it goes through the
directory store with its audit entries, about 200 a second on an idle 2-core machine.

Figures per phase, from /proc/<pid>/status of the service and of any process it started:
VmRSS (resident now) and VmHWM (the peak resident size since the process started), summed
over the processes and of the largest one. The fan-out's peak is the VmHWM at its end, so it
includes start-up and the matcher. Target: each process's peak at most 500 MB. Writes
bench/results/memory-<store>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time
import uuid
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aio_pika

from bench.common import Deadline, Resources, machine_context, run_loop, write_results
from bench.fanoutservice import (
    enrol_targets,
    publish_alert,
    service_env,
    sinks_process,
    terminal_rows,
)
from bench.intake import bench_env, store
from bench.rawlegs import SinkPorts
from bench.serviceprocess import start_service
from channels.base import ChannelName
from dissemination.broker.topology import broker_url, declare_intake
from dissemination.settings import Settings, load_settings
from dissemination.store.database import Database
from testbed.cputime import with_children

TARGET_MB = 500.0
SAMPLE_SECONDS = 0.25
READY_SECONDS = 600.0
"""Start-up loads every subscription before the service answers /readyz."""


@dataclass(frozen=True, slots=True)
class Resident:
    """Resident memory of a process tree, in MB (10^6 bytes): summed over its processes, and
    of the largest one (`dissemination run` starts a supervisor and one service process per
    core, each holding its own matcher)."""

    rss_mb: float
    peak_mb: float
    processes: int
    largest_rss_mb: float
    largest_peak_mb: float
    first_rss_mb: float
    """The first process of the tree: the supervisor when there are several."""


def _status_kb(pid: int, field: str) -> int:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1])
    return 0


def resident(pid: int) -> Resident:
    pids = with_children(pid)
    rss = [_status_kb(p, "VmRSS") for p in pids]
    peak = [_status_kb(p, "VmHWM") for p in pids]
    return Resident(
        _mb(sum(rss)),
        _mb(sum(peak)),
        len(pids),
        _mb(max(rss, default=0)),
        _mb(max(peak, default=0)),
        _mb(rss[0] if rss else 0),
    )


def _mb(kilobytes: int) -> float:
    return round(kilobytes * 1024 / 1e6, 1)


async def _migrated(settings: Settings) -> Database:
    database = Database.from_settings(settings.store, settings.data_path)
    await database.migrate()
    return database


async def empty_phase(env: dict[str, str], settings: Settings) -> Resident:
    await (await _migrated(settings)).close()
    process, _ = await start_service(env, settings.data_path / "empty.log", READY_SECONDS)
    try:
        return resident(process.pid)
    finally:
        process.terminate()
        await asyncio.wait_for(process.wait(), 60)


async def publish_one(settings: Settings) -> None:
    connection = await aio_pika.connect(broker_url(settings.broker), timeout=10)
    async with connection:
        topology = await declare_intake(
            await connection.channel(publisher_confirms=True), settings.broker
        )
        identifier = f"MEMORY-{uuid.uuid4().hex[:8]}"
        await publish_alert(topology.exchange, settings, identifier, "bench.memory")


async def loaded_phases(
    env: dict[str, str], settings: Settings, sinks: SinkPorts, targets: int, wait_seconds: float
) -> dict[str, Any]:
    """Holding `targets` subscriptions once ready, then fanning one alert out to all."""
    database = Database.from_settings(settings.store, settings.data_path)
    try:
        started = time.perf_counter()
        await enrol_targets(database, ChannelName.WEBHOOK.value, targets, sinks, "plain")
        enrolled = time.perf_counter() - started
        print(f"enrolled {targets:,} stakeholders in {enrolled:.0f} s", flush=True)
        started = time.perf_counter()
        process, _ = await start_service(env, settings.data_path / "loaded.log", READY_SECONDS)
        ready = time.perf_counter() - started
        try:
            holding = resident(process.pid)
            print(f"holding: ready in {ready:.1f} s, {holding}", flush=True)
            started = time.perf_counter()
            await publish_one(settings)
            deadline = Deadline.after(wait_seconds)
            done, largest = 0, holding.rss_mb
            while done < targets and not deadline.expired():
                await asyncio.sleep(SAMPLE_SECONDS)
                largest = max(largest, resident(process.pid).rss_mb)
                done = await terminal_rows(database)
            seconds = time.perf_counter() - started
            fanout = resident(process.pid)
        finally:
            process.terminate()
            await asyncio.wait_for(process.wait(), 60)
    finally:
        await database.close()
    return {
        "enrol_seconds": round(enrolled, 1),
        "ready_seconds": round(ready, 1),
        "holding": asdict(holding),
        "fanout": asdict(fanout),
        "fanout_largest_sampled_rss_mb": largest,
        "fanout_rows_terminal": done,
        "fanout_seconds": round(seconds, 1),
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    resources = Resources()
    try:
        async with sinks_process() as sinks:
            with resources.vhost() as vhost, store(args.store, resources, None) as (url, data):
                env = service_env(
                    bench_env(vhost, url, data, f"bench-{uuid.uuid4().hex[:6]}"), sinks
                )
                env["DISSEMINATION_SERVICE_LOG_LEVEL"] = "WARNING"
                settings = load_settings(env)
                empty = await empty_phase(env, settings)
                print(f"empty: {empty}", flush=True)
                loaded = await loaded_phases(env, settings, sinks, args.targets, args.timeout)
    finally:
        resources.release_all()
    return {"empty": asdict(empty), **loaded}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--targets", type=int, default=100_000)
    parser.add_argument("--store", choices=["sqlite", "postgresql"], default="postgresql")
    parser.add_argument("--timeout", type=float, default=1800.0)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if not 1 <= args.targets <= 200_000 or args.timeout <= 0:
        print("need 1 <= --targets <= 200000 and --timeout > 0", file=sys.stderr)
        return 2
    context = machine_context()
    figures = run_loop(run(args))
    print(f"\nresident memory of the service, {args.targets:,} webhook targets, {args.store}:")
    print(f"{'':<10} {'all processes':>19}   {'the largest':>19}   {'the first':>9}")
    print(
        f"{'phase':<10} {'VmRSS MB':>9} {'VmHWM MB':>9}   {'VmRSS MB':>9} {'VmHWM MB':>9}   "
        f"{'VmRSS MB':>9} target"
    )
    for phase in ("empty", "holding", "fanout"):
        figure = figures[phase]
        met = figure["largest_peak_mb"] <= TARGET_MB
        verdict = "" if phase == "empty" else ("met" if met else "MISSED")
        print(
            f"{phase:<10} {figure['rss_mb']:>9,.1f} {figure['peak_mb']:>9,.1f}   "
            f"{figure['largest_rss_mb']:>9,.1f} {figure['largest_peak_mb']:>9,.1f}   "
            f"{figure['first_rss_mb']:>9,.1f} {verdict}"
        )
    if figures["fanout_rows_terminal"] < args.targets:
        print(f"fan-out stopped at the timeout: {figures['fanout_rows_terminal']:,} rows done")
    results = {
        "benchmark": "memory",
        "targets": args.targets,
        "store": args.store,
        "target_mb": TARGET_MB,
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "figures": figures,
        "context": context,
    }
    write_results(f"memory-{args.store}", results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
