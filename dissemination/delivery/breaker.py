"""Circuit breakers, one per destination host, so a dead webhook or a failing relay costs its
own rows a wait and nobody else anything.

Closed: sends go through; `failures` consecutive transient failures open the circuit. Open:
rows for that host wait `cooldown` without being tried (and without using up attempts).
After the cooldown one trial send goes through (half-open): success closes the circuit, a
transient failure opens it for another cooldown. A trial that ends without an outcome (its
send cancelled) is `abandon`ed, which frees the slot for the next trial; one that has not
reported within `trial_timeout` is presumed lost, and the next row takes the slot over.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

TRIAL_RECHECK = timedelta(seconds=1)
"""How long a row refused while the half-open trial is under way waits before it is tried
again (or the cooldown, if shorter)."""
TRIAL_TIMEOUT_SECONDS = 300.0
"""Longer than any channel's send timeout plus the wait for a send slot: a trial this old is
a lost one (a backstop; the worker abandons the trials it cancels)."""


@dataclass(slots=True)
class _Circuit:
    failures: int = 0
    opened_at: datetime | None = None
    trial_since: datetime | None = None  # when the half-open trial in flight was let through


class CircuitBreakers:
    """The circuits of every host this process sends to."""

    def __init__(
        self,
        failures: int,
        cooldown_seconds: float,
        *,
        trial_timeout_seconds: float = TRIAL_TIMEOUT_SECONDS,
    ) -> None:
        self.threshold = failures
        self.cooldown = timedelta(seconds=cooldown_seconds)
        self.trial_timeout = timedelta(seconds=trial_timeout_seconds)
        self._circuits: dict[str, _Circuit] = {}

    def allow(self, host: str, now: datetime) -> bool:
        """May a send to `host` go now? (Takes the half-open trial slot when it is free.) A
        send allowed while `is_open(host)` is the trial: it must end in `record` or
        `abandon`."""
        circuit = self._circuits.get(host)
        if circuit is None or circuit.opened_at is None:
            return True
        if now < circuit.opened_at + self.cooldown:
            return False
        if circuit.trial_since is not None and now < circuit.trial_since + self.trial_timeout:
            return False
        circuit.trial_since = now
        return True

    def retry_at(self, host: str, now: datetime) -> datetime:
        """When a row refused by an open circuit should come back: when the cooldown ends, or,
        while the half-open trial is under way, `TRIAL_RECHECK` later (not at once: rows
        refused meanwhile would otherwise come straight back, again and again, for as long
        as the trial lasts)."""
        circuit = self._circuits.get(host)
        if circuit is None or circuit.opened_at is None:
            return now
        if circuit.trial_since is not None:
            return now + min(self.cooldown, TRIAL_RECHECK)
        return max(now, circuit.opened_at + self.cooldown)

    def record(self, host: str, *, failed: bool, now: datetime) -> None:
        """The outcome of a send to `host`: a transient failure counts, anything else resets."""
        circuit = self._circuits.setdefault(host, _Circuit())
        circuit.trial_since = None
        if not failed:
            self._circuits.pop(host, None)
            return
        circuit.failures += 1
        if circuit.opened_at is not None or circuit.failures >= self.threshold:
            circuit.opened_at = now

    def abandon(self, host: str) -> None:
        """The trial send to `host` ended without an outcome (it was cancelled): free the
        trial slot, counting neither a success nor a failure."""
        circuit = self._circuits.get(host)
        if circuit is not None:
            circuit.trial_since = None

    def open_hosts(self) -> int:
        """How many hosts' circuits are open (or half-open) now."""
        return sum(1 for circuit in self._circuits.values() if circuit.opened_at is not None)

    def is_open(self, host: str) -> bool:
        circuit = self._circuits.get(host)
        return circuit is not None and circuit.opened_at is not None
