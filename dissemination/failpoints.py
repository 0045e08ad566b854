"""Named fault-injection points for crash tests, off unless DISSEMINATION_FAILPOINTS is set.

DISSEMINATION_FAILPOINTS="after_store=kill" kills the process with SIGKILL right after an
alert is committed and before its message is acknowledged ("before_commit=kill": with the
batch of alerts written and not committed); "before_store=sleep:0.5" pauses
there; "before_claim=raise:1" raises FailpointError there the first time only (a bug, not an
outage). Crash tests use these to hit exact windows instead of racing with timers.
"""

from __future__ import annotations

import asyncio
import os
import signal

_ACTIONS: dict[str, str] = dict(
    item.split("=", 1)
    for item in os.environ.get("DISSEMINATION_FAILPOINTS", "").split(",")
    if "=" in item
)


class FailpointError(RuntimeError):
    """Raised by a `raise:N` failpoint: stands for a bug at that point."""


_RAISED: dict[str, int] = {}


async def failpoint(name: str) -> None:
    """Run the action configured for `name`, if any."""
    action = _ACTIONS.get(name)
    if action is None:
        return
    if action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif action.startswith("sleep:"):
        await asyncio.sleep(float(action.removeprefix("sleep:")))
    elif action.startswith("raise:") and _RAISED.get(name, 0) < int(action.removeprefix("raise:")):
        _RAISED[name] = _RAISED.get(name, 0) + 1
        raise FailpointError(f"failpoint {name}")
