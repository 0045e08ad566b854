"""CPU time spent by groups of processes (Linux `/proc`), to say which part of a run used
the cores: the service's processes, the database's backends, the broker's nodes, the sink."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path

_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def cpu_seconds(pid: int) -> float:
    """User and system CPU seconds of one process so far (0 when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICKS  # utime, stime


def with_children(pid: int) -> list[int]:
    """`pid` and its descendants."""
    found, pending = [], [pid]
    while pending:
        current = pending.pop()
        found.append(current)
        for task in Path(f"/proc/{current}/task").glob("*/children"):
            try:
                pending += [int(child) for child in task.read_text().split()]
            except FileNotFoundError:
                continue
    return found


def processes_named(name: str) -> list[int]:
    """The processes whose command name is `name` ("postgres": the server and its backends)."""
    found = []
    for comm in Path("/proc").glob("[0-9]*/comm"):
        try:
            if comm.read_text().strip() == name:
                found.append(int(comm.parent.name))
        except (FileNotFoundError, ProcessLookupError):
            continue
    return found


def sample(groups: Mapping[str, Iterable[int]]) -> dict[str, dict[int, float]]:
    """Each group's processes and their CPU seconds now."""
    return {name: {pid: cpu_seconds(pid) for pid in pids} for name, pids in groups.items()}


def spent(
    before: Mapping[str, Mapping[int, float]], after: Mapping[str, Mapping[int, float]]
) -> dict[str, float]:
    """CPU seconds each group spent between two samples (processes in both)."""
    return {
        name: sum(
            max(0.0, seconds - before[name].get(pid, seconds)) for pid, seconds in now.items()
        )
        for name, now in after.items()
    }
