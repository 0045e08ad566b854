"""The directory follower keeps each process's matcher current with changes made anywhere: a
follower started just before the matcher is loaded reads nothing that load already holds,
applies what changes after, and still applies a change whose audit id was taken before the
start but committed after it (PostgreSQL hands out ids at insert, not at commit)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from dissemination.api.directory import load_matcher
from dissemination.directory.store import STAKEHOLDER, Directory, EntitySpec
from dissemination.directory.sync import DirectoryFollower
from dissemination.settings import load_settings
from dissemination.store.database import Database
from subscriptions.matcher import Matcher
from testbed.directory import ACTOR, stakeholder_fields


class CountingDirectory(Directory):
    """The real directory, counting the entities the follower reads one by one."""

    reads = 0

    async def get(self, spec: EntitySpec, entity_id: str) -> dict[str, Any] | None:
        self.reads += 1
        return await super().get(spec, entity_id)


async def _started(directory: Directory) -> DirectoryFollower:
    """As the service starts one: the follower first, then the matcher loaded."""
    follower = DirectoryFollower(directory, Matcher(), 60.0)
    await follower.start_from_now()
    follower.matcher = await load_matcher(directory)
    return follower


async def test_a_started_follower_reads_nothing_the_loaded_matcher_holds(
    service_env: dict[str, str],
) -> None:
    settings = load_settings(service_env)
    database = Database.from_settings(settings.store, settings.data_path)
    directory = CountingDirectory(database)
    try:
        now = datetime.now(UTC)
        before = [
            (await directory.create(STAKEHOLDER, stakeholder_fields(f"Before {n}"), ACTOR, now))[0]
            for n in range(5)
        ]
        follower = await _started(directory)
        assert all(follower.matcher.stakeholder(r["id"]) is not None for r in before)
        assert (await follower.poll_once(), directory.reads) == (0, 0)

        after, _ = await directory.create(STAKEHOLDER, stakeholder_fields("After"), ACTOR, now)
        assert follower.matcher.stakeholder(after["id"]) is None
        assert (await follower.poll_once(), directory.reads) == (1, 1)
        assert follower.matcher.stakeholder(after["id"]) is not None
        assert await follower.poll_once() == 0  # applied once
    finally:
        await database.close()


async def test_a_change_committed_after_the_start_under_an_older_id_is_applied(
    service_env: dict[str, str], store_kind: str
) -> None:
    if store_kind != "postgresql":
        pytest.skip("SQLite serializes writers: ids commit in order there")
    settings = load_settings(service_env)
    database = Database.from_settings(settings.store, settings.data_path)
    directory = Directory(database)
    try:
        now = datetime.now(UTC)
        async with database.transaction() as late:
            held, _ = await directory.create_in(
                late, STAKEHOLDER, stakeholder_fields("Late"), ACTOR, now
            )
            early, _ = await directory.create(STAKEHOLDER, stakeholder_fields("Early"), ACTOR, now)
            follower = await _started(directory)  # the late one's id is below the high water
            assert follower.matcher.stakeholder(early["id"]) is not None
            assert follower.matcher.stakeholder(held["id"]) is None
            assert await follower.poll_once() == 0
        assert await follower.poll_once() == 1
        assert follower.matcher.stakeholder(held["id"]) is not None
    finally:
        await database.close()
