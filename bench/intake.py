"""Intake throughput benchmark: the service's sustained intake rate against the broker's own.

    .venv/bin/python -m bench.intake [--count 10000] [--store sqlite|postgresql] [--runs 3]
                                     [--timeout 600] [--profile] [--workers N]

Each run gets a fresh RabbitMQ virtual host (and, for PostgreSQL, a fresh database) and measures
two legs over the same N distinct CAP 1.2 XML alerts of about 2 KB:

  raw      publish N with confirms into a fresh quorum queue declared exactly like the service's
           inbound queue, then consume + ack them with plain aio-pika at the service's prefetch;
           timed from the first delivery to the last ack: the physical limit of this broker
           and client.
  service  publish N into the service's inbound queue before it starts, migrate the store, then
           start the real `dissemination.service.Service` in-process; timed from start until
           the ledger holds N alerts (polled every 50 ms): decode + validate + store + ack.
           With `--workers N`, the service is `dissemination run` with N processes instead,
           timed from the first alert's receipt to the last's (`bench.intakeprocesses`).

Prints machine context, per-run rates, medians and the service/raw ratio, and writes
bench/results/intake-<store>[-<N>w].json. `--profile` runs the service legs under
pyinstrument, writes bench/results/intake-<store>.html (and -profile.txt, -profile.json, so
the unprofiled figures are never overwritten), prints the top frames and a serial per-stage
cost breakdown.
Every loop is bounded; after the overall timeout the benchmark stops and reports what it has.
DISSEMINATION_* variables in the environment (e.g. DISSEMINATION_BROKER_PREFETCH=64) apply to
both legs, except the names, store and ports the benchmark must own.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aio_pika
from aio_pika.abc import AbstractIncomingMessage

from bench.common import (
    CAP_CONTENT_TYPE,
    BenchError,
    Deadline,
    Resources,
    cap_alert_bodies,
    filesystem_of,
    machine_context,
    median,
    psql,
    run_loop,
    write_results,
)
from bench.intakeprocesses import processes_leg
from bench.intakeprofile import stage_costs, write_profile
from bench.intakequeue import (
    LegRun,
    broker_version,
    fill_intake_queue,
    queue_depth,
    wait_for_ledger,
)
from dissemination.broker.topology import broker_url
from dissemination.ledger.alerts import Ledger
from dissemination.logs import configure
from dissemination.service import Service
from dissemination.settings import Settings, load_settings
from dissemination.store.database import Database

if TYPE_CHECKING:
    from pyinstrument import Profiler

log = logging.getLogger("bench.intake")

STOP_TIMEOUT_SECONDS = 60.0
BACKSTOP_SECONDS = 90.0
MIN_RUN_SECONDS = 15.0
STAGE_SAMPLE = 1000
OWNED_SETTINGS = frozenset(
    {
        "DISSEMINATION_SERVICE_DATA_DIR",
        "DISSEMINATION_BROKER_URL",
        "DISSEMINATION_BROKER_EXCHANGE",
        "DISSEMINATION_BROKER_INBOUND_QUEUE",
        "DISSEMINATION_BROKER_DEAD_LETTER_EXCHANGE",
        "DISSEMINATION_BROKER_DEAD_LETTER_QUEUE",
        "DISSEMINATION_STORE_URL",
        "DISSEMINATION_HTTP_PORT",
        "DISSEMINATION_CONFIG",
        "DISSEMINATION_FAILPOINTS",
    }
)


# --- results ----------------------------------------------------------------------------------


@dataclass(slots=True)
class Report:
    """Everything the benchmark learned, complete or not."""

    store: str
    count: int
    runs: int
    profile: bool
    context: dict[str, Any]
    settings: dict[str, Any] = field(default_factory=dict)
    raw: list[LegRun] = field(default_factory=list)
    service: list[LegRun] = field(default_factory=list)
    stages: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def rates(self, leg: Sequence[LegRun]) -> list[float]:
        return [r.rate for r in leg if r.complete]

    def ratio(self) -> float | None:
        raw, service = median(self.rates(self.raw)), median(self.rates(self.service))
        if raw is None or service is None or raw == 0:
            return None
        return service / raw

    def as_dict(self) -> dict[str, Any]:
        def leg(runs: Sequence[LegRun]) -> dict[str, Any]:
            middle = median(self.rates(runs))
            return {
                "runs": [r.as_dict() for r in runs],
                "rates": [round(v, 1) for v in self.rates(runs)],
                "median": None if middle is None else round(middle, 1),
            }

        ratio = self.ratio()
        return {
            "benchmark": "intake",
            "store": self.store,
            "count": self.count,
            "runs_requested": self.runs,
            "profiled": self.profile,
            "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "context": self.context,
            "settings": self.settings,
            "legs": {"raw": leg(self.raw), "service": leg(self.service)},
            "ratio_service_over_raw": None if ratio is None else round(ratio, 4),
            "stages": self.stages,
            "problems": self.problems,
            "complete": not self.problems
            and len(self.rates(self.raw)) == self.runs
            and len(self.rates(self.service)) == self.runs,
        }


# --- broker helpers ---------------------------------------------------------------------------


# --- the raw leg ------------------------------------------------------------------------------


@dataclass(slots=True)
class _AckCounter:
    expected: int
    done: asyncio.Event
    acked: int = 0
    first: float | None = None
    last: float | None = None

    async def on_message(self, message: AbstractIncomingMessage) -> None:
        if self.first is None:
            self.first = time.perf_counter()
        await message.ack()
        self.acked += 1
        self.last = time.perf_counter()
        if self.acked >= self.expected:
            self.done.set()


async def raw_leg(
    run: int, settings: Settings, bodies: Sequence[bytes], deadline: Deadline
) -> LegRun:
    """Consume + ack `bodies` from a fresh quorum queue with plain aio-pika."""
    publisher, _, publish_seconds = await fill_intake_queue(settings, bodies, deadline)
    await publisher.close()
    counter = _AckCounter(len(bodies), asyncio.Event())
    connection = await aio_pika.connect(broker_url(settings.broker), timeout=10)
    try:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=settings.broker.prefetch)
        queue = await channel.declare_queue(settings.broker.inbound_queue, passive=True)
        tag = await queue.consume(counter.on_message, no_ack=False)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(counter.done.wait(), timeout=deadline.remaining())
        await queue.cancel(tag)
        with contextlib.suppress(aio_pika.exceptions.AMQPError):
            await queue.delete(if_unused=False, if_empty=False)
    finally:
        await connection.close()
    start = counter.first if counter.first is not None else time.perf_counter()
    end = counter.last if counter.last is not None else start
    complete = counter.acked >= len(bodies)
    return LegRun(
        run,
        counter.acked,
        end - start,
        complete,
        publish_seconds,
        note="" if complete else "overall timeout",
    )


# --- the service leg --------------------------------------------------------------------------


async def _serve(
    settings: Settings, expected: int, deadline: Deadline, profiler: Profiler | None
) -> tuple[int, float, float | None, str]:
    """Start the service, wait for the ledger to hold `expected` alerts, stop the service;
    return (alerts stored, seconds from start, start-up seconds, why it fell short)."""
    poll_database = Database.from_settings(settings.store, settings.data_path)
    service = Service(settings)
    startup: float | None = None
    try:
        if profiler is not None:
            profiler.start()
        started = time.perf_counter()
        await service.start(freeze_heap=True)  # as `dissemination run` starts it
        startup = time.perf_counter() - started
        stored, why = await wait_for_ledger(Ledger(poll_database), expected, deadline)
        seconds = time.perf_counter() - started
    finally:
        if profiler is not None and profiler.is_running:
            profiler.stop()
        try:
            await asyncio.wait_for(service.stop(), STOP_TIMEOUT_SECONDS)
        finally:
            await poll_database.close()
    return stored, seconds, startup, why


async def service_leg(
    run: int,
    settings: Settings,
    bodies: Sequence[bytes],
    deadline: Deadline,
    profiler: Profiler | None,
) -> LegRun:
    """Run the real Service in-process over a pre-filled inbound queue."""
    database = Database.from_settings(settings.store, settings.data_path)
    try:
        await database.migrate()
    finally:
        await database.close()
    publisher, channel, publish_seconds = await fill_intake_queue(settings, bodies, deadline)
    try:
        stored, seconds, startup, why = await _serve(settings, len(bodies), deadline, profiler)
        left = await queue_depth(channel, settings.broker.inbound_queue)
    finally:
        await publisher.close()
    if not why and left:
        why = f"{left} messages still ready in the inbound queue after stop"
    return LegRun(run, stored, seconds, not why, publish_seconds, startup, why)


# --- orchestration ----------------------------------------------------------------------------


def bench_env(vhost: str, store_url: str, data_dir: Path, names: str) -> dict[str, str]:
    """Settings environment like tests/conftest.py `settings_env`: our own vhost and names,
    the given store, HTTP on an ephemeral port; other DISSEMINATION_* variables pass through."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k.startswith("DISSEMINATION_") and k not in OWNED_SETTINGS
    }
    env.setdefault("DISSEMINATION_SERVICE_SHUTDOWN_GRACE_SECONDS", "10")
    # a shared store needs the record's key; a benchmark's store lives for one run
    env.setdefault("DISSEMINATION_RECORD_KEY", "bench-record-key-" + uuid.uuid4().hex * 2)
    env.update(
        {
            "DISSEMINATION_SERVICE_DATA_DIR": str(data_dir),
            "DISSEMINATION_BROKER_URL": f"amqp://127.0.0.1:5672/{vhost}",
            "DISSEMINATION_BROKER_EXCHANGE": f"alerts.{names}",
            "DISSEMINATION_BROKER_INBOUND_QUEUE": f"alerts.inbound.{names}",
            "DISSEMINATION_BROKER_DEAD_LETTER_EXCHANGE": f"alerts.dead.{names}",
            "DISSEMINATION_BROKER_DEAD_LETTER_QUEUE": f"alerts.dead.{names}",
            "DISSEMINATION_STORE_URL": store_url,
            "DISSEMINATION_HTTP_HOST": "127.0.0.1",
            "DISSEMINATION_HTTP_PORT": "0",
        }
    )
    return env


@contextlib.contextmanager
def store(kind: str, resources: Resources, parent: Path | None) -> Iterator[tuple[str, Path]]:
    """A fresh, empty store of `kind` and a scratch data directory: (store URL, data dir)."""
    with tempfile.TemporaryDirectory(prefix="fd-bench-", dir=parent) as scratch:
        data_dir = Path(scratch) / "data"
        data_dir.mkdir()
        if kind == "sqlite":
            yield f"sqlite+aiosqlite:///{data_dir / 'ledger.db'}", data_dir
        else:
            with resources.pg_database() as url:
                yield url, data_dir


async def run_legs(
    run: int,
    env: dict[str, str],
    bodies: Sequence[bytes],
    deadline: Deadline,
    report: Report,
    profiler: Profiler | None,
    with_stages: bool,
    workers: int = 0,
) -> None:
    """Both legs of one run (raw first), then, if asked, the stage costs. With `workers`,
    the service leg is `dissemination run` with that many processes (`bench.intakeprocesses`)
    instead of one service in this process."""
    raw_settings = load_settings(
        env
        | {
            "DISSEMINATION_BROKER_EXCHANGE": env["DISSEMINATION_BROKER_EXCHANGE"] + ".raw",
            "DISSEMINATION_BROKER_INBOUND_QUEUE": env["DISSEMINATION_BROKER_INBOUND_QUEUE"]
            + ".raw",
        }
    )
    settings = load_settings(env)
    async with asyncio.timeout(deadline.remaining() + BACKSTOP_SECONDS):
        if run == 1:
            report.context["rabbitmq"] = await _broker_version_of(settings)
            print(f"  broker: RabbitMQ {report.context['rabbitmq']} at {settings.broker.url}")
        raw = await raw_leg(run, raw_settings, bodies, deadline)
        report.raw.append(raw)
        print(f"  run {run} raw:     {raw.rate:10.1f} msg/s ({raw.messages} in {raw.seconds:.2f}s)")
        if not raw.complete:
            report.problems.append(f"run {run} raw leg incomplete: {raw.note}")
            return
        if workers:
            served = await processes_leg(run, env, settings, bodies, deadline, workers)
        else:
            served = await service_leg(run, settings, bodies, deadline, profiler)
        report.service.append(served)
        timing = (
            f"start-up {served.startup_seconds:.2f}s"
            if served.startup_seconds is not None
            else "first receipt to last"
        )
        print(
            f"  run {run} service: {served.rate:10.1f} msg/s "
            f"({served.messages} in {served.seconds:.2f}s, {timing})"
        )
        if not served.complete:
            report.problems.append(f"run {run} service leg incomplete: {served.note}")
            return
        if with_stages and not deadline.expired():
            report.stages = await stage_costs(settings, min(STAGE_SAMPLE, len(bodies)))


async def _broker_version_of(settings: Settings) -> str:
    connection = await aio_pika.connect(broker_url(settings.broker), timeout=10)
    try:
        return await broker_version(await connection.channel())
    finally:
        await connection.close()


def describe_settings(settings: Settings, bodies: Sequence[bytes]) -> dict[str, Any]:
    return {
        "prefetch": settings.broker.prefetch,
        "concurrency": settings.broker.concurrency,
        "delivery_limit": settings.broker.delivery_limit,
        "store_pool_size": settings.store.pool_size,
        "message_bytes_mean": round(sum(map(len, bodies)) / len(bodies)),
        "content_type": CAP_CONTENT_TYPE,
        "passed_through_env": sorted(
            k for k in os.environ if k.startswith("DISSEMINATION_") and k not in OWNED_SETTINGS
        ),
    }


def print_context(report: Report) -> None:
    context = report.context
    print(
        f"intake benchmark: store={report.store} N={report.count} runs={report.runs}"
        f"{' (profiled)' if report.profile else ''}"
    )
    print(
        f"  machine: {context['cores']} cores ({context['usable_cores']} usable), "
        f"{context['cpu_model']}, {context['memory_gib']} GiB, "
        f"load {context['load_average_1_5_15']}"
    )
    print(
        f"  {context['python']}, {context['event_loop']}, sqlite {context['sqlite_library']}, "
        f"store data on {context.get('data_filesystem', '?')}"
        + (f", {context['postgresql']}" if "postgresql" in context else "")
    )
    print(
        "  service settings: "
        + ", ".join(f"{k}={v}" for k, v in report.settings.items() if k != "passed_through_env")
    )


def print_table(report: Report) -> None:
    width = max(report.runs, 1)
    header = "leg       " + "".join(f"{'run ' + str(i + 1):>12}" for i in range(width))
    print()
    print(header + f"{'median':>12}   (messages/s; * = incomplete run)")
    for name, runs in (("raw", report.raw), ("service", report.service)):
        cells = []
        for index in range(width):
            match = [r for r in runs if r.run == index + 1]
            if not match:
                cells.append(f"{'-':>12}")
            else:
                mark = "" if match[0].complete else "*"
                cells.append(f"{match[0].rate:>11.1f}{mark or ' '}")
        middle = median(report.rates(runs))
        median_cell = f"{middle:>12.1f}" if middle is not None else f"{'-':>12}"
        print(f"{name:<10}" + "".join(cells) + median_cell)
    ratio = report.ratio()
    if ratio is not None:
        print(f"ratio service/raw (median/median): {ratio:.4f}  (raw is {1 / ratio:.1f}x faster)")
    else:
        print("ratio service/raw: not available (a leg has no complete run)")
    for problem in report.problems:
        print(f"PROBLEM: {problem}")


def print_stages(stages: Mapping[str, Any]) -> None:
    if not stages:
        return
    print(f"\nstage costs, serial, per message (sample of {stages['sample']} alerts):")
    implied = stages["implied_rate_per_s"]
    for name, micros in stages["per_message_us"].items():
        print(f"  {name:<28} {micros:10.1f} µs   ({implied.get(name, 0):>9.1f}/s alone)")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench.intake",
        description=(__doc__ or "").split("\n\n")[0],
    )
    parser.add_argument("--count", type=int, default=10_000, help="messages per leg per run")
    parser.add_argument("--store", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--timeout", type=float, default=600.0, help="hard overall limit in seconds"
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="parent of the scratch directory (SQLite file); default: the system temp dir",
    )
    parser.add_argument(
        "--profile", action="store_true", help="run the service legs under pyinstrument"
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=0,
        help="run the service as `dissemination run` with this many processes, timed from "
        "the first alert's receipt to the last's (default 0: one service in this process)",
    )
    return parser


def run_all(args: argparse.Namespace, report: Report, deadline: Deadline) -> Profiler | None:
    """Every run, each with a fresh vhost and store, until done or out of time."""
    profiler: Profiler | None = None
    if args.profile:
        from pyinstrument import Profiler

        profiler = Profiler(interval=0.001, async_mode="disabled")
    bodies = cap_alert_bodies(args.count)
    resources = Resources()
    try:
        for run in range(1, args.runs + 1):
            if deadline.remaining() < MIN_RUN_SECONDS:
                report.problems.append(f"overall timeout reached before run {run}")
                break
            with (
                resources.vhost() as vhost,
                store(args.store, resources, args.data_dir) as (url, data_dir),
            ):
                env = bench_env(vhost, url, data_dir, f"bench-{uuid.uuid4().hex[:6]}")
                if run == 1:
                    report.settings = describe_settings(load_settings(env), bodies)
                    report.context["data_filesystem"] = filesystem_of(data_dir)
                    print_context(report)
                last = run == args.runs
                run_loop(
                    run_legs(
                        run,
                        env,
                        bodies,
                        deadline,
                        report,
                        profiler,
                        args.profile and last,
                        args.workers,
                    )
                )
            if report.problems:
                break
    except TimeoutError:
        report.problems.append("hard overall timeout: a leg did not finish")
    except BenchError as error:
        report.problems.append(str(error))
    except Exception as error:
        log.exception("benchmark failed")
        report.problems.append(f"{type(error).__name__}: {error}")
    except KeyboardInterrupt:
        report.problems.append("interrupted")
    finally:
        resources.release_all()
    return profiler


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if not 1 <= args.count <= 1_000_000 or not 1 <= args.runs <= 20 or args.timeout <= 0:
        print("need 1 <= --count <= 1000000, 1 <= --runs <= 20, --timeout > 0", file=sys.stderr)
        return 2
    configure("WARNING", "console", "bench")  # the service's log lines, as the CLI sets them
    deadline = Deadline.after(args.timeout)
    report = Report(args.store, args.count, args.runs, args.profile, machine_context())
    if args.store == "postgresql":
        with contextlib.suppress(BenchError):
            report.context["postgresql"] = "PostgreSQL " + psql("SHOW server_version").strip()
    if os.environ.get("DISSEMINATION_FAILPOINTS"):
        report.problems.append("DISSEMINATION_FAILPOINTS is set: unset it to benchmark")
        print(report.problems[-1], file=sys.stderr)
        return 2
    profiler = run_all(args, report, deadline)
    report.context["load_average_at_end"] = [round(v, 2) for v in os.getloadavg()]
    print_table(report)
    print_stages(report.stages)
    suffix = ("-profile" if args.profile else "") + (f"-{args.workers}w" if args.workers else "")
    write_results(f"intake-{args.store}{suffix}", report.as_dict())
    if profiler is not None:
        print()
        print("\n".join(write_profile(profiler, args.store)))
    return 0 if report.as_dict()["complete"] else 1


if __name__ == "__main__":
    sys.exit(main())
