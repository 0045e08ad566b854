"""Group commit: concurrent submissions share batches, each caller gets its own result, a
poisonous item is isolated, and a store outage fails the whole batch for a retry."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from core.errors import StoreUnavailable
from dissemination.store.groupcommit import GroupCommit


class Recorder:
    def __init__(self, poison: int | None = None, outage: bool = False) -> None:
        self.batches: list[list[int]] = []
        self.poison = poison
        self.outage = outage

    async def write(self, items: Sequence[int]) -> list[int]:
        self.batches.append(list(items))
        await asyncio.sleep(0)  # a commit yields to the loop while it waits on the disk
        if self.outage:
            raise StoreUnavailable("down")
        if self.poison in items:
            raise ValueError("poison")
        return [i * 10 for i in items]


async def test_concurrent_submissions_share_batches_and_get_their_own_results() -> None:
    recorder = Recorder()
    commit = GroupCommit(recorder.write, max_batch=8)
    results = await asyncio.gather(*(commit.submit(i) for i in range(20)))
    assert results == [i * 10 for i in range(20)]
    assert sorted(i for batch in recorder.batches for i in batch) == list(range(20))
    assert len(recorder.batches) == 3  # 8 + 8 + 4, not 20 separate commits
    assert max(len(b) for b in recorder.batches) == 8


async def test_a_single_submission_is_written_at_once() -> None:
    recorder = Recorder()
    assert await GroupCommit(recorder.write).submit(7) == 70
    assert recorder.batches == [[7]]


async def test_a_poisonous_item_fails_alone() -> None:
    recorder = Recorder(poison=3)
    commit = GroupCommit(recorder.write)
    results = await asyncio.gather(*(commit.submit(i) for i in range(5)), return_exceptions=True)
    assert [r if not isinstance(r, Exception) else "error" for r in results] == [
        0,
        10,
        20,
        "error",
        40,
    ]


async def test_an_outage_fails_every_caller_of_the_batch() -> None:
    commit = GroupCommit(Recorder(outage=True).write)
    results = await asyncio.gather(*(commit.submit(i) for i in range(4)), return_exceptions=True)
    assert all(isinstance(r, StoreUnavailable) for r in results)


async def test_a_cancelled_caller_does_not_break_the_batch() -> None:
    recorder = Recorder()
    commit = GroupCommit(recorder.write)
    doomed = asyncio.ensure_future(commit.submit(1))
    survivor = asyncio.ensure_future(commit.submit(2))
    await asyncio.sleep(0)
    doomed.cancel()
    assert await survivor == 20
    with pytest.raises(asyncio.CancelledError):
        await doomed
