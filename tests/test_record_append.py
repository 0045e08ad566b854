"""Appends to the dissemination record, on SQLite and PostgreSQL, of one entry, of a few and
of more than go as arrays: each append continues the chain from the head, moves the head to
its last entry, and the whole chain verifies (on PostgreSQL the entries and the head's new
hash go in one statement)."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

import pytest
from sqlalchemy import func, select

from dissemination.controls import record
from dissemination.controls.record import Entry, append_records
from dissemination.controls.recordkey import RecordKey
from dissemination.store.bulkinsert import ARRAYS_FROM
from dissemination.store.database import Database
from dissemination.store.tables import dissemination_chain, dissemination_records

NOW = datetime(2026, 12, 7, 3, 0, tzinfo=UTC)
KEY = RecordKey(b"record-key-for-the-append-tests-0123456789")


def entries(count: int, start: int) -> list[Entry]:
    return [
        Entry(
            alert_id=f"alert-{start}",
            delivery_id=f"delivery-{start + i}",
            stakeholder_id=f"stakeholder-{i}",
            organization=None if i % 2 else "County EOC",
            channel="webhook",
            address=f"https://hooks.example.org/{i}",
            outcome=record.RELEASED,
            rule=("sub-1", "sub-1", "sub-2"),
            justification="subscription match",
            content_sha256=None if i % 3 else "ab" * 32,
        )
        for i in range(count)
    ]


async def test_appends_of_any_size_chain_on_from_the_head_and_verify(store: Database) -> None:
    sizes = [1, 3, ARRAYS_FROM + 5, 2]
    written = 0
    for size in sizes:
        async with store.transaction() as conn:
            await append_records(conn, entries(size, written), NOW, KEY)
        written += size
        async with store.reading() as conn:
            head = (await conn.execute(select(dissemination_chain))).mappings().one()
            last = (
                await conn.execute(
                    select(dissemination_records.c.seq, dissemination_records.c.hash)
                    .order_by(dissemination_records.c.seq.desc())
                    .limit(1)
                )
            ).one()
            count = await conn.execute(select(func.count()).select_from(dissemination_records))
        assert (head["seq"], head["last_hash"]) == (written, last.hash)
        assert last.seq == written == count.scalar_one()
    found = await record.verify(store, key=KEY)
    assert found.intact, found.problem
    assert found.checked == sum(sizes)


async def test_an_append_that_fails_leaves_neither_entries_nor_a_moved_head(
    store: Database,
) -> None:
    async with store.transaction() as conn:
        await append_records(conn, entries(2, 0), NOW, KEY)
    bad = entries(ARRAYS_FROM + 1, 2)
    bad[-1] = dataclasses.replace(bad[-1], channel=None)  # type: ignore[arg-type]
    with pytest.raises(Exception, match="channel"):  # the store's refusal, in its own class
        async with store.transaction() as conn:
            await append_records(conn, bad, NOW, KEY)
    found = await record.verify(store, key=KEY)
    assert found.intact, found.problem
    assert found.checked == 2
