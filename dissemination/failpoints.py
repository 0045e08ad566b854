"""Named fault-injection points for crash tests, off unless DISSEMINATION_FAILPOINTS is set.

DISSEMINATION_FAILPOINTS="after_store=kill" kills the process with SIGKILL right after an
alert is committed and before its message is acknowledged; "before_store=sleep:0.5" pauses
there. Crash tests use these to hit exact windows instead of racing with timers.
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


async def failpoint(name: str) -> None:
    """Run the action configured for `name`, if any."""
    action = _ACTIONS.get(name)
    if action is None:
        return
    if action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif action.startswith("sleep:"):
        await asyncio.sleep(float(action.removeprefix("sleep:")))
