"""The one retry policy: exponential backoff with jitter, capped. A row that failed
transiently is tried again after it (never sooner than the destination's Retry-After, though
a Retry-After beyond the cap counts as the cap: a destination cannot park a row for ever), and
intake waits it out between tries while the store is unavailable.

Delays are served by RabbitMQ: a few retry queues per channel (tiers: the base delay, four
times it, ... up to the cap), each with its own TTL, dead-lettering back onto the channel's
queue. A delayed task goes to the smallest tier at least as long as its delay, with the delay
itself as the message's expiration, so it waits between the delay and the tier's TTL. A delay
longer than the largest tier (the end of quiet hours) comes back early, finds its row's
`not_before` still ahead, and is delayed again.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass

TIER_FACTOR = 4
_JITTER = random.SystemRandom()
"""The jitter's own source: drawing from the `random` module's shared generator would move
it under anything else seeded from it (property-based tests' generation among them)."""


MAX_DOUBLINGS = 64


def backoff_delay(
    attempt: int,
    base_seconds: float,
    cap_seconds: float,
    uniform: Callable[[float, float], float] = _JITTER.uniform,
) -> float:
    """Seconds to wait after the `attempt`-th consecutive failure: uniform in [d/2, d] with
    d = min(cap, base * 2**(attempt-1)), so many waiters do not retry in step. The doubling
    stops counting at `MAX_DOUBLINGS`: past a thousand or so it would overflow a float, and
    a long outage's every held try counts (any cap is reached long before)."""
    doublings = min(max(0, attempt - 1), MAX_DOUBLINGS)
    ceiling = min(cap_seconds, base_seconds * 2**doublings)
    return uniform(ceiling / 2, ceiling)


@dataclass(frozen=True, slots=True)
class RetrySchedule:
    """Backoff for attempt n: uniform in [d/2, d] with d = min(cap, base * 2**(n-1))."""

    base_seconds: float
    cap_seconds: float
    max_attempts: int

    def tiers(self) -> tuple[float, ...]:
        """The retry queues' TTLs, shortest first."""
        tiers: list[float] = []
        tier = self.base_seconds
        while tier < self.cap_seconds:
            tiers.append(tier)
            tier *= TIER_FACTOR
        tiers.append(self.cap_seconds)
        return tuple(tiers)

    def delay(
        self,
        attempt: int,
        retry_after: float | None = None,
        uniform: Callable[[float, float], float] = _JITTER.uniform,
    ) -> float:
        """Seconds to wait after the `attempt`-th try failed: the backoff, or the destination's
        `retry_after` when that is longer, up to the cap (the attempt counts either way)."""
        delay = backoff_delay(attempt, self.base_seconds, self.cap_seconds, uniform)
        if retry_after is not None and not math.isnan(retry_after):
            delay = max(delay, min(retry_after, self.cap_seconds))
        return delay

    def tier_for(self, delay: float) -> float:
        """The shortest tier that holds `delay`, or the longest (the task comes back early)."""
        tiers = self.tiers()
        return next((tier for tier in tiers if tier >= delay), tiers[-1])

    def gives_up_after(self, attempt: int) -> bool:
        return attempt >= self.max_attempts


class Backoff:
    """The delay after each of a run of consecutive failures (`backoff_delay`), shared by all
    intake handlers so a store outage slows them all; `reset` once a try succeeds."""

    def __init__(self, initial_seconds: float, max_seconds: float) -> None:
        self.initial = initial_seconds
        self.maximum = max_seconds
        self.failures = 0

    def next_delay(self) -> float:
        self.failures += 1
        return backoff_delay(self.failures, self.initial, self.maximum)

    def reset(self) -> None:
        self.failures = 0
