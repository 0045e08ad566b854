"""When the scheduled controls run: each instance asks every minute (a tenth of a shorter
interval) whether retention or anchoring is due, and the time of the last run in the store
decides, so a job runs once per interval across the instances sharing a store and at most a
check late, after an instance's start or a failed run too (it was asked only once per
interval: up to two intervals apart).

The service's periodic tasks are driven here by hand on a FakeClock, one check per task
period, as `PeriodicTask` runs them."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from core.errors import StoreUnavailable
from dissemination.controls.jobs import ScheduledControls
from dissemination.controls.retention import PurgeReport, run_retention
from dissemination.periodic import PeriodicTask
from dissemination.settings import Settings, load_settings
from dissemination.store.database import Database
from dissemination.store.tables import scheduled_runs
from tests.fakeclock import FakeClock

HOUR = timedelta(hours=1)
A_CHECK = timedelta(minutes=1)


def hourly(tmp_path: Path) -> Settings:
    return load_settings(
        {
            "DISSEMINATION_SERVICE_DATA_DIR": str(tmp_path),
            "DISSEMINATION_RETENTION_INTERVAL_HOURS": "1",
        }
    )


def retention_task(controls: ScheduledControls) -> PeriodicTask:
    [task] = [task for task in controls.tasks() if task.name == "retention"]
    return task


async def ran_last(database: Database, job: str, at: datetime) -> None:
    """The job's last run, as another (or an earlier) instance recorded it."""
    async with database.transaction() as conn:
        await conn.execute(scheduled_runs.insert().values(job=job, last_run_at=at))


def test_the_jobs_are_checked_every_minute_or_tenth_of_their_interval(tmp_path: Path) -> None:
    def periods(**env: str) -> dict[str, float]:
        settings = load_settings(
            {"DISSEMINATION_SERVICE_DATA_DIR": str(tmp_path)}
            | {f"DISSEMINATION_{k.upper()}": v for k, v in env.items()}
        )
        database = Database.from_settings(settings.store, settings.data_path)
        tasks = ScheduledControls(database, settings, None, FakeClock(datetime.now(UTC))).tasks()
        return {task.name: task.seconds for task in tasks}

    assert periods() == {"retention": 60, "record-anchoring": 60}
    assert periods(record_anchor_interval_minutes="5") == {"retention": 60, "record-anchoring": 30}


async def test_instances_run_the_job_once_per_interval_at_most_a_check_late(
    store: Database, tmp_path: Path
) -> None:
    clock = FakeClock(datetime(2032, 11, 24, 15, 0, tzinfo=UTC))
    start = clock.now
    due = start + timedelta(minutes=2)  # due just after these instances start
    await ran_last(store, "retention", due - HOUR)
    tasks = [retention_task(ScheduledControls(store, hourly(tmp_path), None, clock))] * 2
    period = timedelta(seconds=tasks[0].seconds)
    # the second instance started half a period after the first
    checks = sorted(
        (start + offset + k * period, n)
        for n, offset in enumerate((timedelta(0), period / 2))
        for k in range(int(3 * HOUR / period))
    )
    runs = []
    for at, n in checks:
        clock.now = at
        if await tasks[n].job() is not None:
            runs.append(at)

    assert len(runs) == 3
    assert due <= runs[0] <= due + A_CHECK, runs[0] - due
    for earlier, later in itertools.pairwise(runs):
        assert HOUR <= later - earlier <= HOUR + A_CHECK, later - earlier


async def test_after_a_failed_run_the_job_runs_at_the_next_check(
    store: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = FakeClock(datetime(2032, 11, 24, 15, 0, tzinfo=UTC))
    task = retention_task(ScheduledControls(store, hourly(tmp_path), None, clock))
    failures = [StoreUnavailable("the store went away mid-run")]

    async def failing_once(database: Database, cutoff: datetime, now: datetime) -> PurgeReport:
        if failures:
            raise failures.pop()
        return await run_retention(database, cutoff, now)

    monkeypatch.setattr("dissemination.controls.jobs.run_retention", failing_once)
    failed_at = clock.now
    with pytest.raises(StoreUnavailable):
        await task.job()  # PeriodicTask logs it and checks again one period later
    clock.advance(task.seconds)
    assert await task.job() is not None
    assert clock.now - failed_at <= A_CHECK
