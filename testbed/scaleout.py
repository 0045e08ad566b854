"""One webhook fan-out through several `dissemination run` instances on a RabbitMQ cluster
(`testbed.rabbitcluster`) and one fresh PostgreSQL database, to a counting sink on
loopback; with faults, one broker node is killed outright a quarter of the way through
(the node the instance that will survive is connected to) and one service instance
(supervisor and processes, SIGKILL to its process group) half way. The outcome counts what
the sink received against the targets: lost (never received), duplicates, and whether each
duplicate is a row the service flagged `resent` (the at-least-once policy for a row whose
sender died mid-send). Without faults it times the fan-out (publish to last receipt).

`scripts/cluster` runs it; everything it starts is torn down at the end."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import create_async_engine

from dissemination.broker.publisher import AlertPublisher
from dissemination.broker.topology import connect, declare_intake
from dissemination.settings import Settings, load_settings
from dissemination.store.database import Database
from dissemination.store.tables import deliveries
from testbed.alerts import cap_json_bytes
from testbed.cputime import sample, spent, with_children
from testbed.directory import enrol_many
from testbed.fanoutcount import Outcome, Sink
from testbed.ports import free_port
from testbed.rabbitcluster import RabbitCluster

TERMINAL = ("sent", "delivered", "failed", "withheld", "suppressed")


@dataclass(frozen=True)
class Plan:
    """What to run: targets, broker nodes, service instances and processes per instance,
    whether to kill a node and an instance, and the bounds."""

    targets: int = 10_000
    nodes: int = 3
    instances: int = 2
    workers: int = 1
    faults: bool = True
    runs: int = 1
    """Fan-outs of `targets`, one after the other (faults in the first only)."""
    ramp: bool = False
    """Run the fan-outs with one instance, then with two, ... up to `instances`."""
    stuck_after_seconds: float = 30.0
    timeout_seconds: float = 900.0
    postgres: str = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"


@dataclass
class Instance:
    """One `dissemination run` (with `service.workers` processes) in a process group of its
    own, logging JSON lines to a file."""

    index: int
    env: dict[str, str]
    log: Path
    process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        with self.log.open("wb") as log:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "dissemination",
                "run",
                env=self.env,
                stderr=log,
                start_new_session=True,
            )

    def started(self) -> int:
        """Service processes that have logged their start."""
        return self.log.read_text(errors="replace").count('"event": "service_started"')

    def alive(self) -> bool:
        return self.process is not None and self.process.returncode is None

    async def kill(self) -> None:
        """The instance dies outright: SIGKILL to its supervisor and every process."""
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            await asyncio.wait_for(self.process.wait(), 30)

    async def stop(self) -> int:
        """SIGTERM, as a service manager stops it; its exit status."""
        assert self.process is not None
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return await asyncio.wait_for(self.process.wait(), 60)
        except TimeoutError:
            await self.kill()
            return -9


async def _until(
    condition: Callable[[], Awaitable[bool]], limit_seconds: float, what: str, step: float = 0.05
) -> None:
    deadline = time.monotonic() + limit_seconds
    while not await condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {limit_seconds:.0f} s waiting for {what}")
        await asyncio.sleep(step)


def _service_env(plan: Plan, base: Path, store: str, urls: list[str], index: int) -> dict[str, str]:
    """Instance `index`'s settings: its own HTTP port and data directory, the nodes in an
    order of its own (so the instances start on different nodes)."""
    port = free_port()
    turn = index % len(urls)
    order = urls[turn:] + urls[:turn]
    return {
        **os.environ,
        "DISSEMINATION_SERVICE_DATA_DIR": str(base / f"instance-{index}"),
        "DISSEMINATION_SERVICE_LOG_FORMAT": "json",
        "DISSEMINATION_SERVICE_WORKERS": str(plan.workers),
        "DISSEMINATION_STORE_URL": store,
        "DISSEMINATION_RECORD_KEY": "scale-out-record-key-" + "k" * 32,
        "DISSEMINATION_BROKER_URL": order[0],
        "DISSEMINATION_BROKER_FAILOVER_URLS": ",".join(order[1:]),
        "DISSEMINATION_BROKER_STUCK_AFTER_SECONDS": str(plan.stuck_after_seconds),
        "DISSEMINATION_HTTP_PORT": str(port),
        "DISSEMINATION_HTTP_PUBLIC_URL": f"http://127.0.0.1:{port}",
        "DISSEMINATION_DELIVERY_CHANNELS": "webhook",
        "DISSEMINATION_WEBHOOK_ALLOWED_NETWORKS": "127.0.0.1/32",
    }


async def _counts(database: Database) -> tuple[dict[str, int], set[str]]:
    """Rows by state, and the ids of those flagged resent."""
    async with database.reading() as conn:
        states = await conn.execute(
            select(deliveries.c.state, func.count()).group_by(deliveries.c.state)
        )
        resent = await conn.scalars(select(deliveries.c.id).where(deliveries.c.resent))
        return {state: int(n) for state, n in states.all()}, {str(row) for row in resent}


async def _migrate(env: dict[str, str]) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "dissemination", "migrate", env=env, stderr=subprocess.PIPE
    )
    _, err = await process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"migrate failed: {err.decode()[-2000:]}")


async def run(plan: Plan, say: Callable[[str], None] = print) -> Outcome:
    """Run the plan; tear everything down, whatever happens."""
    base = Path(tempfile.mkdtemp(prefix="dissemination-cluster-"))
    cluster = RabbitCluster(base / "rabbitmq", plan.nodes)
    name = f"fd_cluster_{uuid.uuid4().hex[:10]}"
    admin = create_async_engine(plan.postgres, isolation_level="AUTOCOMMIT")
    store = f"{plan.postgres.rsplit('/', 1)[0]}/{name}"
    sink = Sink()
    instances: list[Instance] = []
    try:
        say(f"starting {plan.nodes} RabbitMQ node(s)")
        await cluster.start()
        async with admin.connect() as conn:
            await conn.execute(text(f'CREATE DATABASE "{name}"'))
        urls = [node.url for node in cluster.nodes]
        envs = [_service_env(plan, base, store, urls, i) for i in range(plan.instances)]
        await _migrate(envs[0])
        await sink.start()
        settings = load_settings(envs[0])
        database = Database.from_settings(settings.store, settings.data_path)
        try:
            say(f"enrolling {plan.targets} webhook targets")
            await enrol_many(database, plan.targets, "webhook", lambda n: f"{sink.base}{n}")
            instances = [Instance(i, env, base / f"instance-{i}.log") for i, env in enumerate(envs)]
            return await _fan_out(plan, cluster, instances, sink, settings, database, say)
        finally:
            await database.close()
    finally:
        for instance in instances:
            if instance.alive():
                await instance.kill()
        await sink.stop()
        await cluster.stop()
        async with admin.connect() as conn:
            await conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        await admin.dispose()
        shutil.rmtree(base, ignore_errors=True)


async def _publish(settings: Settings, identifier: str) -> float:
    """Publish the alert (confirmed); when it was published."""
    connection = await connect(settings.broker, "scale-out-publisher")
    try:
        channel = await connection.channel(publisher_confirms=True)
        await declare_intake(channel, settings.broker)
        publisher = await AlertPublisher.open(connection, settings.broker)
        published = time.monotonic()
        await publisher.publish(
            cap_json_bytes(identifier),
            "application/json",
            "alert.scale-out",
            user_id=settings.broker.username,
        )
        return published
    finally:
        await connection.close()


async def _fan_out(
    plan: Plan,
    cluster: RabbitCluster,
    instances: list[Instance],
    sink: Sink,
    settings: Settings,
    database: Database,
    say: Callable[[str], None],
) -> Outcome:
    events: list[str] = []

    def note(line: str) -> None:
        events.append(line)
        say(line)

    seconds: dict[int, list[float]] = {}
    cpu: dict[int, Counter[str]] = {}
    fan_outs = 0
    for running in range(1, plan.instances + 1) if plan.ramp else [plan.instances]:
        await _start(instances[:running], plan.workers)
        say(f"{running} instance(s) of {plan.workers} process(es) running")
        seconds[running], cpu[running] = [], Counter()
        for _ in range(plan.runs):
            fan_outs += 1
            groups = await _process_groups(cluster, instances, database)
            before = sample(groups)
            published = await _publish(settings, f"SCALE-OUT-{fan_outs}")
            if plan.faults and fan_outs == 1:
                await _faults(plan, cluster, instances, sink, note)

            async def finished(rows: int = plan.targets * fan_outs) -> bool:
                states, _ = await _counts(database)
                settled = sum(states.get(s, 0) for s in TERMINAL)
                return settled == rows and len(sink.received) == rows

            await _until(finished, plan.timeout_seconds, "every row to settle", step=0.25)
            seconds[running].append(sink.last - published)
            cpu[running].update(spent(before, sample(groups)))
    for instance in instances:
        if instance.alive():
            note(f"service instance {instance.index} stopped with status {await instance.stop()}")
    states, resent = await _counts(database)
    return Outcome(
        plan.targets * fan_outs,
        Counter(sink.received),
        resent,
        states,
        seconds,
        {running: dict(spent) for running, spent in cpu.items()},
        events,
    )


async def _start(instances: list[Instance], workers: int) -> None:
    """Start those of `instances` not started yet; wait until every process has."""
    for instance in instances:
        if instance.process is None:
            await instance.start()

    async def all_started() -> bool:
        if not all(i.alive() for i in instances):
            raise RuntimeError("a service instance exited at start: see its log")
        return all(i.started() >= workers for i in instances)

    await _until(all_started, 120, "the service instances to start")


async def _process_groups(
    cluster: RabbitCluster, instances: list[Instance], database: Database
) -> dict[str, list[int]]:
    """The processes of each part: the service instances (with their supervised processes),
    this database's PostgreSQL backends, the broker nodes, and this process (sink and
    observer)."""
    async with database.reading() as conn:
        backends = await conn.scalars(
            text("SELECT pid FROM pg_stat_activity WHERE datname = current_database()")
        )
        postgres = [int(pid) for pid in backends]
    service = [
        pid
        for instance in instances
        if instance.process is not None and instance.alive()
        for pid in with_children(instance.process.pid)
    ]
    return {
        "service": service,
        "PostgreSQL": postgres,
        "RabbitMQ": cluster.pids(),
        "sink and observer": [os.getpid()],
    }


async def _faults(
    plan: Plan,
    cluster: RabbitCluster,
    instances: list[Instance],
    sink: Sink,
    note: Callable[[str], None],
) -> None:
    """Kill the surviving instance's broker node a quarter of the way through, the first
    instance half way."""
    survivor = instances[-1]
    node = cluster.nodes[survivor.index % len(cluster.nodes)]  # the survivor's node
    await _until(_received(sink, plan.targets // 4), plan.timeout_seconds, "a quarter")
    await cluster.kill(node)
    note(f"killed broker node {node.name} at {len(sink.received)} received")
    await _until(_received(sink, plan.targets // 2), plan.timeout_seconds, "a half")
    doomed = instances[0]
    await doomed.kill()
    note(f"killed service instance {doomed.index} at {len(sink.received)} received")


def _received(sink: Sink, count: int) -> Callable[[], Awaitable[bool]]:
    async def reached() -> bool:
        return len(sink.received) >= count

    return reached


async def _interruptible(work: Coroutine[Any, Any, Outcome]) -> Outcome:
    """`work`, cancelled by SIGTERM as by Ctrl-C, so that it tears down what it started."""
    task = asyncio.ensure_future(work)
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    return await task


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scripts/cluster",
        description="A webhook fan-out through service instances on a RabbitMQ cluster on "
        "loopback and a fresh PostgreSQL database, killing a broker node and a service "
        "instance on the way; prints targets, received, lost and duplicates. Exits 1 if any "
        "target was lost or a duplicate is not among the rows flagged resent.",
    )
    parser.add_argument("--targets", type=int, default=Plan.targets)
    parser.add_argument("--nodes", type=int, default=Plan.nodes, help="RabbitMQ nodes")
    parser.add_argument("--instances", type=int, default=Plan.instances)
    parser.add_argument(
        "--workers", type=int, default=Plan.workers, help="service processes per instance"
    )
    parser.add_argument(
        "--no-faults", dest="faults", action="store_false", help="kill nothing: a timing run"
    )
    parser.add_argument("--runs", type=int, default=Plan.runs, help="fan-outs, one by one")
    parser.add_argument(
        "--ramp",
        action="store_true",
        help="the fan-outs with one instance, then two, ... up to --instances (for timing)",
    )
    parser.add_argument(
        "--postgres",
        default=Plan.postgres,
        help="a PostgreSQL URL (SQLAlchemy, asyncpg) allowed to create databases",
    )
    parser.add_argument("--timeout", type=float, default=Plan.timeout_seconds)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    plan = Plan(
        targets=args.targets,
        nodes=args.nodes,
        instances=args.instances,
        workers=args.workers,
        faults=args.faults,
        runs=args.runs,
        ramp=args.ramp,
        postgres=args.postgres,
        timeout_seconds=args.timeout,
    )
    outcome = asyncio.run(_interruptible(run(plan, lambda line: print(line, flush=True))))
    for line in outcome.lines()[len(outcome.events) :]:
        print(line)
    return 0 if outcome.lost == 0 and outcome.duplicates_flagged else 1


if __name__ == "__main__":
    sys.exit(main())
