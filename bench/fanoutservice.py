"""The fan-out benchmark's service leg, and what the memory and latency benchmarks share with
it: the sinks' process, the service's environment pointed at them, the match-all alert that is
published, and the ledger polled until the fan-out's rows are all recorded. `bench.fanout`
times the legs against each other and reports them."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import aio_pika
from sqlalchemy import func, select

from bench.common import (
    BenchError,
    CollectorTime,
    Deadline,
)
from bench.rawlegs import (
    EMAIL,
    WEBHOOK,
    Leg,
    SinkPorts,
    split,
)
from dissemination.broker.topology import broker_url, declare_intake
from dissemination.directory.store import ESCALATION, Directory
from dissemination.service import Service
from dissemination.settings import Settings
from dissemination.store.database import Database
from dissemination.store.rows import DeliveryState
from dissemination.store.tables import deliveries
from testbed.alerts import cap_json
from testbed.cputime import processes_named, sample, spent
from testbed.directory import ACTOR, enrol_many
from testbed.twilio import ACCOUNT_SID, AUTH_TOKEN, FROM_NUMBER

POLL_SECONDS = 0.05
THIS_PROCESS = "this process"
COLLECTOR = "of which collector"
"""The part of this process's CPU the cyclic garbage collector took (counted in it too)."""
SERVICE_PROCESSES = "service processes"
"""The service as deployed, `dissemination run` in a child process: its supervisor and workers."""
TERMINAL = [
    s.value for s in DeliveryState if s not in (DeliveryState.PENDING, DeliveryState.SENDING)
]


@contextlib.asynccontextmanager
async def sinks_process() -> Any:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.sinks",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), 30)
        if not line:
            raise BenchError("bench.sinks exited before listening")
        ports = json.loads(line)
        yield SinkPorts(ports["webhook"], ports["smtp"], ports["twilio"], process.pid)
    finally:
        if process.stdin is not None:
            process.stdin.close()
        with contextlib.suppress(ProcessLookupError):
            process.terminate()
        await asyncio.wait_for(process.wait(), 30)


def cpu_groups(sinks: SinkPorts, service: list[int] | None = None) -> dict[str, list[int]]:
    """The processes whose CPU a leg accounts for: the service's (`service`, a service in
    processes of its own) or this one (the service in this process, or the raw client),
    the sinks and PostgreSQL (its server and backends; idle under SQLite)."""
    first = {THIS_PROCESS: [os.getpid()]} if service is None else {SERVICE_PROCESSES: service}
    return first | {"sinks": [sinks.pid], "PostgreSQL": processes_named("postgres")}


def address_of(channel: str, sinks: SinkPorts) -> Callable[[int], str]:
    if channel == WEBHOOK:
        return lambda n: f"http://127.0.0.1:{sinks.webhook}/hook/{n}"
    if channel == EMAIL:
        return lambda n: f"person{n}@example.org"
    return lambda n: f"+1202555{n % 10000:04d}"


def service_env(base: dict[str, str], sinks: SinkPorts) -> dict[str, str]:
    names = uuid.uuid4().hex[:6]
    return base | {
        "DISSEMINATION_BROKER_DELIVERY_EXCHANGE": f"deliveries.{names}",
        "DISSEMINATION_BROKER_DELIVERY_QUEUE_PREFIX": f"deliveries.{names}.",
        "DISSEMINATION_WEBHOOK_ALLOWED_NETWORKS": "127.0.0.1/32",
        "DISSEMINATION_EMAIL_HOST": "127.0.0.1",
        "DISSEMINATION_EMAIL_PORT": str(sinks.smtp),
        "DISSEMINATION_SMS_ACCOUNT_SID": ACCOUNT_SID,
        "DISSEMINATION_SMS_AUTH_TOKEN": AUTH_TOKEN,
        "DISSEMINATION_SMS_FROM_NUMBER": FROM_NUMBER,
        "DISSEMINATION_SMS_API_BASE": sinks.twilio,
        "DISSEMINATION_SMS_MESSAGES_PER_SECOND": "1000000",
        "DISSEMINATION_ESCALATION_POLL_SECONDS": "0.2",
    }


def poll_interval(elapsed: float) -> float:
    """How long to wait before counting the terminal rows again: 50 ms, or a two-hundredth of
    the time so far when that is longer. The count reads every row of the fan-out: at
    100,000 rows, counting every 50 ms cost PostgreSQL 24 µs a send (203 against 179), which
    the benchmark then charged to the service. The poll only says when the fan-out is over;
    `last_outcome_at` says when it was (polled, a 1,000-row fan-out of about 0.5 s was seen
    over 12 to 66 ms late)."""
    return max(POLL_SECONDS, elapsed / 200)


async def last_outcome_at(database: Database) -> datetime | None:
    """The latest time a terminal row's outcome was recorded: the time its settle (or, for a
    row withheld at planning, its plan) was written with, as the service's clock read it;
    the commit follows within the same transaction."""
    async with database.reading() as conn:
        last: datetime | None = await conn.scalar(
            select(func.max(deliveries.c.updated_at)).where(deliveries.c.state.in_(TERMINAL))
        )
        return last


async def publish_alert(
    exchange: aio_pika.abc.AbstractExchange,
    settings: Settings,
    identifier: str | None = None,
    routing_key: str = "bench.fanout",
    **overrides: Any,
) -> None:
    """One CAP alert (TLP:GREEN) that every enrolled stakeholder's subscription matches,
    published as the service's broker user, with confirms; a fresh identifier by default,
    and `overrides` for its top-level fields."""
    identifier = identifier or f"FANOUT-{uuid.uuid4().hex[:8]}"
    document = cap_json(identifier, **({"handling": {"tlp": "GREEN"}} | overrides))
    await exchange.publish(
        aio_pika.Message(
            json.dumps(document).encode(),
            content_type="application/json",
            user_id=settings.broker.username,
        ),
        routing_key=routing_key,
        mandatory=True,
    )


async def wait_for_terminal(database: Database, rows: int, deadline: Deadline) -> int:
    """Poll until the ledger holds `rows` rows in a terminal state, or the deadline passes;
    the terminal rows last counted."""
    started, done = time.perf_counter(), 0
    while done < rows and not deadline.expired():
        await asyncio.sleep(poll_interval(time.perf_counter() - started))
        done = await terminal_rows(database)
    return done


async def terminal_rows(database: Database) -> int:
    async with database.reading() as conn:
        count = await conn.scalar(
            select(func.count()).select_from(deliveries).where(deliveries.c.state.in_(TERMINAL))
        )
        return int(count or 0)


async def escalation_policy(database: Database) -> str:
    """A policy that resends once, a second after the first delivery."""
    record, _ = await Directory(database).create(
        ESCALATION,
        {"name": "bench", "steps": [{"afterSeconds": 1, "action": "resend"}]},
        ACTOR,
        datetime.now(UTC),
    )
    return str(record["id"])


async def enrol_targets(
    database: Database, channel: str, targets: int, sinks: SinkPorts, mode: str
) -> int:
    """Migrate the store and enrol `targets` stakeholders subscribed to every alert on
    `channel` (or the mixed channels' shares), before the service starts; the rows one alert
    fans out to (twice the targets under the escalating policy, which resends once)."""
    await database.migrate()
    policy = await escalation_policy(database) if mode == "escalate" else None
    for part, count in split(channel, targets):
        await enrol_many(
            database,
            count,
            part,
            address_of(part, sinks),
            ack_required=mode != "plain",
            escalation_id=policy,
        )
    return targets * (2 if policy else 1)


async def timed_fanout(
    database: Database,
    settings: Settings,
    rows: int,
    groups: dict[str, list[int]],
    deadline: Deadline,
    warm: bool,
    profiler: Any = None,
) -> Leg:
    """Publish one alert to a running service (after an untimed first one when `warm`) and
    time it from the publish to the last of its `rows` outcomes, with the CPU each of
    `groups` spent meanwhile (and, when the service is this process, the collector's)."""
    connection = await aio_pika.connect(broker_url(settings.broker), timeout=10)
    try:
        topology = await declare_intake(
            await connection.channel(publisher_confirms=True), settings.broker
        )
        earlier = 0
        if warm:
            await publish_alert(topology.exchange, settings)
            earlier = await wait_for_terminal(database, rows, deadline)
        if profiler is not None:
            profiler.start()
        before = sample(groups)
        collecting = CollectorTime.seconds
        published_at = datetime.now(UTC)  # the clock the service records outcomes with
        started = time.perf_counter()
        await publish_alert(topology.exchange, settings)
        done = await wait_for_terminal(database, earlier + rows, deadline) - earlier
        seconds = time.perf_counter() - started
        cpu = spent(before, sample(groups))
        last = await last_outcome_at(database) if done >= rows else None
        if last is not None:
            seconds = min(seconds, (last - published_at).total_seconds())
        if THIS_PROCESS in groups:
            cpu[COLLECTOR] = CollectorTime.seconds - collecting
        if profiler is not None:
            profiler.stop()
    finally:
        await connection.close()
    async with database.reading() as conn:
        sent = await conn.scalar(
            select(func.count()).select_from(deliveries).where(deliveries.c.state == "sent")
        )
    published = rows * (2 if warm else 1)
    note = "" if sent == published else f"{sent} of {published} sent"
    return Leg(done, seconds, note, cpu)


async def service_leg(
    settings: Settings,
    channel: str,
    targets: int,
    sinks: SinkPorts,
    deadline: Deadline,
    profiler: Any,
    mode: str,
    warm: bool = False,
) -> Leg:
    """The service in this process, started as `dissemination run` starts it (its start-up
    heap frozen out of later garbage collections), timed on one fan-out."""
    database = Database.from_settings(settings.store, settings.data_path)
    try:
        rows = await enrol_targets(database, channel, targets, sinks, mode)
        service = Service(settings)
        await service.start(freeze_heap=True)
        try:
            return await timed_fanout(
                database, settings, rows, cpu_groups(sinks), deadline, warm, profiler
            )
        finally:
            await service.stop()
    finally:
        await database.close()
