"""The directory follower never misses a committed change, on PostgreSQL where audit ids
become visible out of order: an id is taken when the entry is inserted, seen when its
transaction commits. Whatever has committed meanwhile (a thousand later entries, an import of
thousands), and however many polls have passed, a transaction's changes reach the follower
once it commits; one that rolls back stops being waited for; too many gaps to read back end in
one reload of the matcher once the transactions that could fill them have ended."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import event

from dissemination.directory import sync
from dissemination.directory.bulk import create_many_in
from dissemination.directory.store import STAKEHOLDER, Directory
from dissemination.directory.sync import DirectoryFollower
from dissemination.store.audit import audit_values, write_audit
from dissemination.store.bulkinsert import insert_many
from dissemination.store.database import Database
from dissemination.store.tables import audit_log
from subscriptions.matcher import Matcher
from testbed.directory import ACTOR, stakeholder_fields

pytestmark = pytest.mark.parametrize("store_kind", ["postgresql"])

LATER = 1001
"""Entries committed after the held ones: more than the follower's former window (1,000)."""


class Abandoned(Exception):
    """Raised inside a transaction to roll it back."""


async def _started(database: Database) -> DirectoryFollower:
    follower = DirectoryFollower(Directory(database), Matcher(), 60.0)
    await follower.start_from_now()
    return follower


async def _other_entries(database: Database, count: int) -> None:
    """`count` audit entries that are no directory change (sign-ins, say), committed."""
    now = datetime.now(UTC)
    entry = audit_values(
        at=now,
        actor=ACTOR,
        action="sign_in",
        entity="account",
        entity_id=None,
        before=None,
        after=None,
    )
    async with database.transaction() as conn:
        await insert_many(conn, audit_log, [entry] * count)


async def _rolled_back_entry(database: Database) -> None:
    """An audit id taken by a transaction that then rolls back: a gap never filled."""
    with contextlib.suppress(Abandoned):
        async with database.transaction() as conn:
            await write_audit(
                conn,
                at=datetime.now(UTC),
                actor=ACTOR,
                action="sign_in",
                entity="account",
                entity_id=None,
                before=None,
                after=None,
            )
            raise Abandoned


@contextlib.contextmanager
def _statements(database: Database) -> Iterator[list[str]]:
    """The statements run on `database` meanwhile."""
    seen: list[str] = []

    def executed(*args: Any) -> None:
        seen.append(str(args[2]))

    event.listen(database.engine.sync_engine, "before_cursor_execute", executed)
    try:
        yield seen
    finally:
        event.remove(database.engine.sync_engine, "before_cursor_execute", executed)


async def test_an_import_committed_after_a_later_change_reaches_the_follower(
    store: Database,
) -> None:
    directory = Directory(store)
    matcher = Matcher()  # as the planner and the API share it
    follower = DirectoryFollower(directory, matcher, 60.0)
    await follower.start_from_now()
    now = datetime.now(UTC)
    many = [stakeholder_fields(f"Imported {n}") for n in range(1500)]
    async with store.transaction() as importing:
        made = await create_many_in(importing, STAKEHOLDER, many, ACTOR, now)
        other, _ = await directory.create(STAKEHOLDER, stakeholder_fields("Other"), ACTOR, now)
        assert await follower.poll_once() == 1
        assert await follower.poll_once() == 0
    assert await follower.poll_once() == 1500
    assert await follower.poll_once() == 0
    missing = [r["id"] for r, _ in made if matcher.stakeholder(r["id"]) is None]
    assert (len(missing), follower.reloads) == (0, 1)  # loaded again whole, in place
    assert follower.matcher is matcher
    assert matcher.stakeholder(other["id"]) is not None
    assert follower.state.gaps == ()


async def test_changes_held_open_under_a_thousand_later_entries_are_applied(
    store: Database,
) -> None:
    directory = Directory(store)
    follower = await _started(store)
    now = datetime.now(UTC)
    await _rolled_back_entry(store)
    await _other_entries(store, 1)
    async with store.transaction() as held:
        made = await create_many_in(
            held, STAKEHOLDER, [stakeholder_fields(f"Held {n}") for n in range(3)], ACTOR, now
        )
        await _other_entries(store, 1)
        await _rolled_back_entry(store)
        await _other_entries(store, LATER)
        other, _ = await directory.create(STAKEHOLDER, stakeholder_fields("Other"), ACTOR, now)
        assert await follower.poll_once() == 1
        for _ in range(3):  # waited for, however many polls pass
            assert await follower.poll_once() == 0
        assert all(follower.matcher.stakeholder(r["id"]) is None for r, _ in made)
    assert await follower.poll_once() == 3
    assert all(follower.matcher.stakeholder(r["id"]) is not None for r, _ in made)
    assert follower.matcher.stakeholder(other["id"]) is not None
    # each change read by itself, and the rolled-back ids no longer waited for
    assert (follower.reloads, follower.state.gaps) == (0, ())
    with _statements(store) as statements:
        assert await follower.poll_once() == 0
    assert len(statements) == 1  # nothing new: one query


async def test_a_follower_started_while_older_ids_are_held_applies_them_at_commit(
    store: Database,
) -> None:
    directory = Directory(store)
    now = datetime.now(UTC)
    async with store.transaction() as held:
        late, _ = await directory.create_in(
            held, STAKEHOLDER, stakeholder_fields("Late"), ACTOR, now
        )
        await _other_entries(store, LATER)
        follower = await _started(store)
        assert await follower.poll_once() == 0
        assert follower.matcher.stakeholder(late["id"]) is None
    assert await follower.poll_once() == 1
    assert follower.matcher.stakeholder(late["id"]) is not None
    assert follower.state.gaps == ()


async def test_too_many_gaps_reload_the_matcher_once_their_writers_have_ended(
    store: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sync, "MAX_GAPS", 3)
    directory = Directory(store)
    follower = await _started(store)
    now = datetime.now(UTC)
    async with store.transaction() as held:
        late, _ = await directory.create_in(
            held, STAKEHOLDER, stakeholder_fields("Late"), ACTOR, now
        )
        for _ in range(3):
            await _other_entries(store, 1)
            await _rolled_back_entry(store)
        await _other_entries(store, LATER)
        await directory.create(STAKEHOLDER, stakeholder_fields("Other"), ACTOR, now)
        # four gaps: forgotten, a reload due once "Late" has ended
        assert await follower.poll_once() == 1
        assert await follower.poll_once() == 0
        assert follower.matcher.stakeholder(late["id"]) is None
    assert await follower.poll_once() == 0
    assert follower.matcher.stakeholder(late["id"]) is not None
    # one reload, after the commit (one while it was open could not have held "Late")
    assert follower.reloads == 1
    assert follower.state == sync.FollowState(follower.high_water)
