"""Keeping a process's matcher in step with the directory.

Changes made through this process's API are applied at once (`apply_change`). Changes made by
other instances sharing the database reach this one through `DirectoryFollower`, which
follows the audit log: every directory change writes exactly one audit entry in its own
transaction, so the log is also a change feed. The follower re-reads the entity's current
record rather than trusting the entry, so replaying an entry twice, or out of order, is
harmless.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import structlog
from sqlalchemy import func, select

from core.errors import StoreUnavailable
from dissemination.directory.lists import LIST_ENTITY, DistributionLists
from dissemination.directory.store import (
    CONTACT,
    ESCALATION,
    STAKEHOLDER,
    SUBSCRIPTION,
    Directory,
    EntitySpec,
)
from dissemination.store.tables import audit_log
from subscriptions.codec import (
    contact_model,
    distribution_list_model,
    stakeholder_model,
    subscription_model,
)
from subscriptions.matcher import Matcher

log = structlog.stdlib.get_logger(__name__)

SPECS = {spec.name: spec for spec in (STAKEHOLDER, CONTACT, SUBSCRIPTION)}
# PostgreSQL assigns audit ids at insert, not at commit: a transaction holding a lower id can
# commit after a higher one was read. Re-reading a trailing window of ids catches those.
REPLAY_WINDOW = 1000


def apply_change(
    matcher: Matcher, spec: EntitySpec, record: Mapping[str, Any] | None, entity_id: str
) -> None:
    """Bring the matcher up to date with one entity (`record` None: it no longer exists).
    Escalation policies do not take part in matching."""
    if spec is ESCALATION:
        return
    if spec is STAKEHOLDER:
        if record is None:
            matcher.remove_stakeholder(entity_id)
        else:
            matcher.upsert_stakeholder(stakeholder_model(record))
    elif spec is CONTACT:
        if record is None:
            matcher.remove_contact(entity_id)
        else:
            matcher.upsert_contact(contact_model(record))
    elif record is None:
        matcher.remove_subscription(entity_id)
    else:
        matcher.upsert_subscription(subscription_model(record))


def apply_list_change(matcher: Matcher, record: Mapping[str, Any] | None, list_id: str) -> None:
    """Bring the matcher up to date with one distribution list (`record` None: deleted)."""
    if record is None:
        matcher.remove_list(list_id)
    else:
        matcher.upsert_list(distribution_list_model(record))


class DirectoryFollower:
    """Follows directory changes made by any instance and applies them to this matcher."""

    def __init__(self, directory: Directory, matcher: Matcher, interval_seconds: float) -> None:
        self.directory = directory
        self.lists = DistributionLists(directory.database)
        self.matcher = matcher
        self.interval_seconds = interval_seconds
        self.high_water = 0
        self._applied: set[int] = set()

    async def start_from_now(self) -> None:
        """Skip the history: the matcher is loaded from the directory itself right after this.
        Every change visible now is in that load, so the trailing window's visible entries
        count as applied; only entries that commit later (below or above the high water) are
        applied by the polls, instead of the first poll reading the last REPLAY_WINDOW
        entities again one by one."""
        async with self.directory.database.reading() as conn:
            self.high_water = int(await conn.scalar(select(func.max(audit_log.c.id))) or 0)
            self._applied = set(
                await conn.scalars(
                    select(audit_log.c.id).where(
                        audit_log.c.id > self.high_water - REPLAY_WINDOW,
                        audit_log.c.id <= self.high_water,
                    )
                )
            )

    async def poll_once(self) -> int:
        """Apply entries not yet applied; returns how many entities were refreshed."""
        low = max(0, self.high_water - REPLAY_WINDOW)
        async with self.directory.database.reading() as conn:
            rows = list(
                await conn.execute(
                    select(audit_log.c.id, audit_log.c.entity, audit_log.c.entity_id)
                    .where(audit_log.c.id > low, audit_log.c.entity.in_([*SPECS, LIST_ENTITY]))
                    .order_by(audit_log.c.id)
                )
            )
        fresh = [row for row in rows if row.id not in self._applied]
        for row in fresh:
            if row.entity == LIST_ENTITY:
                listed = await self.lists.get(row.entity_id)
                apply_list_change(self.matcher, listed, row.entity_id)
            else:
                spec = SPECS[row.entity]
                record = await self.directory.get(spec, row.entity_id)
                apply_change(self.matcher, spec, record, row.entity_id)
            self._applied.add(row.id)
            self.high_water = max(self.high_water, row.id)
        self._applied = {i for i in self._applied if i > self.high_water - REPLAY_WINDOW}
        return len(fresh)

    async def run(self) -> None:
        """Poll until cancelled; a store outage only delays the next poll."""
        while True:
            try:
                await self.poll_once()
            except StoreUnavailable as error:
                log.warning("directory_poll_failed", reason=str(error))
            await asyncio.sleep(self.interval_seconds)
