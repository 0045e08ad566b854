"""The intake benchmark's service leg as deployed: `dissemination run --workers N` (a supervisor
and N worker processes, competing consumers on the inbound queue) over a pre-filled queue.

Start-up of N processes (imports, connections) takes seconds and is not intake, so the leg is
timed by the ledger itself: from the first alert's receipt to the last's, as each process
recorded it (`alerts.received_at`); the rate is the alerts after the first over that span."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from sqlalchemy import func, select

from bench.common import Deadline
from bench.intakequeue import LegRun, fill_intake_queue, queue_depth, wait_for_ledger
from bench.serviceprocess import start_service
from dissemination.ledger.alerts import Ledger
from dissemination.settings import Settings
from dissemination.store.database import Database
from dissemination.store.tables import alerts

STOP_SECONDS = 60.0


async def processes_leg(
    run: int,
    env: dict[str, str],
    settings: Settings,
    bodies: Sequence[bytes],
    deadline: Deadline,
    workers: int,
) -> LegRun:
    """Fill the inbound queue, start `dissemination run` with `workers` processes, wait until
    the ledger holds every alert, stop it; the run timed by the ledger's receipts."""
    database = Database.from_settings(settings.store, settings.data_path)
    try:
        await database.migrate()
        publisher, channel, publish_seconds = await fill_intake_queue(settings, bodies, deadline)
        try:
            process, _ = await start_service(
                env | {"DISSEMINATION_SERVICE_WORKERS": str(workers)},
                settings.data_path / "service.log",
            )
            try:
                stored, why = await wait_for_ledger(Ledger(database), len(bodies), deadline)
            finally:
                if process.returncode is None:
                    process.terminate()
                await asyncio.wait_for(process.wait(), STOP_SECONDS)
            left = await queue_depth(channel, settings.broker.inbound_queue)
        finally:
            await publisher.close()
        async with database.reading() as conn:
            first, last = (
                await conn.execute(
                    select(func.min(alerts.c.received_at), func.max(alerts.c.received_at))
                )
            ).one()
    finally:
        await database.close()
    if not why and left:
        why = f"{left} messages still ready in the inbound queue after stop"
    span = (last - first).total_seconds() if first is not None and last is not None else 0.0
    return LegRun(run, max(stored - 1, 0), span, not why, publish_seconds, None, why)
