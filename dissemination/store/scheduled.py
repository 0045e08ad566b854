"""Whose turn it is to run a scheduled job (retention, record anchoring) when several
instances share a store: one at a time, and once per interval across all of them.

Each instance asks `turn` often (every `check_period`), not once per interval: the store's
time of the last run decides when the job is due, so a job due just after an instance
started, or after a failed run, starts at most one check period late, never an interval."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime, timedelta

import structlog
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from dissemination.store.database import Database
from dissemination.store.locks import lock_key, try_lock
from dissemination.store.tables import scheduled_runs

log = structlog.stdlib.get_logger(__name__)

CHECK_PERIOD = timedelta(minutes=1)
"""How often an instance asks whether a job is due (at most a tenth of its interval)."""


def check_period(interval: timedelta) -> timedelta:
    """How often to ask `turn` about a job run every `interval`: often enough that a due run
    starts at most a minute (a tenth of the interval) late; the asking is one small read."""
    return min(CHECK_PERIOD, interval / 10)


@asynccontextmanager
async def turn(
    database: Database, job: str, interval: timedelta, now: datetime
) -> AsyncIterator[bool]:
    """Yield True when this instance runs `job` now: no other instance is running it and its
    last run (on any instance) is at least `interval` ago. The run's time is recorded when the
    block ends without an error; after an error the job is due again at once (the next
    check, within `check_period`).

    On PostgreSQL, a transaction-level advisory lock is held for the whole block, by a
    transaction that records the run as it commits: another instance finds the lock taken and
    skips. SQLite is the embedded store of a single process, whose jobs run one at a time, so
    it takes no lock."""
    if database.dialect != "postgresql":
        async with database.reading() as conn:
            due = await _due(conn, job, interval, now)
        if not due:
            yield False
            return
        yield True
        async with database.transaction() as conn:
            await _record_run(database, conn, job, now)
        return
    async with database.transaction() as conn:
        if not await try_lock(conn, lock_key("scheduled-job", job)):
            log.debug("job_skipped_running_elsewhere", job=job)
            yield False
            return
        if not await _due(conn, job, interval, now):
            yield False
            return
        yield True
        await _record_run(database, conn, job, now)


async def _due(conn: AsyncConnection, job: str, interval: timedelta, now: datetime) -> bool:
    last = await conn.scalar(
        select(scheduled_runs.c.last_run_at).where(scheduled_runs.c.job == job)
    )
    if last is None or now - last >= interval:
        return True
    log.debug("job_not_due", job=job, last_run_at=last.isoformat())
    return False


async def _record_run(database: Database, conn: AsyncConnection, job: str, now: datetime) -> None:
    await conn.execute(
        database.insert_ignoring_conflicts(scheduled_runs).values(job=job, last_run_at=now)
    )
    await conn.execute(
        update(scheduled_runs).where(scheduled_runs.c.job == job).values(last_run_at=now)
    )
