"""Keeping a process's matcher in step with the directory.

Changes made through this process's API are applied at once (`apply_change`). Changes made by
other instances sharing the database reach this one through `DirectoryFollower`, which
follows the audit log: every directory change writes its audit entries in the transaction
that makes it, so the log is also a change feed. The follower re-reads the entity's current
record rather than trusting the entry, so replaying an entry twice, or out of order, is
harmless.

Audit ids do not become visible in order on PostgreSQL: an entry takes its id when it is
inserted and is seen when its transaction commits, so an import holding ids 1-1,500 can commit
after 1,501 has been read. Every id below the follower's high water that it has not seen is
kept as a gap, and the gaps are read again at each poll until no transaction that could fill
them is still open. A transaction that inserts into the audit log holds a ROW EXCLUSIVE lock
on it from before it takes an id until it ends, so the transactions holding that lock once a
gap has been seen (`pg_locks`) include every one that may still fill it. Once they have all
ended, one more read takes what they committed; what is still missing was rolled back (the
log is append-only: nothing else removes an entry). So nothing committed is missed, however
large the transaction or however long it stays open, and a poll with no gap open is one
query for the ids above the high water. (The audit id sequence is not cached per session, so
ids are taken in order. SQLite has one writer at a time: its ids commit in order.)

The matcher is loaded again whole, in place (`load_into`), instead of entity by entity when
one poll brings more changes than that is worth (an import), and when there are more gaps
than are worth reading back one by one: then once every transaction that could fill them has
ended.
"""

from __future__ import annotations

import asyncio
import bisect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import structlog
from sqlalchemy import Row, func, or_, select, text

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
FOLLOWED = (*SPECS, LIST_ENTITY)
MAX_GAPS = 200
"""Gaps read back one by one at each poll; beyond this many the follower forgets them and loads
the matcher again whole once every transaction that could fill them has ended."""
RELOAD_OVER = 1000
"""Directory changes in one poll from which the matcher is loaded again whole rather than
reading each changed entity (an import of thousands would be thousands of reads)."""

Writers = frozenset[str]
"""Open transactions writing the audit log, by PostgreSQL virtual transaction id."""

_AUDIT_WRITERS = text(
    "SELECT DISTINCT virtualtransaction FROM pg_locks"
    " WHERE locktype = 'relation' AND mode = 'RowExclusiveLock'"
    " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
    " AND relation = to_regclass(:table)"
)


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


async def load_into(matcher: Matcher, directory: Directory) -> None:
    """Replace everything `matcher` holds with the whole directory as it is now (in place:
    whoever holds the matcher sees the new contents). A change this process applies while
    the directory is being read may be undone by the load; its audit entry, not read yet,
    brings it back at the follower's next poll."""
    stakeholders = [stakeholder_model(r) for r in await directory.all(STAKEHOLDER)]
    contacts = [contact_model(r) for r in await directory.all(CONTACT)]
    subscriptions = [subscription_model(r) for r in await directory.all(SUBSCRIPTION)]
    lists = [distribution_list_model(r) for r in await DistributionLists(directory.database).all()]
    matcher.load(stakeholders, contacts, subscriptions, lists)


@dataclass(frozen=True, slots=True)
class Awaited:
    """Open transactions that may still commit audit entries the follower is waiting for: the
    audit log's writers open when it first looked (`writers` None: not looked yet), less those
    that have ended since. Once none is left (`settled`), the next read of the log takes
    everything they committed."""

    writers: Writers | None = None

    def narrowed(self, open_now: Writers) -> Awaited:
        """Those still open of the awaited ones (all open now, if not looked yet)."""
        return Awaited(open_now if self.writers is None else self.writers & open_now)

    @property
    def settled(self) -> bool:
        return self.writers is not None and not self.writers


@dataclass(frozen=True, slots=True)
class Gap:
    """Audit ids `lo`..`hi`, below the high water, not seen yet, and the transactions that
    may still fill them."""

    lo: int
    hi: int
    awaited: Awaited = Awaited()

    def without(self, seen: Sequence[int]) -> list[Gap]:
        """What is left of the gap once the ids in `seen` (ascending) are taken out."""
        pieces = []
        lo = self.lo
        inside = seen[bisect.bisect_left(seen, self.lo) : bisect.bisect_right(seen, self.hi)]
        for seen_id in inside:
            if seen_id > lo:
                pieces.append(Gap(lo, seen_id - 1, self.awaited))
            lo = seen_id + 1
        if lo <= self.hi:
            pieces.append(Gap(lo, self.hi, self.awaited))
        return pieces


@dataclass(frozen=True, slots=True)
class FollowState:
    """Where the follower stands: every audit id up to `high_water` has been applied or is in
    `gaps` (lowest first); `reload`, when set, is what to wait for before the matcher is
    loaded again whole."""

    high_water: int = 0
    gaps: tuple[Gap, ...] = ()
    reload: Awaited | None = None

    def looked(self, open_now: Writers) -> FollowState:
        """The state once the audit log's writers open now are known."""
        return FollowState(
            self.high_water,
            tuple(Gap(g.lo, g.hi, g.awaited.narrowed(open_now)) for g in self.gaps),
            None if self.reload is None else self.reload.narrowed(open_now),
        )

    def after_read(self, ids: Sequence[int]) -> FollowState:
        """The state once the entries `ids` (ascending) have been read and applied: ids above
        the high water raise it, leaving gaps for those skipped; ids in gaps close them; gaps
        settled before the read are done with (what is left of them was rolled back)."""
        high_water = self.high_water
        below = [i for i in ids if i <= high_water]
        fresh_gaps = []
        for entry_id in ids:
            if entry_id > high_water:
                if entry_id > high_water + 1:
                    fresh_gaps.append(Gap(high_water + 1, entry_id - 1))
                high_water = entry_id
        kept = [p for g in self.gaps if not g.awaited.settled for p in g.without(below)]
        gaps = (*kept, *fresh_gaps)
        if len(gaps) > MAX_GAPS:  # forgotten: the reload takes whatever they commit
            return FollowState(high_water, (), Awaited())
        return FollowState(high_water, gaps, self.reload)


class DirectoryFollower:
    """Follows directory changes made by any instance and applies them to this matcher."""

    def __init__(self, directory: Directory, matcher: Matcher, interval_seconds: float) -> None:
        self.directory = directory
        self.lists = DistributionLists(directory.database)
        self.matcher = matcher
        self.interval_seconds = interval_seconds
        self.state = FollowState()
        self.reloads = 0

    @property
    def high_water(self) -> int:
        return self.state.high_water

    async def start_from_now(self) -> None:
        """Skip the history: the matcher is loaded from the directory itself right after this,
        so it holds every change committed by then. Entries that commit later are applied by
        the polls: those above the high water as any, those below it (taken by a transaction
        still open now) as gaps. Only while the audit log has writers open are the gaps looked
        for (one read of the log's ids): those of a transaction already ended are all in the
        load."""
        database = self.directory.database
        async with database.reading() as conn:
            high_water = int(await conn.scalar(select(func.max(audit_log.c.id))) or 0)
        writers = await self._audit_writers()
        if not writers:
            self.state = FollowState(high_water)
            return
        runs = (
            select(audit_log.c.id, func.lag(audit_log.c.id, 1, 0).over(order_by=audit_log.c.id))
            .where(audit_log.c.id <= high_water)
            .subquery("runs")
        )
        after, before = runs.c[0], runs.c[1]
        unseen = select(before + 1, after - 1).where(after > before + 1).limit(MAX_GAPS + 1)
        async with database.reading() as conn:
            found = [(int(lo), int(hi)) for lo, hi in await conn.execute(unseen)]
        awaited = Awaited(writers)
        if len(found) > MAX_GAPS:
            self.state = FollowState(high_water, (), awaited)
        else:
            gaps = tuple(Gap(lo, hi, awaited) for lo, hi in sorted(found))
            self.state = FollowState(high_water, gaps)

    async def poll_once(self) -> int:
        """Apply the entries not applied yet; returns how many directory changes they were.
        With no gap open, one query."""
        state = self.state
        if state.gaps or state.reload is not None:
            # before the read: a writer ended by now committed before the read
            self.state = state = state.looked(await self._audit_writers())
        reload_due = state.reload is not None and state.reload.settled
        rows = await self._entries_after(state)
        changes = [row for row in rows if row.entity in FOLLOWED]
        if reload_due or len(changes) > RELOAD_OVER:
            await load_into(self.matcher, self.directory)
            self.reloads += 1
            log.info("directory_reloaded", changes=len(changes), gaps_settled=reload_due)
            if reload_due:
                state = replace(state, reload=None)
        else:
            for row in changes:
                await self._apply(row.entity, row.entity_id)
        self.state = state.after_read([row.id for row in rows])
        return len(changes)

    async def _entries_after(self, state: FollowState) -> list[Row[Any]]:
        """The audit entries above the high water or in a gap, ascending."""
        ids = audit_log.c.id
        query = (
            select(ids, audit_log.c.entity, audit_log.c.entity_id)
            .where(or_(ids > state.high_water, *(ids.between(g.lo, g.hi) for g in state.gaps)))
            .order_by(ids)
        )
        async with self.directory.database.reading() as conn:
            return list(await conn.execute(query))

    async def _apply(self, entity: str, entity_id: str) -> None:
        if entity == LIST_ENTITY:
            apply_list_change(self.matcher, await self.lists.get(entity_id), entity_id)
        else:
            spec = SPECS[entity]
            apply_change(self.matcher, spec, await self.directory.get(spec, entity_id), entity_id)

    async def _audit_writers(self) -> Writers:
        """The transactions open now that have written (or are writing) the audit log. SQLite:
        none can be open while this reads, as far as gaps are concerned (its writers commit
        their ids in order)."""
        database = self.directory.database
        if database.dialect != "postgresql":
            return frozenset()
        async with database.reading() as conn:
            return frozenset(await conn.scalars(_AUDIT_WRITERS, {"table": audit_log.name}))

    async def run(self) -> None:
        """Poll until cancelled; a store outage only delays the next poll."""
        while True:
            try:
                await self.poll_once()
            except StoreUnavailable as error:
                log.warning("directory_poll_failed", reason=str(error))
            await asyncio.sleep(self.interval_seconds)
