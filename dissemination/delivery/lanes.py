"""The lanes of a delivery worker: an ordinary one and one for urgent alerts, each with its
own send slots and its own bound on rows claimed and not yet settled."""

from __future__ import annotations

import asyncio


class SendLane:
    """One way through a worker: how many sends may be under way at once, in all and to any
    one host, and the rows claimed and not yet settled, which a task claims more of only
    while they are fewer than twice the concurrency (bounding what a crash leaves in
    `sending`) and, for a lane that `yields_to` another, while that one holds none: the
    ordinary lane claims nothing while urgent rows are under way, so they have the process
    (its event loop, the store's connections) to themselves but for sends already started."""

    def __init__(
        self, concurrency: int, per_host_concurrency: int, yields_to: SendLane | None = None
    ) -> None:
        self.concurrency = concurrency
        self.slots = asyncio.Semaphore(concurrency)
        self.per_host_concurrency = per_host_concurrency
        self._hosts: dict[str, asyncio.Semaphore] = {}
        self.unsettled = 0
        self.room = asyncio.Condition()
        self.yields_to = yields_to
        self._yielding: list[SendLane] = []
        if yields_to is not None:
            yields_to._yielding.append(self)

    def host(self, host: str) -> asyncio.Semaphore:
        slots = self._hosts.get(host)
        if slots is None:
            slots = self._hosts[host] = asyncio.Semaphore(self.per_host_concurrency)
        return slots

    def full(self) -> bool:
        ahead = self.yields_to
        return self.unsettled >= 2 * self.concurrency or (ahead is not None and ahead.unsettled > 0)

    async def release(self, rows: int) -> None:
        """`rows` claimed rows are settled (or given up): make room for more, here and, once
        this lane holds none, in the lanes that yield to it."""
        async with self.room:
            self.unsettled -= rows
            self.room.notify_all()
        if not self.unsettled:
            for lane in self._yielding:
                async with lane.room:
                    lane.room.notify_all()
