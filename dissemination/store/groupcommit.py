"""Group commit: concurrent writers share one database transaction.

Each caller submits its item and awaits its own result. While one batch is being written
(and its commit is waiting on fsync), newcomers queue up and go together in the next batch,
so a busy service pays one commit per batch instead of one per item, with no added delay
when it is idle. A batch that fails as a whole for a reason other than a store outage is
retried item by item, so one poisonous item cannot sink its neighbours.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

from core.errors import StoreUnavailable

ItemT = TypeVar("ItemT")
ResultT = TypeVar("ResultT")


class GroupCommit(Generic[ItemT, ResultT]):
    """Coalesces concurrent `submit` calls into calls of `write_batch` (one transaction each)."""

    def __init__(
        self,
        write_batch: Callable[[Sequence[ItemT]], Awaitable[list[ResultT]]],
        max_batch: int = 64,
    ) -> None:
        self.write_batch = write_batch
        self.max_batch = max_batch
        self._pending: list[tuple[ItemT, asyncio.Future[ResultT]]] = []
        self._writer: asyncio.Task[None] | None = None
        self.batches = 0

    async def submit(self, item: ItemT) -> ResultT:
        future: asyncio.Future[ResultT] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._drain(), name="group-commit")
        return await future

    async def _drain(self) -> None:
        while self._pending:
            await asyncio.sleep(0)  # let submitters that are ready right now join this batch
            batch = self._pending[: self.max_batch]
            del self._pending[: self.max_batch]
            await self._write(batch)

    async def _write(self, batch: list[tuple[ItemT, asyncio.Future[ResultT]]]) -> None:
        try:
            results = await self.write_batch([item for item, _ in batch])
        except StoreUnavailable as error:
            _fail(batch, error)
            return
        except Exception as error:
            if len(batch) == 1:
                _fail(batch, error)
                return
            for single in batch:
                await self._write([single])
            return
        self.batches += 1
        for (_, future), result in zip(batch, results, strict=True):
            if not future.done():
                future.set_result(result)


def _fail(batch: Sequence[tuple[object, asyncio.Future[ResultT]]], error: BaseException) -> None:
    for _, future in batch:
        if not future.done():
            future.set_exception(error)
