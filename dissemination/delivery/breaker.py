"""Circuit breakers, one per destination host, so a dead webhook or a failing relay costs its
own rows a wait and nobody else anything.

Closed: sends go through; `failures` consecutive transient failures open the circuit. Open:
rows for that host wait `cooldown` without being tried (and without using up attempts).
After the cooldown one trial send goes through (half-open): success closes the circuit, a
transient failure opens it for another cooldown.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta


@dataclass(slots=True)
class _Circuit:
    failures: int = 0
    opened_at: datetime | None = None
    trial_in_flight: bool = False


class CircuitBreakers:
    """The circuits of every host this process sends to."""

    def __init__(self, failures: int, cooldown_seconds: float) -> None:
        self.threshold = failures
        self.cooldown = timedelta(seconds=cooldown_seconds)
        self._circuits: dict[str, _Circuit] = {}

    def allow(self, host: str, now: datetime) -> bool:
        """May a send to `host` go now? (Takes the half-open trial slot when it is free.)"""
        circuit = self._circuits.get(host)
        if circuit is None or circuit.opened_at is None:
            return True
        if now < circuit.opened_at + self.cooldown or circuit.trial_in_flight:
            return False
        circuit.trial_in_flight = True
        return True

    def retry_at(self, host: str, now: datetime) -> datetime:
        """When a row refused by an open circuit should come back."""
        circuit = self._circuits.get(host)
        if circuit is None or circuit.opened_at is None:
            return now
        return max(now, circuit.opened_at + self.cooldown)

    def record(self, host: str, *, failed: bool, now: datetime) -> None:
        """The outcome of a send to `host`: a transient failure counts, anything else resets."""
        circuit = self._circuits.setdefault(host, _Circuit())
        circuit.trial_in_flight = False
        if not failed:
            self._circuits.pop(host, None)
            return
        circuit.failures += 1
        if circuit.opened_at is not None or circuit.failures >= self.threshold:
            circuit.opened_at = now

    def open_hosts(self) -> int:
        """How many hosts' circuits are open (or half-open) now."""
        return sum(1 for circuit in self._circuits.values() if circuit.opened_at is not None)

    def is_open(self, host: str) -> bool:
        circuit = self._circuits.get(host)
        return circuit is not None and circuit.opened_at is not None
