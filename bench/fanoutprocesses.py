"""The fan-out benchmark's service leg as deployed: `dissemination run --workers N` (a
supervisor and N service processes, competing consumers on the inbound and channel queues)
in a child process, timed on one fan-out as `bench.fanoutservice` times the service in its
own process. Each process's start-up (imports, connections, the matcher) is not timed: the
alert is published once every process consumes from every queue it will use."""

from __future__ import annotations

import asyncio

import aio_pika

from bench.common import BenchError, Deadline
from bench.fanoutservice import cpu_groups, enrol_targets, timed_fanout
from bench.rawlegs import Leg, SinkPorts, split
from bench.serviceprocess import start_service
from dissemination.broker.dispatch import delivery_queue
from dissemination.broker.topology import broker_url
from dissemination.settings import Settings
from dissemination.store.database import Database
from testbed.cputime import with_children

STOP_SECONDS = 60.0
CONSUMERS_SECONDS = 60.0
POLL_SECONDS = 0.1


async def processes_leg(
    settings: Settings,
    env: dict[str, str],
    channel: str,
    targets: int,
    sinks: SinkPorts,
    deadline: Deadline,
    mode: str,
    warm: bool,
    workers: int,
) -> Leg:
    """Enrol the targets, start `dissemination run` with `workers` processes, wait until each
    consumes, time one fan-out, stop it."""
    database = Database.from_settings(settings.store, settings.data_path)
    try:
        rows = await enrol_targets(database, channel, targets, sinks, mode)
        process, _ = await start_service(
            env | {"DISSEMINATION_SERVICE_WORKERS": str(workers)},
            settings.data_path / "service.log",
        )
        try:
            queues = [settings.broker.inbound_queue]
            queues += [delivery_queue(settings.broker, part) for part, _ in split(channel, 1)]
            await wait_for_consumers(settings, queues, workers)
            groups = cpu_groups(sinks, with_children(process.pid))
            return await timed_fanout(database, settings, rows, groups, deadline, warm)
        finally:
            if process.returncode is None:
                process.terminate()
            await asyncio.wait_for(process.wait(), STOP_SECONDS)
    finally:
        await database.close()


async def wait_for_consumers(settings: Settings, queues: list[str], workers: int) -> None:
    """Until each of `queues` has `workers` consumers (every process has started its intake
    and its workers), within `CONSUMERS_SECONDS`."""
    loop = asyncio.get_running_loop()
    give_up = loop.time() + CONSUMERS_SECONDS
    connection = await aio_pika.connect(broker_url(settings.broker), timeout=10)
    async with connection:
        channel = await connection.channel()
        underlay = await channel.get_underlay_channel()
        while True:
            counts = [
                (await underlay.queue_declare(name, passive=True)).consumer_count or 0
                for name in queues
            ]
            if min(counts) >= workers:
                return
            if loop.time() > give_up:
                found = ", ".join(f"{n}: {c}" for n, c in zip(queues, counts, strict=True))
                message = f"not every process consumed within {CONSUMERS_SECONDS:g} s"
                raise BenchError(f"{message}: {found}")
            await asyncio.sleep(POLL_SECONDS)
