"""The ceiling a durable ledger puts on a fan-out: the least CPU a send can cost, and so the
highest rate the machine's cores allow, whatever the rest of the service does.

A send of the service does at least what the raw leg does for one (the bare client's work
and the sink's), plus its ledger row's store steps (`bench.ledger`: planning, with the
intake that makes the plan, the claim, and the settle with its record entry), in the
service's process and in PostgreSQL. When everything shares `cores` cores, no rate can pass
`cores` / that floor: it bounds service/raw and service/peer before any other code of the
service is counted, and what the service spends above it is what is left to cut.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

LEDGER_GROUPS = ("this process", "PostgreSQL")
"""The CPU of a ledger step that a send of the service pays: its own process's and the
store's (the collector's share is inside the process's)."""


@dataclass(frozen=True, slots=True)
class Ceiling:
    """The floor of a send's CPU, in µs, and what it allows on `cores` cores."""

    ledger_us: float
    """The store steps of its row (`bench.ledger`), the service's process and PostgreSQL."""
    raw_us: float
    """The raw leg's CPU a send: the bare client's and the sinks'."""
    cores: int

    @property
    def floor_us(self) -> float:
        return self.ledger_us + self.raw_us

    @property
    def rate(self) -> float:
        """The most sends a second the cores can carry at the floor."""
        return self.cores * 1e6 / self.floor_us

    def over(self, rate: float | None) -> float | None:
        """The highest service/`rate` the floor allows (None when there is no such rate)."""
        return self.rate / rate if rate else None


def ledger_us(steps: Mapping[str, Mapping[str, float]]) -> float:
    """A row's CPU over every ledger step, in the service's process and in PostgreSQL, from
    `bench.ledger.medians`."""
    return sum(figures.get(group, 0.0) for figures in steps.values() for group in LEDGER_GROUPS)


def describe(channel: str, ceiling: Ceiling, raw: float | None, peer: float | None) -> str:
    """One line: the floor's parts, the rate it allows, and the ratios that rate bounds."""
    bounds = [f"service/raw at most {ceiling.over(raw):.3f}"] if raw else []
    if peer:
        bounds.append(f"service/peer at most {ceiling.over(peer):.2f}")
    return (
        f"{channel:<8} a send costs at least {ceiling.ledger_us:,.0f} (ledger) +"
        f" {ceiling.raw_us:,.0f} (raw client and sinks) = {ceiling.floor_us:,.0f} µs of CPU:"
        f" on {ceiling.cores} cores at most {ceiling.rate:,.0f}/s"
        + (f"; {', '.join(bounds)}" if bounds else "")
    )
