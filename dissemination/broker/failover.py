"""A robust broker connection over the addresses of one RabbitMQ cluster.

aio-pika's robust connection reconnects (and restores its channels, queues and consumers)
to the one URL it was made with: with a cluster node gone, it would wait for that node.
This one moves on: every connection attempt that fails hands the next attempt to the next
address, round the list, so a service whose node dies carries on through another node
within a reconnect interval or two. The quorum queues it uses are replicated on every node,
so the messages are where it reconnects."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from aio_pika import RobustConnection
from yarl import URL

# The step of RobustConnection that makes one connection attempt to `self.url`, under its
# private name: overridden below to choose the address before each attempt.
_ATTEMPT = "_RobustConnection__connect_transport"
_connect_once: Callable[[RobustConnection], Awaitable[None]] = getattr(RobustConnection, _ATTEMPT)


class FailoverConnection(RobustConnection):
    """A robust connection that tries `addresses` in turn, starting with the first, and moves
    to the next one after each failed (re)connection attempt."""

    def __init__(self, addresses: Sequence[str], **kwargs: Any) -> None:
        if not addresses:
            raise ValueError("a connection needs at least one broker address")
        super().__init__(URL(addresses[0]), **kwargs)
        self.addresses = tuple(URL(address) for address in addresses)
        self._turn = 0

    @property
    def address(self) -> URL:
        """The address the current or next attempt uses."""
        return self.addresses[self._turn]

    async def _attempt(self) -> None:
        self.url = self.address
        try:
            await _connect_once(self)
        except BaseException:
            self._turn = (self._turn + 1) % len(self.addresses)
            raise


setattr(FailoverConnection, _ATTEMPT, FailoverConnection._attempt)
