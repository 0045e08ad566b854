"""Ledger benchmark: what each row of a fan-out costs the store's steps, in µs of CPU a row,
without the broker, the channels or a sink, so that a change to one step shows above the
noise the whole fan-out carries.

    .venv/bin/python -m bench.ledger [--targets 10000] [--store postgresql|sqlite] [--runs 3]
                                     [--alerts 1] [--stale-plans 0]

Each run enrols `--targets` webhook stakeholders in a fresh store, then times, as the service
does them:

- plan: one CAP alert taken in by the intake pipeline (decode, validate, match, and the
  transaction that stores it with one pending row per target);
- claim: the rows claimed `CLAIM_CHUNK` at a time, `CONCURRENT_CLAIMS` claims at once (so
  they go together, as the workers' do);
- settle: every row settled as sent, `SETTLE_WAVE` at a time, with its record entry.

With `--alerts N` it does so for N alerts one after the other, each step timed over all of
them: `--targets 10 --alerts 200` gives what an alert costs whatever its size (statements,
transactions), which is most of a small alert's cost and of the latency benchmark's.

With `--stale-plans N` the store first claims an absent row and settles absent rows N times
each, as a service does while its table is small (a new deployment's first alerts): more than
five runs of a prepared statement may leave PostgreSQL keeping one plan for it, made for the
table as it was then (see `store.database.plan_for_current_sizes`).

The directory and the matcher are frozen out of later garbage collections first, as the
service does when it starts. For each step it prints the medians of the wall time, of this
process's CPU (and the part of it the garbage collector took) and of PostgreSQL's (server and
backends; nothing under SQLite), per row, and this process's CPU per alert.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from bench.common import CollectorTime, Resources, machine_context, median, run_loop, write_results
from bench.intake import bench_env, store
from dissemination.acks.tracking import AckIssuer
from dissemination.api.directory import load_matcher
from dissemination.controls.recordkey import record_key
from dissemination.delivery.claims import DeliveryStore, Settlement
from dissemination.delivery.worker import CLAIM_CHUNK
from dissemination.directory.store import Directory
from dissemination.intake.pipeline import AlertPipeline
from dissemination.ledger.alerts import Ledger, Payload
from dissemination.ledger.planning import Planner
from dissemination.logs import configure
from dissemination.service import freeze_start_up_heap
from dissemination.settings import Settings, load_settings
from dissemination.store.database import Database
from dissemination.store.rows import ClaimedRow, DeliveryState
from testbed.alerts import cap_json
from testbed.cputime import processes_named, sample, spent
from testbed.directory import enrol_many
from testbed.smalltable import claim_and_settle_nothing

CONCURRENT_CLAIMS = 16
SETTLE_WAVE = 128
STEPS = ("plan", "claim", "settle")


@dataclass
class Step:
    """One step of one run: its rows, wall seconds and CPU seconds by process group."""

    rows: int
    seconds: float
    cpu: dict[str, float] = field(default_factory=dict)

    def add(self, other: Step) -> None:
        """Count `other` (the same step of another alert) in this one."""
        self.rows += other.rows
        self.seconds += other.seconds
        for group, seconds in other.cpu.items():
            self.cpu[group] = self.cpu.get(group, 0.0) + seconds

    def per_row(self) -> dict[str, float]:
        """µs a row: wall, and CPU by group."""
        figures = {"wall": self.seconds} | self.cpu
        return {name: value / self.rows * 1e6 for name, value in figures.items()}


async def timed(rows: int, work: Callable[[], Awaitable[object]]) -> Step:
    groups = {"this process": [], "PostgreSQL": processes_named("postgres")}
    before = sample(groups)
    cpu_before, started = time.process_time(), time.perf_counter()
    collecting = CollectorTime.seconds
    await work()
    seconds, cpu_after = time.perf_counter() - started, time.process_time()
    cpu = spent(before, sample(groups))
    cpu["this process"] = cpu_after - cpu_before
    cpu["of which collector"] = CollectorTime.seconds - collecting
    return Step(rows, seconds, cpu)


async def one_run(
    settings: Settings, targets: int, alerts: int, stale_plans: int = 0
) -> dict[str, Step]:
    database = Database.from_settings(settings.store, settings.data_path)
    try:
        await database.migrate()
        await enrol_many(database, targets, "webhook", lambda n: f"http://127.0.0.1:9/hook/{n}")
        key = record_key(settings)
        planner = Planner(await load_matcher(Directory(database)))
        ledger = Ledger(database, planner, AckIssuer(timedelta(hours=24)), key)
        pipeline = AlertPipeline(ledger, settings.intake)
        delivery = DeliveryStore(database, key)
        freeze_start_up_heap()  # as the service does before its first alert
        await claim_and_settle_nothing(delivery, stale_plans)
        steps = {name: Step(0, 0.0) for name in STEPS}
        for _ in range(alerts):
            for name, step in (await one_alert(pipeline, delivery, targets)).items():
                steps[name].add(step)
        return steps
    finally:
        await database.close()


async def one_alert(
    pipeline: AlertPipeline, delivery: DeliveryStore, targets: int
) -> dict[str, Step]:
    """One alert to every target planned, its rows claimed, then settled, each step timed."""
    body = json.dumps(cap_json(f"LEDGER-{uuid.uuid4().hex[:8]}", handling={"tlp": "GREEN"}))
    payload = Payload(body.encode(), "application/json")
    pending: list[str] = []

    async def plan() -> None:
        result = await pipeline.process(payload)
        pending.extend(result.waiting("webhook"))

    steps = {"plan": await timed(targets, plan)}
    if len(pending) != targets:
        raise SystemExit(f"planned {len(pending)} pending rows of {targets}")
    claimed: list[ClaimedRow] = []

    async def claim() -> None:
        chunks = [pending[i : i + CLAIM_CHUNK] for i in range(0, len(pending), CLAIM_CHUNK)]
        for start in range(0, len(chunks), CONCURRENT_CLAIMS):
            wave = chunks[start : start + CONCURRENT_CLAIMS]
            now = datetime.now(UTC)
            for each in await asyncio.gather(*(delivery.claim(ids, now) for ids in wave)):
                claimed.extend(each.rows)

    steps["claim"] = await timed(targets, claim)
    digest = hashlib.sha256(body.encode()).hexdigest()

    async def settle() -> None:
        for start in range(0, len(claimed), SETTLE_WAVE):
            wave = [
                Settlement(row, DeliveryState.SENT, "HTTP 204", "204", content_sha256=digest)
                for row in claimed[start : start + SETTLE_WAVE]
            ]
            await delivery.settle(wave, datetime.now(UTC))

    steps["settle"] = await timed(len(claimed), settle)
    return steps


async def run(args: argparse.Namespace) -> list[dict[str, Step]]:
    runs: list[dict[str, Step]] = []
    resources = Resources()
    try:
        for number in range(1, args.runs + 1):
            with store(args.store, resources, None) as (url, data_dir):
                settings = load_settings(bench_env("/", url, data_dir, "ledger"))
                steps = await one_run(settings, args.targets, args.alerts, args.stale_plans)
            runs.append(steps)
            print(
                f"run {number}: "
                + ", ".join(
                    f"{name} {step.per_row()['wall']:,.1f} µs" for name, step in steps.items()
                ),
                flush=True,
            )
    finally:
        resources.release_all()
    return runs


def medians(runs: Sequence[dict[str, Step]]) -> dict[str, dict[str, float]]:
    """Each step's median µs a row, by figure (wall, and CPU by group)."""
    table: dict[str, dict[str, float]] = {}
    for name in STEPS:
        per_row = [each[name].per_row() for each in runs]
        table[name] = {
            figure: median([figures.get(figure, 0.0) for figures in per_row]) or 0.0
            for figure in per_row[0]
        }
    return table


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--targets", type=int, default=10_000)
    parser.add_argument("--store", choices=["sqlite", "postgresql"], default="postgresql")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--alerts", type=int, default=1)
    parser.add_argument("--stale-plans", type=int, default=0)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if not 1 <= args.targets <= 100_000 or not 1 <= args.runs <= 10:
        print("need 1 <= --targets <= 100000 and 1 <= --runs <= 10", file=sys.stderr)
        return 2
    if not 0 <= args.stale_plans <= 100:
        print("need 0 <= --stale-plans <= 100", file=sys.stderr)
        return 2
    if not 1 <= args.alerts <= 10_000 or args.alerts * args.targets > 1_000_000:
        print("need 1 <= --alerts <= 10000 and --alerts x --targets <= 1000000", file=sys.stderr)
        return 2
    configure("WARNING", "console", "bench")
    CollectorTime.install()
    context = machine_context()
    table = medians(run_loop(run(args)))
    alerts = (
        f"{args.alerts:,} alerts of {args.targets:,} rows"
        if args.alerts > 1
        else (f"{args.targets:,} rows")
    )
    stale = f", after {args.stale_plans} claims and settles of no row" if args.stale_plans else ""
    print(f"\nµs a row, medians of {args.runs}, {alerts}, store {args.store}{stale}:")
    print(
        f"{'step':<8} {'wall':>8} {'this process':>13} {'collector':>10} {'PostgreSQL':>11}"
        f" {'an alert, this process':>23}"
    )
    for name, figures in table.items():
        an_alert = figures["this process"] * args.targets / 1000
        print(
            f"{name:<8} {figures['wall']:>8.1f} {figures['this process']:>13.1f}"
            f" {figures['of which collector']:>10.1f} {figures.get('PostgreSQL', 0.0):>11.1f}"
            f" {an_alert:>20.2f} ms"
        )
    suffix = f"-{args.targets}x{args.alerts}" if args.alerts > 1 else ""
    suffix += f"-stale{args.stale_plans}" if args.stale_plans else ""
    write_results(
        f"ledger-{args.store}{suffix}",
        {
            "benchmark": "ledger",
            "targets": args.targets,
            "alerts": args.alerts,
            "stale_plans": args.stale_plans,
            "store": args.store,
            "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "context": context,
            "us_per_row": table,
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
