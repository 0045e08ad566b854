"""Per-remote-address throttling of sign-in attempts, in the process's memory: a sliding
window of attempt times per address, bounded in the number of addresses it remembers."""

from __future__ import annotations

from collections import OrderedDict, deque
from datetime import datetime, timedelta

MAX_ADDRESSES = 10_000
WINDOW = timedelta(minutes=1)


class AddressThrottle:
    """At most `limit` attempts per address within a minute."""

    def __init__(self, limit: int, max_addresses: int = MAX_ADDRESSES) -> None:
        self.limit = limit
        self.max_addresses = max_addresses
        self._attempts: OrderedDict[str, deque[datetime]] = OrderedDict()

    def allow(self, address: str, now: datetime) -> bool:
        """Count an attempt from `address`; False (and not counted) when it is over the limit."""
        times = self._attempts.pop(address, None) or deque()
        while times and times[0] <= now - WINDOW:
            times.popleft()
        self._attempts[address] = times  # most recently seen last
        while len(self._attempts) > self.max_addresses:
            self._attempts.popitem(last=False)
        if len(times) >= self.limit:
            return False
        times.append(now)
        return True
