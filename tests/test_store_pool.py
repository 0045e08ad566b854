"""The PostgreSQL pool hands out the connection returned last: each connection prepares every
statement it runs once, so a service whose work needs few connections keeps to the few that
have prepared it, instead of preparing each statement on every connection of the pool in
turn (the first fan-out after a start was about 80 ms slower for it, of 0.5 s).

It pings a connection before handing it out only when it has been idle for a while: one the
server closed meanwhile is replaced unseen, one in steady use costs no round trip, and one
closed while in use fails that work as an outage, after which the pool connects afresh."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from core.errors import StoreUnavailable
from dissemination.settings import StoreSettings
from dissemination.store import database as database_module
from dissemination.store.database import Database
from tests.pg import psql


@pytest.fixture
async def pool(pg_url: str, tmp_path: Path) -> AsyncIterator[Database]:
    database = Database.from_settings(StoreSettings(pg_url, 5, 0.05, 0.2), tmp_path)
    try:
        yield database
    finally:
        await database.close()


async def backend_pid(database: Database) -> int:
    async with database.transaction() as conn:
        return int(await conn.scalar(text("SELECT pg_backend_pid()")))


def counted_pings(database: Database) -> list[Any]:
    """Each ping the pool sends from now on, appended."""
    dialect = database.engine.dialect
    ping = dialect.do_ping
    pings: list[Any] = []

    def counting(dbapi_connection: Any) -> bool:
        pings.append(dbapi_connection)
        return bool(ping(dbapi_connection))

    dialect.do_ping = counting  # type: ignore[method-assign]
    return pings


async def test_a_connection_in_steady_use_is_not_pinged(pool: Database) -> None:
    pings = counted_pings(pool)
    pids = {await backend_pid(pool) for _ in range(5)}
    assert len(pids) == 1
    assert pings == []


async def test_an_idle_connection_the_server_closed_is_replaced_unseen(
    pool: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    closed = await backend_pid(pool)
    psql(f"SELECT pg_terminate_backend({closed})")
    monkeypatch.setattr(database_module, "PING_AFTER_IDLE_SECONDS", 0.0)  # idle long enough
    pings = counted_pings(pool)
    replacement = await backend_pid(pool)  # no error: the ping found it closed
    assert replacement != closed
    assert len(pings) == 1


async def test_a_connection_closed_in_use_fails_that_work_as_an_outage_only(
    pool: Database,
) -> None:
    closed = await backend_pid(pool)
    psql(f"SELECT pg_terminate_backend({closed})")
    with pytest.raises(StoreUnavailable):  # returned a moment ago: not pinged
        await backend_pid(pool)
    assert await backend_pid(pool) != closed  # the next work connects afresh


async def test_work_one_at_a_time_keeps_to_the_connection_returned_last(
    pg_url: str, tmp_path: Path
) -> None:
    database = Database.from_settings(StoreSettings(pg_url, 5, 0.05, 0.2), tmp_path)
    try:

        async def backend() -> int:
            async with database.reading() as conn:
                return int(await conn.scalar(text("SELECT pg_backend_pid()")))

        async with database.reading() as outer:  # two at once: two connections
            async with database.reading() as inner:
                opened = {
                    int(await conn.scalar(text("SELECT pg_backend_pid()")))
                    for conn in (outer, inner)
                }
            outer_pid = int(await outer.scalar(text("SELECT pg_backend_pid()")))
        assert len(opened) == 2
        assert [await backend() for _ in range(5)] == [outer_pid] * 5
    finally:
        await database.close()
