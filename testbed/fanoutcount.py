"""What a scale-out run counts: a webhook sink on loopback that counts requests by
`webhook-id` (the ledger row's id), and the outcome of the run, printed as lines: targets,
received, lost, duplicates (and whether each is a row flagged resent), the fan-outs' times,
and the CPU each part of the run spent per delivery."""

from __future__ import annotations

import json
import statistics
import time
from collections import Counter
from dataclasses import dataclass, field

from aiohttp import web

from dissemination.supervisor import cores


@dataclass
class Outcome:
    """What the sink received, against the targets and the rows' final states; the time and
    CPU of each fan-out, by the number of service instances that ran it."""

    targets: int
    received: Counter[str]
    resent: set[str]
    states: dict[str, int]
    seconds: dict[int, list[float]]
    """Each fan-out's time from publish to last receipt, by instances running."""
    cpu: dict[int, dict[str, float]] = field(default_factory=dict)
    """CPU seconds each part spent over those fan-outs, by instances running."""
    events: list[str] = field(default_factory=list)

    def rate(self, instances: int) -> float:
        """Deliveries per second of the median fan-out with this many instances."""
        times = self.seconds[instances]
        rows = self.targets / sum(len(t) for t in self.seconds.values())
        return rows / statistics.median(times)

    @property
    def lost(self) -> int:
        return self.targets - len(self.received)

    @property
    def duplicated(self) -> set[str]:
        return {row for row, n in self.received.items() if n > 1}

    @property
    def duplicates(self) -> int:
        return sum(n - 1 for n in self.received.values())

    @property
    def duplicates_flagged(self) -> bool:
        return self.duplicated <= self.resent

    def lines(self) -> list[str]:
        lines = [
            *self.events,
            f"targets: {self.targets}",
            f"received: {len(self.received)} distinct ({sum(self.received.values())} requests)",
            f"lost: {self.lost}",
            f"duplicates: {self.duplicates} (rows flagged resent: {len(self.resent)}; every "
            f"duplicate among them: {'yes' if self.duplicates_flagged else 'NO'})",
            f"row states: {json.dumps(self.states, sort_keys=True)}",
        ]
        for instances, times in self.seconds.items():
            shown = ", ".join(f"{t:.2f}" for t in times)
            lines.append(
                f"{instances} instance(s): publish to last receipt {shown} s; median "
                f"{self.rate(instances):,.0f} deliveries/s"
            )
            lines += self._cpu_lines(instances, len(times))
        if len(self.seconds) > 1:
            first, last = min(self.seconds), max(self.seconds)
            lines.append(
                f"{last} instances against {first}: {self.rate(last) / self.rate(first):.2f}x"
            )
        return lines

    def _cpu_lines(self, instances: int, runs: int) -> list[str]:
        cpu = self.cpu.get(instances)
        if not cpu:
            return []
        rows = self.targets / sum(len(t) for t in self.seconds.values()) * runs
        per = {name: seconds * 1e6 / rows for name, seconds in cpu.items()}
        total = sum(per.values())
        parts = ", ".join(f"{name} {us:,.0f}" for name, us in per.items())
        return [
            f"  CPU per delivery (µs): {parts}; in all {total:,.0f}: {cores()} cores carry at "
            f"most {cores() * 1e6 / total:,.0f}/s, one core of service processes "
            f"{1e6 / per['service']:,.0f}/s"
        ]


class Sink:
    """Counts webhook requests by `webhook-id` (the ledger row's id)."""

    def __init__(self) -> None:
        self.received: Counter[str] = Counter()
        self.last = 0.0
        self.runner: web.AppRunner | None = None
        self.base = ""

    async def _handle(self, request: web.Request) -> web.Response:
        await request.read()
        self.received[request.headers["webhook-id"]] += 1
        self.last = time.monotonic()
        return web.Response(status=204)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/{n}", self._handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", 0, backlog=1024).start()
        host, port = self.runner.addresses[0][:2]
        self.base = f"http://{host}:{port}/"

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
