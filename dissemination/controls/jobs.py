"""The controls the service runs on a schedule: retention every `retention.interval_hours`,
and anchoring the dissemination record every `record.anchor_interval_minutes` (verify what
was appended since the last anchor, then note the new head in the anchor file). Instances
sharing a store take turns (`store.scheduled`): each job runs once per interval in all. Every
instance asks whether a job is due every `check_period` (a minute; a tenth of a shorter
interval), so a run is at most that late, after a start or a failed run too."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import structlog

from core.clock import Clock
from dissemination.controls import record
from dissemination.controls.anchors import AnchorFileError, append_anchor, last_anchor
from dissemination.controls.recordkey import RecordKey
from dissemination.controls.retention import PurgeReport, run_retention
from dissemination.metrics import Metrics
from dissemination.periodic import PeriodicTask
from dissemination.settings import Settings
from dissemination.store.audit import Actor, write_audit
from dissemination.store.database import Database
from dissemination.store.scheduled import check_period, turn

log = structlog.stdlib.get_logger(__name__)

ANCHORING_ACTOR = Actor(None, "record-anchoring")


class RetentionJob:
    """`dissemination retention run`, on a schedule: the same purge, audited the same way."""

    name = "retention"

    def __init__(self, database: Database, settings: Settings, clock: Clock) -> None:
        self.database = database
        self.days = settings.retention.days
        self.interval = timedelta(hours=settings.retention.interval_hours)
        self.clock = clock

    async def run(self) -> PurgeReport | None:
        """Purge what is due, if it is this instance's turn; None when it is not."""
        now = self.clock()
        cutoff = now - timedelta(days=self.days)
        async with turn(self.database, self.name, self.interval, now) as mine:
            if not mine:
                return None
            report = await run_retention(self.database, cutoff, now)
        log.info(
            "retention_run",
            received_before=cutoff.isoformat(),
            alerts=report.alerts,
            payloads=report.payloads,
            rejections=report.rejections,
            quarantined=report.quarantined,
            sends=report.sends,
        )
        return report


@dataclass(frozen=True, slots=True)
class RecordVerification:
    """What this instance's last scheduled verification of the record found. `ok` is None
    until one ran here (another instance sharing the store may be taking the turns)."""

    ok: bool | None = None
    last_verified_seq: int = 0
    last_verified_at: datetime | None = None
    failed_seq: int | None = None
    problem: str | None = None


class RecordAnchoring:
    """Verify the record from the last anchor to the head with the record key, then append
    the head to the anchor file. A failure is logged at ERROR with where the chain broke,
    audited, and kept in `status`; nothing is anchored after a break."""

    name = "record-anchoring"

    def __init__(
        self,
        database: Database,
        settings: Settings,
        key: RecordKey | None,
        clock: Clock,
        metrics: Metrics | None = None,
    ) -> None:
        self.database = database
        self.key = key
        self.metrics = metrics or Metrics()
        self.unkeyed_entries = settings.record.unkeyed_entries
        self.interval = timedelta(minutes=settings.record.anchor_interval_minutes)
        self.path = anchor_path(settings)
        self.clock = clock
        self.status = RecordVerification()

    async def run(self) -> RecordVerification | None:
        """Verify and anchor, if it is this instance's turn; None when it is not."""
        now = self.clock()
        async with turn(self.database, self.name, self.interval, now) as mine:
            if not mine:
                return None
            self.status = await self._verify_and_anchor(now)
        if self.status.ok and self.status.last_verified_at is not None:
            self.metrics.record_verified(
                self.status.last_verified_seq, self.status.last_verified_at
            )
        elif not self.status.ok:
            self.metrics.record_verification_failed()
        return self.status

    async def _verify_and_anchor(self, now: datetime) -> RecordVerification:
        try:
            anchor = await asyncio.to_thread(last_anchor, self.path)
        except (AnchorFileError, OSError) as error:
            return await self._failed(now, None, f"cannot read the anchor file: {error}")
        found = await record.verify_after(
            self.database, anchor or (0, record.GENESIS), self.key, self.unkeyed_entries
        )
        if not found.intact:
            return await self._failed(now, found.failed_at, found.problem or "")
        head = found.last
        if head[0] > 0 and head != anchor:
            try:
                await asyncio.to_thread(append_anchor, self.path, head, now)
            except OSError as error:
                return await self._failed(now, None, f"cannot write the anchor file: {error}")
            await self._audit(now, "record_anchor", {"seq": head[0], "hash": head[1]}, None)
            log.info("record_anchored", new_entries=found.checked, seq=head[0], hash=head[1])
        return RecordVerification(True, head[0], now)

    async def _failed(self, now: datetime, seq: int | None, problem: str) -> RecordVerification:
        log.error("record_verification_failed", failed_seq=seq, problem=problem)
        await self._audit(now, "record_verify_failed", {"failedSeq": seq}, problem)
        return RecordVerification(
            False,
            self.status.last_verified_seq,
            self.status.last_verified_at,
            seq,
            problem,
        )

    async def _audit(
        self, now: datetime, action: str, after: dict[str, object], reason: str | None
    ) -> None:
        async with self.database.transaction() as conn:
            await write_audit(
                conn,
                at=now,
                actor=ANCHORING_ACTOR,
                action=action,
                entity="dissemination_record",
                entity_id=None,
                before=None,
                after=after | {"anchorFile": str(self.path)},
                reason=reason,
            )


def anchor_path(settings: Settings) -> Path:
    """`record.anchor_file`, a relative path being under the data directory."""
    path = Path(settings.record.anchor_file).expanduser()
    return path if path.is_absolute() else settings.data_path / path


class ScheduledControls:
    """The scheduled controls of one instance, and the periodic tasks that run them: none
    for a job whose interval is 0 (disabled). A task asks every `check_period` whether its
    job is due (`turn` decides), so it runs once per interval, late by at most that."""

    def __init__(
        self,
        database: Database,
        settings: Settings,
        key: RecordKey | None,
        clock: Clock,
        metrics: Metrics | None = None,
    ) -> None:
        self.retention = RetentionJob(database, settings, clock)
        self.anchoring = RecordAnchoring(database, settings, key, clock, metrics)

    def tasks(self) -> list[PeriodicTask]:
        return [
            PeriodicTask(job.name, job.run, check_period(job.interval).total_seconds())
            for job in (self.retention, self.anchoring)
            if job.interval > timedelta(0)
        ]
